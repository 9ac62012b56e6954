//! JWT minting for the load-test users (HS256, claims `user_id`, `username`, `exp`).

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// Token lifetime: long enough for any bounded run, and well under the
/// server's default maximum token lifetime (a day).
const LIFETIME_SECS: u64 = 12 * 3600;

#[derive(Serialize)]
struct Claims<'a> {
    user_id: i64,
    username: &'a str,
    exp: u64,
}

/// Signs tokens with the shared secret.
pub struct TokenMinter {
    key: EncodingKey,
    header: Header,
    exp: u64,
}

impl TokenMinter {
    /// A minter for `secret`; tokens expire 12 hours from now.
    pub fn new(secret: &str) -> TokenMinter {
        let now = crate::sysinfo::unix_nanos() / 1_000_000_000;
        TokenMinter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::default(),
            exp: now + LIFETIME_SECS,
        }
    }

    /// A signed token for `user_id` / `username`.
    pub fn mint(
        &self,
        user_id: i64,
        username: &str,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            user_id,
            username,
            exp: self.exp,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn tokens_verify_with_the_secret() {
        let t = TokenMinter::new("s3cret").mint(1_000_042, "lt42").unwrap();
        let v = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::new(jsonwebtoken::Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(v.claims["user_id"], 1_000_042);
        assert_eq!(v.claims["username"], "lt42");
        assert!(v.claims["exp"].as_u64().unwrap() > 0);
        assert!(jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &DecodingKey::from_secret(b"other"),
            &Validation::new(jsonwebtoken::Algorithm::HS256),
        )
        .is_err());
    }
}
