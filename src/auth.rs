//! JWT authentication: verifying the token a client presents at the
//! handshake, and signing tokens for the `token` command.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tracing::warn;

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
    /// The signature does not match any configured key.
    #[error("invalid token signature")]
    Signature,
    /// The header's `kid` names no configured key (of the header's algorithm).
    #[error("unknown token key id")]
    UnknownKey,
    /// `iss` is missing or not the configured issuer.
    #[error("token issuer not accepted")]
    Issuer,
    /// `aud` is missing or does not name the configured audience.
    #[error("token audience not accepted")]
    Audience,
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

/// One verification key: where it came from, its id, and the algorithms
/// (all of one family) it verifies.
struct Key {
    /// The `kid` this key answers to (`None`: tried only for tokens without `kid`).
    id: Option<Box<str>>,
    key: DecodingKey,
    /// Exactly the algorithms this key verifies; `validation.algorithms` too.
    algorithms: Vec<Algorithm>,
    validation: Validation,
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
    keys: Vec<Key>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithm_names())
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Why a key source could not be loaded. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key source was configured.
    #[error(
        "no JWT key configured: set JWT_SECRET (--jwt-secret), --jwt-public-key or --jwks-file"
    )]
    NoKeys,
    /// A secret is empty.
    #[error("{0}: empty secret")]
    EmptySecret(&'static str),
    /// A key file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no usable public key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The JWKS file is not a usable key set.
    #[error("{path}: {reason}")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Where the keys come from, and the claims every token must carry.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    /// The current HS256 secret (`JWT_SECRET`).
    pub secret: Option<String>,
    /// The current secret's key id (`JWT_SECRET_KID`).
    pub secret_kid: Option<String>,
    /// Previous HS256 secrets, each `SECRET` or `KID:SECRET`.
    pub previous_secrets: Vec<String>,
    /// PEM public key files, each `PATH` or `KID:PATH`.
    pub public_keys: Vec<String>,
    /// A JWKS document on disk.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), if any.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// Splits `ID:VALUE` at the first `:`; an empty id (`:VALUE`) means none.
fn split_kid(entry: &str) -> (Option<&str>, &str) {
    match entry.split_once(':') {
        Some((kid, value)) => ((!kid.is_empty()).then_some(kid), value),
        None => (None, entry),
    }
}

impl KeySources {
    fn validation(&self, algorithms: &[Algorithm]) -> Validation {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.to_vec();
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.validate_aud = true;
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    fn key(&self, id: Option<&str>, key: DecodingKey, algorithms: Vec<Algorithm>) -> Key {
        Key {
            id: id.map(Into::into),
            validation: self.validation(&algorithms),
            key,
            algorithms,
        }
    }

    /// Reads every source (files included) into a [`Verifier`].
    pub fn load(&self) -> Result<Verifier, KeyError> {
        let mut keys = Vec::new();
        if let Some(secret) = self.secret.as_deref() {
            if secret.is_empty() {
                return Err(KeyError::EmptySecret("JWT_SECRET"));
            }
            let kid = self.secret_kid.as_deref().filter(|k| !k.is_empty());
            keys.push(self.key(
                kid,
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256],
            ));
        }
        for entry in self.previous_secrets.iter().filter(|e| !e.is_empty()) {
            let (kid, secret) = split_kid(entry);
            if secret.is_empty() {
                return Err(KeyError::EmptySecret("JWT_PREVIOUS_SECRETS"));
            }
            keys.push(self.key(
                kid,
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256],
            ));
        }
        for entry in self.public_keys.iter().filter(|e| !e.is_empty()) {
            let (kid, path) = split_kid(entry);
            let (key, algorithms) = read_public_key(Path::new(path))?;
            keys.push(self.key(kid, key, algorithms));
        }
        if let Some(path) = &self.jwks_file {
            for (kid, key, algorithms) in read_jwks(path)? {
                keys.push(self.key(kid.as_deref(), key, algorithms));
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Verifier { keys })
    }
}

/// A PEM public key (`PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`) and the
/// algorithms it verifies: RS256/RS384/RS512, ES256 or ES384 (by curve), EdDSA.
fn read_public_key(path: &Path) -> Result<(DecodingKey, Vec<Algorithm>), KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: &str| KeyError::Pem {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let text = String::from_utf8_lossy(&pem);
    if !text.contains("-----BEGIN PUBLIC KEY-----")
        && !text.contains("-----BEGIN RSA PUBLIC KEY-----")
    {
        return Err(bad(
            "expected a PEM public key (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)",
        ));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, RSA_ALGORITHMS.to_vec()));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        let alg = match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => Algorithm::ES256,
            Ok(97) => Algorithm::ES384,
            _ => return Err(bad("unsupported elliptic curve (P-256 and P-384 are)")),
        };
        return Ok((key, vec![alg]));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        if key.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
            return Err(bad("not an Ed25519 public key"));
        }
        return Ok((key, vec![Algorithm::EdDSA]));
    }
    Err(bad("not an RSA, EC (P-256/P-384) or Ed25519 public key"))
}

const RSA_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

/// A usable key of a JWKS document: its id, key and algorithms.
type JwksKey = (Option<String>, DecodingKey, Vec<Algorithm>);

/// Reads a JWKS document. Keys for encryption (`"use":"enc"`) and keys of
/// unsupported types are skipped with a warning; a document with no usable
/// key at all is an error.
fn read_jwks(path: &Path) -> Result<Vec<JwksKey>, KeyError> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| KeyError::Jwks {
        path: path.to_owned(),
        reason,
    };
    let set: JwkSet =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a JWKS document: {e}")))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone();
        let name = kid.clone().unwrap_or_else(|| format!("#{i}"));
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            warn!(file = %path.display(), key = %name, "JWKS: skipping an encryption key");
            continue;
        }
        let family_default: Option<Vec<Algorithm>> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Some(RSA_ALGORITHMS.to_vec()),
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Some(vec![Algorithm::ES256]),
                EllipticCurve::P384 => Some(vec![Algorithm::ES384]),
                _ => None,
            },
            AlgorithmParameters::OctetKeyPair(p) => {
                (p.curve == EllipticCurve::Ed25519).then(|| vec![Algorithm::EdDSA])
            }
            AlgorithmParameters::OctetKey(_) => Some(vec![Algorithm::HS256]),
            _ => None,
        };
        let Some(defaults) = family_default else {
            warn!(file = %path.display(), key = %name, "JWKS: skipping a key of an unsupported type or curve");
            continue;
        };
        let algorithms = match jwk.common.key_algorithm {
            None => defaults,
            Some(ka) => match Algorithm::from_str(&ka.to_string()) {
                // The declared algorithm must belong to the key's own family
                // (and, for EC, match its curve).
                Ok(alg)
                    if alg.family() == defaults[0].family()
                        && (alg.family() != AlgorithmFamily::Ec || defaults.contains(&alg)) =>
                {
                    vec![alg]
                }
                _ => {
                    warn!(file = %path.display(), key = %name, alg = %ka, "JWKS: skipping a key whose alg does not fit its type");
                    continue;
                }
            },
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key {name}: {e}")))?;
        // The verifiers expect exact sizes (an Ed25519 key shorter than 32
        // bytes would even panic in jsonwebtoken): check them here.
        let expected = match algorithms[0] {
            Algorithm::ES256 => Some(65),
            Algorithm::ES384 => Some(97),
            Algorithm::EdDSA => Some(32),
            _ => None,
        };
        if let Some(len) = expected {
            if key.try_get_as_bytes().map(<[u8]>::len).ok() != Some(len) {
                return Err(bad(format!("key {name}: wrong public key size")));
            }
        }
        keys.push((kid, key, algorithms));
    }
    if keys.is_empty() {
        return Err(bad("no usable signing key".into()));
    }
    Ok(keys)
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
    /// of clock skew on `exp` and `nbf`.
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
        }
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
                _ => return identity(data.claims),
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
                Ok(data) => return identity(data.claims),
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

/// The identity in verified claims.
fn identity(claims: Claims) -> Result<Identity, AuthError> {
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

    fn sign_kid(claims: serde_json::Value, secret: &[u8], kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn key_ids_split_at_the_first_colon() {
        assert_eq!(split_kid("secret"), (None, "secret"));
        assert_eq!(split_kid("k1:sec:ret"), (Some("k1"), "sec:ret"));
        assert_eq!(split_kid(":sec:ret"), (None, "sec:ret"));
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

    #[test]
    fn no_source_is_an_error() {
        assert!(matches!(
            KeySources::default().load(),
            Err(KeyError::NoKeys)
        ));
        let empty = KeySources {
            secret: Some(String::new()),
            ..KeySources::default()
        };
        assert!(matches!(empty.load(), Err(KeyError::EmptySecret(_))));
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
