//! The server API's bearer keys (CHAT_API_KEYS), compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The keys the API accepts. Each is kept as its SHA-256 digest, so that
/// every comparison is of 32 bytes whatever the presented key's length,
/// and every key is compared (no early exit on a match).
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

/// Why the keys cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeysError {
    /// No key: the API would be open to anyone.
    #[error(
        "--api-bind is set but CHAT_API_KEYS holds no key: refusing to serve the API without one"
    )]
    None,
    /// A key shorter than [`MIN_KEY_LEN`].
    #[error("an API key in CHAT_API_KEYS is shorter than {MIN_KEY_LEN} characters")]
    TooShort,
}

/// Shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;

impl ApiKeys {
    /// The keys, refused when there are none or one is too short.
    pub fn new(keys: &[String]) -> Result<ApiKeys, KeysError> {
        if keys.is_empty() {
            return Err(KeysError::None);
        }
        if keys.iter().any(|k| k.len() < MIN_KEY_LEN) {
            return Err(KeysError::TooShort);
        }
        Ok(ApiKeys {
            digests: keys.iter().map(|k| Sha256::digest(k).into()).collect(),
        })
    }

    /// True when `presented` is one of the keys.
    pub fn accepts(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented).into();
        let mut ok = subtle::Choice::from(0);
        for k in &self.digests {
            ok |= k.ct_eq(&d);
        }
        ok.into()
    }

    /// True when an `Authorization` header value carries one of the keys
    /// (`Bearer <key>`).
    pub fn authorizes(&self, header: Option<&str>) -> bool {
        header
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|k| self.accepts(k.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_required_checked_and_rotatable() {
        assert_eq!(ApiKeys::new(&[]).unwrap_err(), KeysError::None);
        assert_eq!(
            ApiKeys::new(&["short".into()]).unwrap_err(),
            KeysError::TooShort
        );
        let keys =
            ApiKeys::new(&["old-key-0123456789".into(), "new-key-0123456789".into()]).unwrap();
        assert!(keys.authorizes(Some("Bearer old-key-0123456789")));
        assert!(keys.authorizes(Some("Bearer new-key-0123456789")));
        assert!(!keys.authorizes(Some("Bearer new-key-012345678")));
        assert!(!keys.authorizes(Some("new-key-0123456789")));
        assert!(!keys.authorizes(None));
    }
}
