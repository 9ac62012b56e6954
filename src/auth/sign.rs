//! Signing HS256 tokens: the `token` command and the `--dev` token endpoint.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::protocol::UserId;

#[derive(Serialize)]
struct SignedClaims<'a> {
    user_id: UserId,
    sub: String,
    username: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs an HS256 token for `user_id`/`username` valid for `ttl_secs`.
pub fn sign_hs256(secret: &[u8], user_id: UserId, username: &str, ttl_secs: i64) -> String {
    sign_hs256_with(secret, &SignOptions::default(), user_id, username, ttl_secs)
}

/// What [`sign_hs256_with`] adds to a token besides the identity.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// The `kid` header (the secret's key id).
    pub kid: Option<String>,
    /// The `iss` claim.
    pub issuer: Option<String>,
    /// The `aud` claim.
    pub audience: Option<String>,
}

/// Signs an HS256 token like [`sign_hs256`], with a key id, issuer and
/// audience when `options` has them.
pub fn sign_hs256_with(
    secret: &[u8],
    options: &SignOptions,
    user_id: UserId,
    username: &str,
    ttl_secs: i64,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = SignedClaims {
        user_id,
        sub: user_id.to_string(),
        username,
        iat: now,
        exp: now + ttl_secs,
        iss: options.issuer.as_deref(),
        aud: options.audience.as_deref(),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = options.kid.clone().filter(|k| !k.is_empty());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
        .expect("HS256 signing cannot fail")
}
