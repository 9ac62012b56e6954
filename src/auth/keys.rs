//! Key material: where the verification keys come from ([`KeySources`]),
//! reading secrets, PEM public keys and JWKS files into `Key`s, and why
//! that can fail ([`KeyError`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use tracing::warn;

use super::Verifier;

/// One verification key: where it came from, its id, and the algorithms
/// (all of one family) it verifies.
pub(super) struct Key {
    /// The `kid` this key answers to (`None`: tried only for tokens without `kid`).
    pub(super) id: Option<Box<str>>,
    pub(super) key: DecodingKey,
    /// Exactly the algorithms this key verifies; `validation.algorithms` too.
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) validation: Validation,
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
    /// A key file could not be read, or a PEM file holds no usable public key.
    #[error(transparent)]
    File(#[from] FileError),
    /// The JWKS file is not a usable key set.
    #[error("{path}: {reason}")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A key or certificate file that could not be read, or holds no usable
/// PEM: the JWT key files here and the TLS files of
/// [`credentials`](crate::credentials). The `Display` text is the path and
/// the reason; it never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable PEM key or certificate.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl FileError {
    /// Reads the whole file at `path`.
    pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
        std::fs::read(path).map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })
    }

    /// `path` holds no usable PEM, for `reason`.
    pub fn pem(path: &Path, reason: impl Into<String>) -> FileError {
        FileError::Pem {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
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
    /// Longest a token may still live when it is presented: a token whose
    /// `exp` is more than this (plus the leeway) ahead is refused
    /// (`None`: no maximum).
    pub max_lifetime_secs: Option<u64>,
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

    /// How far ahead of now an `exp` may be (maximum lifetime plus leeway).
    pub(super) fn max_exp_ahead(&self) -> Option<i64> {
        self.max_lifetime_secs
            .map(|max| i64::try_from(max.saturating_add(self.leeway_secs)).unwrap_or(i64::MAX))
    }

    pub(super) fn key(
        &self,
        id: Option<&str>,
        key: DecodingKey,
        algorithms: Vec<Algorithm>,
    ) -> Key {
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
        Ok(Verifier {
            keys,
            max_exp_ahead: self.max_exp_ahead(),
        })
    }
}

/// A PEM public key (`PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`) and the
/// algorithms it verifies: RS256/RS384/RS512, ES256 or ES384 (by curve), EdDSA.
fn read_public_key(path: &Path) -> Result<(DecodingKey, Vec<Algorithm>), KeyError> {
    let pem = FileError::read(path)?;
    let bad = |reason: &str| KeyError::from(FileError::pem(path, reason));
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
    let bytes = FileError::read(path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_split_at_the_first_colon() {
        assert_eq!(split_kid("secret"), (None, "secret"));
        assert_eq!(split_kid("k1:sec:ret"), (Some("k1"), "sec:ret"));
        assert_eq!(split_kid(":sec:ret"), (None, "sec:ret"));
    }

    #[test]
    fn file_errors_read_as_the_path_and_the_reason() {
        let missing = Path::new("/nonexistent/jwt.pem");
        let e = KeyError::from(FileError::read(missing).unwrap_err());
        let io = std::fs::read(missing).unwrap_err();
        assert_eq!(e.to_string(), format!("/nonexistent/jwt.pem: {io}"));
        assert!(std::error::Error::source(&e).is_some(), "the io error");
        let e = KeyError::from(FileError::pem(Path::new("k.pem"), "not a key"));
        assert_eq!(e.to_string(), "k.pem: not a key");
        let e = KeySources {
            public_keys: vec!["/nonexistent/jwt.pem".into()],
            ..KeySources::default()
        }
        .load()
        .unwrap_err();
        assert!(matches!(e, KeyError::File(FileError::Read { .. })), "{e}");
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
}
