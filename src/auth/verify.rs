//! Verifying a token: the candidate keys by the header's `alg` and `kid`,
//! `jsonwebtoken` errors mapped to an [`AuthError`], and the claims read
//! into an [`Identity`].

use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, TokenData};
use serde::Deserialize;

use super::keys::{Key, KeySources};
use super::{check_username, AuthError, Identity};
use crate::protocol::{valid_user_id, UserId, MAX_USER_ID};

/// The claims this server reads; everything else in the token is ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    user_id: Option<serde_json::Value>,
    sub: Option<serde_json::Value>,
    username: Option<String>,
    exp: Option<i64>,
}

/// A user id claim: a JSON integer, or a string in canonical decimal
/// (digits only, no sign, no leading zero: `"7"`, not `"+7"`, `"007"`,
/// `" 7"` or `"7.0"`), in `1 ..= 2^53 - 1`.
fn as_user_id(v: &serde_json::Value) -> Result<UserId, AuthError> {
    let id = match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => {
            let canonical = !s.is_empty()
                && s.len() <= MAX_USER_ID.to_string().len()
                && s.bytes().all(|b| b.is_ascii_digit())
                && !s.starts_with('0');
            canonical.then(|| s.parse().ok()).flatten()
        }
        _ => None,
    };
    id.filter(|&id| valid_user_id(id))
        .ok_or(AuthError::InvalidUserId)
}

/// Verifies tokens against a set of keys: HS256 secrets (current and
/// previous), PEM public keys and JWKS keys.
///
/// A token's header picks the candidate keys: only keys whose algorithms
/// include the header's `alg` (so an RSA public key is never used as an
/// HMAC secret), and, when the header has a `kid`, only the keys with that
/// id. The first key is tried before the header is even parsed, so the
/// common case (a token signed with the current secret) costs one
/// `jsonwebtoken::decode`.
pub struct Verifier {
    pub(super) keys: Vec<Key>,
    /// How far ahead of now a token's `exp` may be, in seconds (the
    /// maximum lifetime plus the leeway; `None`: no maximum).
    pub(super) max_exp_ahead: Option<i64>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithm_names())
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// True when the error means "this key did not verify this token" (so the
/// next candidate may), as opposed to a verified token with bad claims.
fn key_did_not_match(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
    )
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::Algorithm,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::Signature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::Issuer,
        ErrorKind::InvalidAudience => AuthError::Audience,
        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
            "exp" => AuthError::MissingExp,
            "iss" => AuthError::Issuer,
            "aud" => AuthError::Audience,
            _ => AuthError::Malformed,
        },
        _ => AuthError::Malformed,
    }
}

impl Verifier {
    /// A verifier for HS256 tokens signed with `secret`, allowing `leeway_secs`
    /// of clock skew on `exp` and `nbf`, with no maximum token lifetime.
    pub fn hs256(secret: &[u8], leeway_secs: u64) -> Self {
        let sources = KeySources {
            leeway_secs,
            ..KeySources::default()
        };
        Verifier {
            keys: vec![sources.key(
                None,
                DecodingKey::from_secret(secret),
                vec![Algorithm::HS256],
            )],
            max_exp_ahead: None,
        }
    }

    /// This verifier, refusing tokens whose `exp` is more than
    /// `max_lifetime_secs` plus `leeway_secs` ahead of now.
    pub fn with_max_lifetime(mut self, max_lifetime_secs: u64, leeway_secs: u64) -> Self {
        self.max_exp_ahead = KeySources {
            leeway_secs,
            max_lifetime_secs: Some(max_lifetime_secs),
            ..KeySources::default()
        }
        .max_exp_ahead();
        self
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The accepted algorithms, each once, in key order (e.g. `["HS256", "RS256"]`).
    pub fn algorithm_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for alg in self.keys.iter().flat_map(|k| &k.algorithms) {
            let name = format!("{alg:?}");
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Checks the token's algorithm, key id, signature and claims, then
    /// reads the identity.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let Some(first) = self.keys.first() else {
            return Err(AuthError::Signature);
        };
        // Fast path: the first key (the current secret) without parsing the
        // header separately; `decode` itself refuses any other algorithm.
        let first_error = match jsonwebtoken::decode::<Claims>(token, &first.key, &first.validation)
        {
            Ok(data) => match data.header.kid.as_deref() {
                Some(kid) if first.id.as_deref() != Some(kid) => None,
                _ => return self.identity(data),
            },
            Err(e) => Some(e.into_kind()),
        };
        let header = TokenHeader::read(token)?;
        let kid = header.kid.as_deref();
        let fits = |key: &Key| {
            key.algorithms.contains(&header.alg) && (kid.is_none() || key.id.as_deref() == kid)
        };
        if let Some(kind) = &first_error {
            // The first key verified the signature but the claims are bad:
            // that is the answer, if that key was a candidate at all.
            if !key_did_not_match(kind) && fits(first) {
                return Err(map_error(kind));
            }
        }
        let mut any_algorithm = first.algorithms.contains(&header.alg);
        let mut tried = first_error.is_some() && fits(first);
        for key in &self.keys[1..] {
            if !key.algorithms.contains(&header.alg) {
                continue;
            }
            any_algorithm = true;
            if !fits(key) {
                continue;
            }
            tried = true;
            match jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation) {
                Ok(data) => return self.identity(data),
                Err(e) if key_did_not_match(e.kind()) => continue,
                Err(e) => return Err(map_error(e.kind())),
            }
        }
        Err(if !any_algorithm {
            AuthError::Algorithm
        } else if !tried {
            AuthError::UnknownKey
        } else {
            AuthError::Signature
        })
    }
}

/// The two header fields that choose the keys. Parsed here rather than with
/// `jsonwebtoken::decode_header`, whose full `Header` (a dozen optional
/// fields and a flattened map) costs several times more.
struct TokenHeader {
    alg: Algorithm,
    kid: Option<String>,
}

impl TokenHeader {
    fn read(token: &str) -> Result<TokenHeader, AuthError> {
        use base64::Engine;
        #[derive(Deserialize)]
        struct Raw {
            alg: String,
            #[serde(default)]
            kid: Option<String>,
        }
        let encoded = token.split('.').next().ok_or(AuthError::Malformed)?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| AuthError::Malformed)?;
        let raw: Raw = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
        Ok(TokenHeader {
            // `none` and every name jsonwebtoken does not know.
            alg: Algorithm::from_str(&raw.alg).map_err(|_| AuthError::Algorithm)?,
            kid: raw.kid,
        })
    }
}

impl Verifier {
    /// The identity in a verified token: the header has no `crit`, `exp`
    /// is within the maximum lifetime, and the user id and username
    /// follow their rules.
    fn identity(&self, data: TokenData<Claims>) -> Result<Identity, AuthError> {
        if data.header.crit.is_some() {
            return Err(AuthError::CriticalHeader);
        }
        let claims = data.claims;
        let expires_at = claims.exp.ok_or(AuthError::MissingExp)?;
        if let Some(ahead) = self.max_exp_ahead {
            let now = chrono::Utc::now().timestamp();
            if expires_at > now.saturating_add(ahead) {
                return Err(AuthError::LifetimeTooLong);
            }
        }
        let user_id = as_user_id(
            claims
                .user_id
                .as_ref()
                .or(claims.sub.as_ref())
                .ok_or(AuthError::MissingUserId)?,
        )?;
        let username = claims.username.ok_or(AuthError::MissingUsername)?;
        check_username(&username)?;
        Ok(Identity {
            user_id,
            username,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sign_hs256;
    use jsonwebtoken::{EncodingKey, Header};
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
            Err(AuthError::InvalidUserId)
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
    fn user_ids_are_in_range_and_a_string_sub_is_canonical() {
        let v = Verifier::hs256(SECRET, 0);
        let with = |claims: serde_json::Value| {
            let mut c = json!({"username": "al", "exp": exp_in(60)});
            c.as_object_mut()
                .unwrap()
                .extend(claims.as_object().unwrap().clone());
            v.verify(&sign(c, Algorithm::HS256, SECRET))
                .map(|i| i.user_id)
        };
        let max = (1i64 << 53) - 1;
        for bad in [
            json!({"user_id": 0}),
            json!({"user_id": -1}),
            json!({"user_id": max + 1}),
            json!({"user_id": u64::MAX}),
            json!({"user_id": "07"}),
            json!({"user_id": 7.0}),
            json!({"sub": "+7"}),
            json!({"sub": "007"}),
            json!({"sub": " 7"}),
            json!({"sub": "7 "}),
            json!({"sub": "7.0"}),
            json!({"sub": "0"}),
            json!({"sub": "-7"}),
            json!({"sub": ""}),
            json!({"sub": "9007199254740992"}),
            json!({"sub": "99999999999999999999"}),
            json!({"sub": 7.5}),
            json!({"sub": true}),
        ] {
            assert_eq!(with(bad.clone()), Err(AuthError::InvalidUserId), "{bad}");
        }
        assert_eq!(with(json!({})), Err(AuthError::MissingUserId));
        assert_eq!(with(json!({"user_id": max})), Ok(max));
        assert_eq!(with(json!({"sub": max.to_string()})), Ok(max));
        assert_eq!(with(json!({"sub": "10"})), Ok(10));
        assert_eq!(with(json!({"user_id": 3, "sub": "x"})), Ok(3));
    }

    #[test]
    fn usernames_follow_the_rules() {
        let v = Verifier::hs256(SECRET, 0);
        let name = |username: serde_json::Value| {
            let c = json!({"user_id": 1, "username": username, "exp": exp_in(60)});
            v.verify(&sign(c, Algorithm::HS256, SECRET))
                .map(|i| i.username)
        };
        assert_eq!(name(json!("al")), Ok("al".into()));
        assert_eq!(name(json!(5)), Err(AuthError::Malformed));
        assert_eq!(
            name(json!("a\u{202E}b")),
            Err(AuthError::InvalidUsername(
                crate::auth::UsernameError::Invisible
            ))
        );
        assert_eq!(
            name(json!(" ")),
            Err(AuthError::InvalidUsername(
                crate::auth::UsernameError::Empty
            ))
        );
    }

    #[test]
    fn the_maximum_lifetime_bounds_exp_plus_leeway() {
        let v = Verifier::hs256(SECRET, 0).with_max_lifetime(3600, 30);
        let exp = |exp: i64| {
            let c = json!({"user_id": 1, "username": "al", "exp": exp});
            v.verify(&sign(c, Algorithm::HS256, SECRET)).map(|_| ())
        };
        assert_eq!(exp(exp_in(3600)), Ok(()));
        assert_eq!(exp(exp_in(3600 + 20)), Ok(()), "within the leeway");
        assert_eq!(exp(exp_in(3600 + 120)), Err(AuthError::LifetimeTooLong));
        assert_eq!(exp(i64::MAX), Err(AuthError::LifetimeTooLong));
        let unbounded = Verifier::hs256(SECRET, 0);
        let c = json!({"user_id": 1, "username": "al", "exp": i64::MAX});
        assert!(unbounded.verify(&sign(c, Algorithm::HS256, SECRET)).is_ok());
    }

    #[test]
    fn a_crit_header_is_refused_whichever_key_verifies() {
        let v = KeySources {
            secret: Some("current".into()),
            previous_secrets: vec!["old".into()],
            ..KeySources::default()
        }
        .load()
        .unwrap();
        let claims = json!({"user_id": 5, "username": "al", "exp": exp_in(60)});
        for secret in [&b"current"[..], b"old"] {
            let mut header = Header::new(Algorithm::HS256);
            header.crit = Some(vec!["exp".into()]);
            let t =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap();
            assert_eq!(v.verify(&t), Err(AuthError::CriticalHeader));
        }
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

    fn sign_kid(claims: serde_json::Value, secret: &[u8], kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn secrets_are_chosen_by_kid_and_tried_in_order_without_one() {
        let v = KeySources {
            secret: Some("current".into()),
            secret_kid: Some("k2".into()),
            previous_secrets: vec!["k1:old".into(), "".into(), "plain".into()],
            ..KeySources::default()
        }
        .load()
        .unwrap();
        assert_eq!(
            (v.key_count(), v.algorithm_names()),
            (3, vec!["HS256".into()])
        );
        let claims = json!({"user_id": 5, "username": "al", "exp": exp_in(60)});
        for (secret, kid) in [
            (&b"current"[..], Some("k2")),
            (b"current", None),
            (b"old", Some("k1")),
            (b"old", None),
            (b"plain", None),
        ] {
            let t = sign_kid(claims.clone(), secret, kid);
            assert_eq!(v.verify(&t).map(|i| i.user_id), Ok(5), "{kid:?}");
        }
        for (secret, kid, err) in [
            (&b"current"[..], Some("k1"), AuthError::Signature),
            (b"old", Some("k2"), AuthError::Signature),
            (b"plain", Some("k3"), AuthError::UnknownKey),
            (b"other", None, AuthError::Signature),
        ] {
            let t = sign_kid(claims.clone(), secret, kid);
            assert_eq!(v.verify(&t), Err(err), "{kid:?}");
        }
        // Claims checked once a key verified the signature, whichever key.
        let expired = json!({"user_id": 5, "username": "al", "exp": exp_in(-10)});
        assert_eq!(
            v.verify(&sign_kid(expired, b"old", None)),
            Err(AuthError::Expired)
        );
        assert_eq!(v.verify("garbage"), Err(AuthError::Malformed));
    }

    #[test]
    fn issuer_and_audience_are_required_when_set() {
        let v = KeySources {
            secret: Some("s".into()),
            issuer: Some("me".into()),
            audience: Some("chat".into()),
            ..KeySources::default()
        }
        .load()
        .unwrap();
        let base = json!({"user_id": 5, "username": "al", "exp": exp_in(60)});
        let with = |extra: serde_json::Value| {
            let mut c = base.clone();
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            sign_kid(c, b"s", None)
        };
        assert!(v.verify(&with(json!({"iss": "me", "aud": "chat"}))).is_ok());
        assert_eq!(
            v.verify(&with(json!({"aud": "chat"}))),
            Err(AuthError::Issuer)
        );
        assert_eq!(
            v.verify(&with(json!({"iss": "you", "aud": "chat"}))),
            Err(AuthError::Issuer)
        );
        assert_eq!(
            v.verify(&with(json!({"iss": "me"}))),
            Err(AuthError::Audience)
        );
        assert_eq!(
            v.verify(&with(json!({"iss": "me", "aud": ["x"]}))),
            Err(AuthError::Audience)
        );
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
