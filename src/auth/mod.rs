//! JWT authentication: verifying the token a client presents at the
//! handshake, and signing tokens for the `token` command.
//!
//! # Layout
//!
//! - `mod.rs` (this file): what a caller gets: [`Identity`], [`AuthError`]
//!   (the reason sent with HTTP 401), and the re-exports.
//! - [`keys`]: key material. [`KeySources`] (secrets, PEM public keys, a
//!   JWKS file, and the claims every token must carry) loads into a
//!   [`Verifier`], or fails with a [`KeyError`]; [`FileError`], a key or
//!   certificate file that cannot be read or holds no usable PEM (also
//!   used for the TLS files).
//! - [`verify`]: [`Verifier::verify`]: the candidate keys by the header's
//!   `alg` and `kid`, `jsonwebtoken` errors mapped to [`AuthError`], the
//!   claims read into an [`Identity`]. On the handshake path
//!   (`benches/jwt.rs`).
//! - [`username`]: which usernames a token may carry ([`check_username`])
//!   and the look-alike key they are unique under ([`username_key`]).
//! - [`sign`]: HS256 signing for the `token` command and `--dev` tokens
//!   ([`sign_hs256`], [`sign_hs256_with`], [`SignOptions`]).
//!
//! Every public item is re-exported here: callers write `crate::auth::X`.

use crate::protocol::UserId;

pub mod keys;
pub mod sign;
pub mod username;
pub mod verify;

pub use keys::{FileError, KeyError, KeySources};
pub use sign::{sign_hs256, sign_hs256_with, SignOptions};
pub use username::{check_username, username_key, UsernameError, MAX_USERNAME_BYTES};
pub use verify::Verifier;

/// Who a verified token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// From the `user_id` claim, or else `sub`: in `1 ..= 2^53 - 1`.
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
    /// Neither `user_id` nor `sub`.
    #[error("token has no user id")]
    MissingUserId,
    /// `user_id` (or, without it, `sub`) is not an integer in
    /// `1 ..= 2^53 - 1`; a string `sub` must be its canonical decimal form.
    #[error("token user id must be an integer from 1 to 9007199254740991")]
    InvalidUserId,
    /// No `username` claim (or not a string).
    #[error("token has no username")]
    MissingUsername,
    /// The username breaks a rule of [`username`].
    #[error(transparent)]
    InvalidUsername(#[from] UsernameError),
    /// `exp` is further ahead than the server's maximum token lifetime
    /// (plus the leeway).
    #[error("token lifetime exceeds the server's maximum")]
    LifetimeTooLong,
    /// The header has a `crit` member: RFC 7515 §4.1.11 says to refuse
    /// extensions one does not understand, and this server knows none.
    #[error("token header has a crit member (no extension is understood)")]
    CriticalHeader,
}
