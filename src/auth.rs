//! JWT authentication: verifying the token a client presents at the
//! handshake, and signing tokens for the `token` command.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::protocol::UserId;

/// Who a verified token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// From the `user_id` claim, or else a numeric `sub`.
    pub user_id: UserId,
    /// From the `username` claim.
    pub username: String,
    /// The token's `exp`, in Unix seconds.
    pub expires_at: i64,
}

/// Why a token was refused. The `Display` text is the short reason sent
/// with HTTP 401; it never contains the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Neither an `Authorization: Bearer` header nor a `token` query parameter.
    #[error("missing token")]
    Missing,
    /// Not a well-formed JWT, or its claims have the wrong shape.
    #[error("malformed token")]
    Malformed,
    /// Signed with another algorithm than the configured one (including `none`).
    #[error("token algorithm not accepted")]
    Algorithm,
    /// The signature does not match the configured key.
    #[error("invalid token signature")]
    Signature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `exp` is absent.
    #[error("token has no exp claim")]
    MissingExp,
    /// No usable user id (`user_id`, or a numeric `sub`).
    #[error("token has no user id")]
    MissingUserId,
    /// No `username`, or an empty one.
    #[error("token has no username")]
    MissingUsername,
}

/// The claims this server reads; everything else in the token is ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    user_id: Option<serde_json::Value>,
    sub: Option<serde_json::Value>,
    username: Option<String>,
    exp: Option<i64>,
}

/// Longest accepted username, in bytes.
pub const MAX_USERNAME_BYTES: usize = 64;

fn as_user_id(v: &serde_json::Value) -> Option<UserId> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Verifies HS256 tokens against one shared secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for HS256 tokens signed with `secret`, allowing `leeway_secs`
    /// of clock skew on `exp` and `nbf`.
    pub fn hs256(secret: &[u8], leeway_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Verifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Checks the token's algorithm, signature and time claims, then reads the identity.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::Algorithm
                }
                ErrorKind::InvalidSignature => AuthError::Signature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::MissingExp,
                _ => AuthError::Malformed,
            },
        )?;
        let claims = data.claims;
        let user_id = claims
            .user_id
            .as_ref()
            .or(claims.sub.as_ref())
            .and_then(as_user_id)
            .ok_or(AuthError::MissingUserId)?;
        let username = claims
            .username
            .filter(|u| !u.is_empty() && u.len() <= MAX_USERNAME_BYTES && !u.contains('\0'))
            .ok_or(AuthError::MissingUsername)?;
        Ok(Identity {
            user_id,
            username,
            expires_at: claims.exp.ok_or(AuthError::MissingExp)?,
        })
    }
}

#[derive(Serialize)]
struct SignedClaims<'a> {
    user_id: UserId,
    sub: String,
    username: &'a str,
    iat: i64,
    exp: i64,
}

/// Signs an HS256 token for `user_id`/`username` valid for `ttl_secs`.
pub fn sign_hs256(secret: &[u8], user_id: UserId, username: &str, ttl_secs: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = SignedClaims {
        user_id,
        sub: user_id.to_string(),
        username,
        iat: now,
        exp: now + ttl_secs,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret";

    fn sign(claims: serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn exp_in(secs: i64) -> i64 {
        chrono::Utc::now().timestamp() + secs
    }

    #[test]
    fn accepts_user_id_or_numeric_sub() {
        let v = Verifier::hs256(SECRET, 0);
        let t = sign(
            json!({"user_id": 5, "username": "al", "exp": exp_in(60)}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(v.verify(&t).unwrap().user_id, 5);
        let t = sign(
            json!({"sub": "12", "username": "al", "exp": exp_in(60)}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(v.verify(&t).unwrap().user_id, 12);
        let t = sign(
            json!({"sub": 13, "username": "al", "exp": exp_in(60)}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(v.verify(&t).unwrap().user_id, 13);
        let signed = sign_hs256(SECRET, 77, "bob", 60);
        let id = v.verify(&signed).unwrap();
        assert_eq!((id.user_id, id.username.as_str()), (77, "bob"));
    }

    #[test]
    fn refuses_each_bad_token() {
        let v = Verifier::hs256(SECRET, 0);
        let good = json!({"user_id": 5, "username": "al", "exp": exp_in(60)});
        assert_eq!(
            v.verify(&sign(good.clone(), Algorithm::HS256, b"other")),
            Err(AuthError::Signature)
        );
        assert_eq!(
            v.verify(&sign(good.clone(), Algorithm::HS384, SECRET)),
            Err(AuthError::Algorithm)
        );
        assert_eq!(
            v.verify(&sign(
                json!({"user_id": 5, "username": "al", "exp": exp_in(-10)}),
                Algorithm::HS256,
                SECRET
            )),
            Err(AuthError::Expired)
        );
        assert_eq!(
            v.verify(&sign(
                json!({"user_id": 5, "username": "al", "exp": exp_in(600), "nbf": exp_in(300)}),
                Algorithm::HS256,
                SECRET
            )),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            v.verify(&sign(
                json!({"user_id": 5, "username": "al"}),
                Algorithm::HS256,
                SECRET
            )),
            Err(AuthError::MissingExp)
        );
        assert_eq!(
            v.verify(&sign(
                json!({"sub": "abc", "username": "al", "exp": exp_in(60)}),
                Algorithm::HS256,
                SECRET
            )),
            Err(AuthError::MissingUserId)
        );
        assert_eq!(
            v.verify(&sign(
                json!({"user_id": 5, "exp": exp_in(60)}),
                Algorithm::HS256,
                SECRET
            )),
            Err(AuthError::MissingUsername)
        );
        assert_eq!(v.verify("garbage"), Err(AuthError::Malformed));
    }

    #[test]
    fn refuses_alg_none() {
        use base64_url_nopad as b64;
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body =
            b64(format!(r#"{{"user_id":1,"username":"a","exp":{}}}"#, exp_in(60)).as_bytes());
        let token = format!("{header}.{body}.");
        let v = Verifier::hs256(SECRET, 0);
        assert!(matches!(
            v.verify(&token),
            Err(AuthError::Algorithm | AuthError::Malformed)
        ));
    }

    /// Minimal base64url without padding, enough to forge test tokens.
    fn base64_url_nopad(input: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
