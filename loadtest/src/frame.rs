//! Cheap classification of server frames: chat frames (`message`/`dm`) are recognised by
//! prefix and their `content` is cut out with a substring search; anything else falls back
//! to serde_json.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem::Finder;

static CONTENT_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content\":\""));
static USER_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"user\":"));

/// What a server frame is, as far as the load generator cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A room message or dm carrying `content` (still JSON-escaped on the fast path,
    /// which is harmless for our escape-free payloads).
    Chat(Cow<'a, [u8]>),
    /// `join_ack` for a room.
    JoinAck,
    /// A `presence` frame (one user's change).
    Presence,
    /// A `presence_batch` frame carrying this many users' changes.
    PresenceBatch(u32),
    /// An `error` frame with its message.
    Error(String),
    /// Any other frame type (history replies, unknown).
    Other,
    /// Not JSON or not an object with a `type`.
    Malformed,
}

/// Classifies one text frame.
pub fn scan(text: &str) -> Frame<'_> {
    let bytes = text.as_bytes();
    if bytes.starts_with(br#"{"type":"message""#) || bytes.starts_with(br#"{"type":"dm""#) {
        if let Some(content) = fast_content(bytes) {
            return Frame::Chat(Cow::Borrowed(content));
        }
    }
    // The server writes `type` first: presence is counted without a parse.
    if bytes.starts_with(br#"{"type":"presence_batch""#) {
        return Frame::PresenceBatch(USER_KEY.find_iter(bytes).count() as u32);
    }
    if bytes.starts_with(br#"{"type":"presence""#) {
        return Frame::Presence;
    }
    slow(text)
}

/// The raw bytes of the `content` string value, up to its closing quote.
fn fast_content(bytes: &[u8]) -> Option<&[u8]> {
    let start = CONTENT_KEY.find(bytes)? + CONTENT_KEY.needle().len();
    let rest = &bytes[start..];
    let end = memchr::memchr(b'"', rest)?;
    let value = &rest[..end];
    // An escaped quote inside the value would end it early: leave those to serde.
    (!value.ends_with(b"\\")).then_some(value)
}

fn slow(text: &str) -> Frame<'_> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return Frame::Malformed;
    };
    let data = value.get("data");
    match value.get("type").and_then(|t| t.as_str()) {
        Some("message") | Some("dm") => {
            match data.and_then(|d| d.get("content")).and_then(|c| c.as_str()) {
                Some(c) => Frame::Chat(Cow::Owned(c.as_bytes().to_vec())),
                None => Frame::Malformed,
            }
        }
        Some("join_ack") => Frame::JoinAck,
        Some("presence") => Frame::Presence,
        Some("presence_batch") => {
            let n = |k: &str| {
                data.and_then(|d| d.get(k))
                    .and_then(|l| l.as_array())
                    .map_or(0, Vec::len)
            };
            Frame::PresenceBatch((n("online") + n("offline")) as u32)
        }
        Some("error") => Frame::Error(
            data.and_then(|d| d.get("message"))
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string(),
        ),
        Some(_) => Frame::Other,
        None => Frame::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_message_and_dm() {
        let m = r#"{"type":"message","data":{"id":123,"fromUser":1,"username":"a","content":"1:2:3:xx","timestamp":"2026-01-01T12:00:00.123456Z","room":"r"}}"#;
        assert_eq!(scan(m), Frame::Chat(Cow::Borrowed(b"1:2:3:xx")));
        let d = r#"{"type":"dm","data":{"id":5,"fromUser":1,"username":"a","content":"7:0:9:","timestamp":"t","to":2}}"#;
        assert_eq!(scan(d), Frame::Chat(Cow::Borrowed(b"7:0:9:")));
    }

    #[test]
    fn username_with_quotes_does_not_confuse_the_scanner() {
        let m = r#"{"type":"message","data":{"id":1,"fromUser":1,"username":"x\"content\":\"9:9:9:","content":"1:2:3:","timestamp":"t","room":"r"}}"#;
        assert_eq!(scan(m), Frame::Chat(Cow::Borrowed(b"1:2:3:")));
    }

    #[test]
    fn escaped_content_goes_through_serde() {
        let m = r#"{"type":"message","data":{"id":1,"fromUser":1,"username":"a","content":"say \"hi\"","timestamp":"t","room":"r"}}"#;
        assert_eq!(scan(m), Frame::Chat(Cow::Owned(br#"say "hi""#.to_vec())));
    }

    #[test]
    fn other_key_order_goes_through_serde() {
        let m = r#"{"data":{"content":"1:2:3:","room":"r"},"type":"message"}"#;
        assert_eq!(scan(m), Frame::Chat(Cow::Owned(b"1:2:3:".to_vec())));
    }

    #[test]
    fn presence_frames_are_counted_without_a_parse() {
        assert_eq!(
            scan(
                r#"{"type":"presence","data":{"room":"r","user":9,"username":"c","status":"online"}}"#
            ),
            Frame::Presence
        );
        let b = r#"{"type":"presence_batch","data":{"room":"r","online":[{"user":9,"username":"c"},{"user":10,"username":"d"}],"offline":[{"user":3,"username":"b"}]}}"#;
        assert_eq!(scan(b), Frame::PresenceBatch(3));
        let reordered = r#"{"data":{"room":"r","online":[{"user":9,"username":"c"}],"offline":[]},"type":"presence_batch"}"#;
        assert_eq!(scan(reordered), Frame::PresenceBatch(1));
    }

    #[test]
    fn control_frames() {
        assert_eq!(
            scan(r#"{"type":"join_ack","data":{"room":"r","status":"ok"}}"#),
            Frame::JoinAck
        );
        assert_eq!(
            scan(r#"{"type":"error","data":{"message":"server busy"}}"#),
            Frame::Error("server busy".into())
        );
        assert_eq!(scan(r#"{"type":"room_history","data":[]}"#), Frame::Other);
        assert_eq!(scan("nope"), Frame::Malformed);
        assert_eq!(scan(r#"{"x":1}"#), Frame::Malformed);
    }
}
