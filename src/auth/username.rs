//! Usernames: which ones a token may carry ([`check_username`]) and the
//! key under which they must be unique ([`username_key`]), so that
//! look-alikes cannot impersonate each other.
//!
//! A username is refused when it is empty after trimming whitespace,
//! longer than [`MAX_USERNAME_BYTES`], or holds a character that is
//! invisible or reorders text: a control character (Unicode category Cc,
//! e.g. NUL, tab, newline, DEL), a format character (Cf: zero-width
//! space U+200B, ZWNJ/ZWJ U+200C/U+200D, BOM U+FEFF, the bidi marks
//! U+200E/U+200F/U+061C, the bidi embeddings/overrides U+202A-U+202E and
//! isolates U+2066-U+2069, tag characters), a line or paragraph
//! separator (Zl, Zp), a private-use or surrogate code point, or one of
//! the invisible fillers (U+034F, U+115F, U+1160, U+17B4, U+17B5,
//! U+3164, U+FFA0).
//!
//! The key is: Unicode NFKC, then full case folding, then trimmed, then
//! the UTS #39 confusable skeleton (which also drops default-ignorable
//! characters such as variation selectors). "Alice", "alice ", fullwidth
//! "ａｌｉｃｅ" and Cyrillic "аlice" all have the key of "alice".

use caseless::default_case_fold_str;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest accepted username, in bytes (UTF-8).
pub const MAX_USERNAME_BYTES: usize = 64;

/// Why a username is refused. The `Display` text is sent with HTTP 401.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum UsernameError {
    /// Empty, or only whitespace.
    #[error("invalid username: empty")]
    Empty,
    /// More than [`MAX_USERNAME_BYTES`] bytes.
    #[error("invalid username: longer than 64 bytes")]
    TooLong,
    /// Holds a control, invisible or bidi character.
    #[error("invalid username: control, invisible or bidi characters are not allowed")]
    Invisible,
}

/// True for a character a username may not hold (see the module doc).
fn is_refused(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
    ) || matches!(
        c,
        '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{3164}' | '\u{FFA0}'
    )
}

/// Checks a token's username against the rules of the module doc.
pub fn check_username(name: &str) -> Result<(), UsernameError> {
    if name.len() > MAX_USERNAME_BYTES {
        return Err(UsernameError::TooLong);
    }
    if name.chars().any(is_refused) {
        return Err(UsernameError::Invisible);
    }
    if name.trim().is_empty() {
        return Err(UsernameError::Empty);
    }
    Ok(())
}

/// The key two usernames share when they look alike: NFKC, full case
/// folding, trimmed, then the UTS #39 skeleton. Unique in `users`.
pub fn username_key(name: &str) -> String {
    let nfkc: String = name.nfkc().collect();
    let folded = default_case_fold_str(&nfkc);
    unicode_security::skeleton(folded.trim()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_invisible_bidi_control_empty_and_long_names() {
        for name in [
            "a\u{0}b",
            "a\tb",
            "a\nb",
            "\u{7f}",
            "\u{85}x",
            "zero\u{200B}width",
            "\u{200C}",
            "\u{200D}",
            "\u{FEFF}x",
            "\u{200E}x",
            "\u{200F}x",
            "\u{061C}x",
            "\u{202A}x",
            "\u{202B}x",
            "\u{202C}x",
            "\u{202D}x",
            "\u{202E}x",
            "\u{2066}x",
            "\u{2067}x",
            "\u{2068}x",
            "\u{2069}x",
            "\u{2028}x",
            "\u{2029}x",
            "\u{E000}x",
            "\u{3164}",
            "\u{E0041}x",
        ] {
            assert_eq!(
                check_username(name),
                Err(UsernameError::Invisible),
                "{name:?}"
            );
        }
        for name in ["", " ", " \u{3000} "] {
            assert_eq!(check_username(name), Err(UsernameError::Empty), "{name:?}");
        }
        assert_eq!(check_username(&"x".repeat(65)), Err(UsernameError::TooLong));
        for name in [
            "alice",
            "Zoë Ångström",
            "名前",
            "a b",
            "❤️",
            &"é".repeat(32),
        ] {
            assert_eq!(check_username(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn look_alikes_share_a_key() {
        let alice = username_key("alice");
        for name in [
            "Alice",
            "ALICE",
            "alice ",
            " alice",
            "\u{430}lice",
            "ａｌｉｃｅ",
            "al\u{200B}ice",
            "al\u{AD}ice",
        ] {
            assert_eq!(username_key(name), alice, "{name:?}");
        }
        assert_eq!(username_key("Straße"), username_key("STRASSE"));
        assert_eq!(username_key("❤️"), username_key("❤"));
        for other in ["bob", "alicia", "alice2", "al ice"] {
            assert_ne!(username_key(other), alice, "{other:?}");
        }
    }
}
