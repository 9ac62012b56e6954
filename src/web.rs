//! The plain-HTTP answers of the WebSocket port: the chat page and its
//! assets (embedded in the binary from `web/`), the health probes
//! (`/healthz`, `/readyz`), `/metrics` (rendered by [`crate::metrics`]) and
//! the `--dev` token endpoint (`/dev/token`, and `/dev/enabled` for the page
//! to ask). [`answer`] is the one router of these paths.
//!
//! Every answer is one bounded response followed by closing the connection:
//! the request was already read by [`crate::handshake`] under its size and
//! time limits.

use std::borrow::Cow;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::config::Config;
use crate::handshake::{reason_phrase, PlainRequest};

/// Forbids every resource that is not served by this server: no CDN, no
/// inline script or style, no framing. `connect-src 'self'` also covers
/// `ws:`/`wss:` to the same host.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Lifetime of a token signed by `/dev/token`.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Longest username `/dev/token` signs, in characters.
pub const DEV_USERNAME_MAX_CHARS: usize = 32;

/// Time allowed to write one response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A file of the web client, embedded at build time.
#[derive(Debug)]
pub struct Asset {
    /// Request path.
    pub path: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// File contents.
    pub body: &'static [u8],
}

const INDEX: &[u8] = include_bytes!("../web/index.html");

/// The web client's files. `app.js` is an ES module: every module it
/// imports (`from './x.js'`, the SDK as `./sdk/chat.js`) must be listed
/// here too (a unit test checks).
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: INDEX,
    },
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: INDEX,
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/app.js"),
    },
    Asset {
        path: "/edits.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/edits.js"),
    },
    Asset {
        path: "/members.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/members.js"),
    },
    // The JavaScript SDK (clients/js), which the page uses for everything
    // it says to the server.
    Asset {
        path: "/sdk/chat.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../clients/js/index.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/style.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../web/favicon.svg"),
    },
];

/// One complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `Cache-Control`.
    pub cache_control: &'static str,
    /// Body.
    pub body: Cow<'static, [u8]>,
}

impl Response {
    /// A short plain-text answer (errors, tokens), never cached.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        let mut body = body.into();
        body.push('\n');
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            cache_control: "no-store",
            body: Cow::Owned(body.into_bytes()),
        }
    }

    /// Status line and headers, ending with the blank line.
    pub fn head(&self) -> String {
        format!(
            "HTTP/1.1 {} {}\r\n\
             Content-Type: {}\r\n\
             Content-Length: {}\r\n\
             Cache-Control: {}\r\n\
             Content-Security-Policy: {CONTENT_SECURITY_POLICY}\r\n\
             X-Content-Type-Options: nosniff\r\n\
             Referrer-Policy: no-referrer\r\n\
             Connection: close\r\n\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len(),
            self.cache_control,
        )
    }

    /// Writes the response and shuts the socket's write side. Errors are
    /// ignored: the client may be gone.
    pub async fn write<S: AsyncWrite + Unpin>(&self, stream: &mut S) {
        let write = async {
            stream.write_all(self.head().as_bytes()).await?;
            stream.write_all(&self.body).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(WRITE_TIMEOUT, write).await;
    }
}

/// Answers a plain `GET` on the WebSocket port: `/metrics` (rendered by
/// `metrics` only when asked for), `/dev/token`, `/dev/enabled`, else the
/// embedded page and assets. The only place that knows these paths.
pub fn answer(
    request: &PlainRequest,
    config: &Config,
    metrics: impl FnOnce() -> String,
) -> Response {
    match request.path.as_str() {
        // Served only by the listener of its own when one is configured.
        "/metrics" if config.metrics_bind.is_some() => Response::text(404, "not found"),
        "/metrics" => self::metrics(request, config, metrics),
        "/dev/token" => dev_token(config, request.query.as_deref()),
        "/dev/enabled" => dev_enabled(config),
        path => asset(path),
    }
}

/// `GET /metrics` (on the main port or on `--metrics-bind`): the page,
/// or 401 when `--metrics-token` is set and the request does not carry
/// `Authorization: Bearer TOKEN` (compared in constant time).
pub fn metrics(
    request: &PlainRequest,
    config: &Config,
    render: impl FnOnce() -> String,
) -> Response {
    if let Some(expected) = &config.metrics_token {
        let given = request.authorization.as_deref().and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
            return Response::text(401, "unauthorized");
        }
    }
    Response {
        status: 200,
        content_type: crate::metrics::CONTENT_TYPE,
        cache_control: "no-store",
        body: Cow::Owned(render().into_bytes()),
    }
}

/// Equal bytes, in time that depends only on the lengths (never on where
/// the first difference is).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        // Compare against something of b's whatever the lengths.
        let y = b.get(i % b.len().max(1)).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// What `/readyz` found, from the best to the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Serving, the database answers and every writer commits.
    Ready,
    /// The server is draining.
    ShuttingDown,
    /// A writer is not connected or its last commit failed.
    WritersDown,
    /// The shard's pool could not reach the database.
    DatabaseDown,
}

/// The answer to a health probe: `/healthz` (`None`: alive) or `/readyz`
/// with what the shard found.
pub fn probe(readiness: Option<Readiness>) -> Response {
    match readiness {
        None => Response::text(200, "ok"),
        Some(Readiness::Ready) => Response::text(200, "ready"),
        Some(Readiness::ShuttingDown) => Response::text(503, "shutting down"),
        Some(Readiness::WritersDown) => Response::text(503, "writers cannot reach the database"),
        Some(Readiness::DatabaseDown) => Response::text(503, "database unavailable"),
    }
}

/// The embedded file at `path`, or 404.
pub fn asset(path: &str) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        // Not fingerprinted: revalidate, so an upgraded server is picked up.
        Some(a) => Response {
            status: 200,
            content_type: a.content_type,
            cache_control: "no-cache",
            body: Cow::Borrowed(a.body),
        },
        None => Response::text(404, "not found"),
    }
}

/// Why `/dev/token` refused to sign.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DevTokenError {
    /// The server runs without `--dev`.
    #[error("not found")]
    Disabled,
    /// `user_id` is missing or not in `1 ..= 2^53 - 1`.
    #[error("user_id must be an integer from 1 to 9007199254740991")]
    UserId,
    /// `username` is missing, too long, or breaks the handshake's rules
    /// (`auth::check_username`).
    #[error(
        "username must be 1 to {DEV_USERNAME_MAX_CHARS} characters, without control, invisible or bidi characters"
    )]
    Username,
    /// Dev tokens are signed with `JWT_SECRET`, and none is configured.
    #[error("dev tokens need JWT_SECRET (the server verifies only public keys)")]
    NoSecret,
}

/// `GET /dev/enabled`: `true` or `false` (always 200, so that the page can
/// ask without a failed request in the browser console).
pub fn dev_enabled(config: &Config) -> Response {
    let enabled = config.dev && config.jwt_secret.is_some();
    Response::text(200, if enabled { "true" } else { "false" })
}

/// `GET /dev/token?user_id=N&username=NAME`: with `--dev`, a token signed
/// with the server's secret, valid [`DEV_TOKEN_TTL`]; without it, 404.
pub fn dev_token(config: &Config, query: Option<&str>) -> Response {
    match sign_dev_token(config, query) {
        Ok(token) => Response::text(200, token),
        Err(e @ DevTokenError::Disabled) => Response::text(404, e.to_string()),
        Err(e @ DevTokenError::NoSecret) => Response::text(503, e.to_string()),
        Err(e) => Response::text(400, e.to_string()),
    }
}

fn sign_dev_token(config: &Config, query: Option<&str>) -> Result<String, DevTokenError> {
    if !config.dev {
        return Err(DevTokenError::Disabled);
    }
    let secret = config.jwt_secret.as_ref().ok_or(DevTokenError::NoSecret)?;
    let mut user_id = None;
    let mut username = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "user_id" => user_id = v.trim().parse::<i64>().ok(),
            "username" => username = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    // The handshake's own rules (user id range, username characters), so
    // that a dev token is never one the server then refuses.
    let user_id = user_id
        .filter(|id| crate::protocol::valid_user_id(*id))
        .ok_or(DevTokenError::UserId)?;
    let username = username
        .filter(|u| {
            let n = u.chars().count();
            (1..=DEV_USERNAME_MAX_CHARS).contains(&n) && crate::auth::check_username(u).is_ok()
        })
        .ok_or(DevTokenError::Username)?;
    let ttl = i64::try_from(DEV_TOKEN_TTL.as_secs()).unwrap_or(3600);
    // Signed like the `token` command: with the secret's key id, issuer
    // and audience when configured, so the server accepts it.
    let options = crate::auth::SignOptions {
        kid: config.jwt_secret_kid.clone(),
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
    };
    Ok(crate::auth::sign_hs256_with(
        secret.as_bytes(),
        &options,
        user_id,
        &username,
        ttl,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, query: Option<&str>) -> PlainRequest {
        PlainRequest {
            path: path.into(),
            query: query.map(str::to_owned),
            authorization: None,
        }
    }

    #[test]
    fn metrics_token_and_separate_bind() {
        let mut c = config(false);
        c.metrics_token = Some("s3cret".into());
        let mut req = get("/metrics", None);
        assert_eq!(answer(&req, &c, || unreachable!()).status, 401);
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret"] {
            req.authorization = Some(wrong.into());
            assert_eq!(answer(&req, &c, || unreachable!()).status, 401, "{wrong}");
        }
        req.authorization = Some("Bearer s3cret".into());
        assert_eq!(answer(&req, &c, || "x\n".into()).status, 200);
        c.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
        assert_eq!(answer(&req, &c, || unreachable!()).status, 404);
        assert_eq!(metrics(&req, &c, || "x\n".into()).status, 200);
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(!constant_time_eq(b"ab", b"a"));
    }

    #[test]
    fn paths_are_routed_here_and_metrics_rendered_only_when_asked() {
        let c = config(false);
        let mut rendered = 0;
        let r = answer(&get("/metrics", None), &c, || {
            rendered += 1;
            "chat_connections 0\n".into()
        });
        assert_eq!((r.status, rendered), (200, 1));
        assert_eq!(r.content_type, crate::metrics::CONTENT_TYPE);
        let r = answer(&get("/app.js", None), &c, || unreachable!());
        assert_eq!(
            (r.status, r.content_type),
            (200, "text/javascript; charset=utf-8")
        );
        assert_eq!(
            answer(&get("/nope", None), &c, || unreachable!()).status,
            404
        );
        assert_eq!(
            answer(
                &get("/dev/token", Some("user_id=1&username=a")),
                &c,
                || unreachable!()
            )
            .status,
            404
        );
        assert_eq!(
            &*answer(&get("/dev/enabled", None), &c, || unreachable!()).body,
            b"false\n"
        );
    }

    #[test]
    fn probes() {
        assert_eq!(
            (probe(None).status, &*probe(None).body),
            (200, &b"ok\n"[..])
        );
        assert_eq!(probe(Some(Readiness::Ready)).status, 200);
        for r in [
            Readiness::ShuttingDown,
            Readiness::WritersDown,
            Readiness::DatabaseDown,
        ] {
            assert_eq!(probe(Some(r)).status, 503, "{r:?}");
        }
    }

    fn config(dev: bool) -> Config {
        let mut c = Config::for_tests("postgres://x", "s", "127.0.0.1:0".parse().unwrap());
        c.dev = dev;
        c
    }

    #[test]
    fn assets_have_types_and_lengths() {
        let r = asset("/");
        assert_eq!(r.status, 200);
        assert!(r
            .head()
            .contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(r
            .head()
            .contains(&format!("Content-Length: {}\r\n", INDEX.len())));
        assert_eq!(
            asset("/app.js").content_type,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(asset("/nope").status, 404);
    }

    #[test]
    fn every_imported_module_is_served() {
        let mut imports = 0;
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let module = line
                    .split(['\'', '"'])
                    .nth(1)
                    .and_then(|m| m.strip_prefix('.'))
                    .unwrap_or_else(|| panic!("{}: not a relative import: {line}", a.path));
                assert_eq!(asset(module).status, 200, "{} imports {module}", a.path);
                imports += 1;
            }
        }
        assert!(imports >= 3, "app.js imports its modules and the SDK");
        assert_eq!(
            &*asset("/sdk/chat.js").body,
            &include_bytes!("../clients/js/index.js")[..],
            "the page gets the SDK of clients/js"
        );
    }

    #[test]
    fn dev_token_needs_the_flag_and_valid_claims() {
        assert_eq!(
            dev_token(&config(false), Some("user_id=1&username=a")).status,
            404
        );
        let dev = config(true);
        assert_eq!(dev_token(&dev, None).status, 400);
        assert_eq!(dev_token(&dev, Some("user_id=0&username=a")).status, 400);
        assert_eq!(dev_token(&dev, Some("user_id=1&username=")).status, 400);
        assert_eq!(
            dev_token(&dev, Some("user_id=1&username=%07bell")).status,
            400
        );
        for bad in [
            "user_id=9007199254740992&username=a",
            "user_id=1&username=a%E2%80%8Bb",
            "user_id=1&username=a%E2%80%AEb",
        ] {
            assert_eq!(dev_token(&dev, Some(bad)).status, 400, "{bad}");
        }
        let ok = dev_token(&dev, Some("user_id=7&username=ana%C3%AFs"));
        assert_eq!(ok.status, 200);
        let token = std::str::from_utf8(&ok.body).unwrap().trim();
        let id = crate::auth::Verifier::hs256(b"s", 0).verify(token).unwrap();
        assert_eq!((id.user_id, id.username.as_str()), (7, "anaïs"));
    }
}
