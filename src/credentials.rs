//! What the server may reload while it runs: the JWT verification keys and
//! the TLS certificate. Shards read both once per accepted connection
//! (a lock-free `ArcSwap` load); [`Credentials::reload`] (SIGHUP) swaps in
//! freshly read files, and a reload that fails keeps what was loaded
//! before. Open connections never look at either again.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info};

use crate::auth::{AuthError, FileError, Identity, KeyError, KeySources, Verifier};
use crate::config::Config;

/// Why TLS could not be set up. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of `--tls-cert` and `--tls-key` is set.
    #[error("--tls-cert and --tls-key must be given together")]
    Incomplete,
    /// A file could not be read, or holds no usable PEM certificate chain
    /// or private key.
    #[error(transparent)]
    File(#[from] FileError),
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("certificate and key refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why loading or reloading the credentials failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The JWT keys.
    #[error("jwt keys: {0}")]
    Keys(#[from] KeyError),
    /// The TLS certificate or key.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
}

/// The certificate chain and key files of `--tls-cert`/`--tls-key`.
#[derive(Debug, Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// The server's reloadable keys and certificate.
pub struct Credentials {
    sources: KeySources,
    verifier: ArcSwap<Verifier>,
    tls_files: Option<TlsFiles>,
    tls: Option<ArcSwap<rustls::ServerConfig>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("verifier", &*self.verifier.load())
            .field("tls", &self.tls_files.as_ref().map(|t| &t.cert))
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Loads the key sources and, when configured, the TLS certificate and key.
    pub fn load(config: &Config) -> Result<Credentials, CredentialsError> {
        let sources = key_sources(config);
        let verifier = sources.load()?;
        let tls_files = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => return Err(TlsError::Incomplete.into()),
        };
        let tls = match &tls_files {
            Some(files) => Some(ArcSwap::from(load_tls(files)?)),
            None => None,
        };
        Ok(Credentials {
            sources,
            verifier: ArcSwap::from_pointee(verifier),
            tls_files,
            tls,
        })
    }

    /// The current verifier.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.load_full()
    }

    /// Verifies `token` with the current keys (no reference count taken).
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verifier.load().verify(token)
    }

    /// The TLS acceptor for a new connection (`None`: plain TCP).
    pub fn tls_acceptor(&self) -> Option<TlsAcceptor> {
        self.tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(tls.load_full()))
    }

    /// True when the server speaks TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// Logs what is active: algorithms and key count, and the certificate
    /// file (never key material).
    pub fn log_active(&self, what: &str) {
        let verifier = self.verifier.load();
        info!(
            algorithms = %verifier.algorithm_names().join(","),
            keys = verifier.key_count(),
            "jwt keys {what}"
        );
        if let Some(files) = &self.tls_files {
            info!(cert = %files.cert.display(), "tls {what}");
        }
    }

    /// Re-reads the key files (`--jwt-public-key`, `--jwks-file`) and the
    /// TLS certificate and key. Each part that fails to load is logged and
    /// keeps its previous value; the first failure is returned. New
    /// connections use what was loaded; open connections are untouched.
    pub fn reload(&self) -> Result<(), CredentialsError> {
        let mut first_error = None;
        match self.sources.load() {
            Ok(verifier) => self.verifier.store(Arc::new(verifier)),
            Err(e) => {
                error!(error = %e, "reload: jwt keys not reloaded; keeping the previous keys");
                first_error = Some(CredentialsError::Keys(e));
            }
        }
        if let (Some(files), Some(tls)) = (&self.tls_files, &self.tls) {
            match load_tls(files) {
                Ok(config) => tls.store(config),
                Err(e) => {
                    error!(error = %e, "reload: tls not reloaded; keeping the previous certificate");
                    first_error.get_or_insert(CredentialsError::Tls(e));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                self.log_active("reloaded");
                Ok(())
            }
        }
    }
}

/// The key sources named by the configuration.
fn key_sources(config: &Config) -> KeySources {
    KeySources {
        secret: config.jwt_secret.clone().filter(|s| !s.is_empty()),
        secret_kid: config.jwt_secret_kid.clone(),
        previous_secrets: config.jwt_previous_secrets.clone(),
        public_keys: config.jwt_public_keys.clone(),
        jwks_file: config.jwks_file.clone(),
        issuer: config.jwt_issuer.clone().filter(|s| !s.is_empty()),
        audience: config.jwt_audience.clone().filter(|s| !s.is_empty()),
        leeway_secs: config.jwt_leeway_secs,
        max_lifetime_secs: Some(config.max_token_lifetime_secs),
    }
}

/// Reads the PEM certificate chain and private key into a rustls server
/// configuration (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`).
fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_pem = FileError::read(&files.cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FileError::pem(&files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(FileError::pem(&files.cert, "no certificate found").into());
    }
    let key_pem = FileError::read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| FileError::pem(&files.key, format!("no private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
