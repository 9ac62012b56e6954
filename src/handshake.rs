//! The HTTP side of a connection: reading the upgrade request, finding the
//! token, and writing the `101` (or the refusal).
//!
//! The server writes its own `101 Switching Protocols` so that the shard can
//! verify the token, upsert the user and register the connection for
//! delivery *before* the client can see the WebSocket open.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Most headers accepted in an upgrade request.
const MAX_HEADERS: usize = 48;

/// A parsed WebSocket upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The path, without the query string.
    pub path: String,
    /// `Sec-WebSocket-Key`.
    pub key: String,
    /// The bearer token, from `Authorization: Bearer` or `?token=`.
    pub token: Option<String>,
    /// The `Origin` header, sent by browsers.
    pub origin: Option<String>,
}

/// A health probe, answered over plain HTTP on the WebSocket port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `GET /healthz`: the process is alive.
    Health,
    /// `GET /readyz`: the database answers and the writers are running.
    Ready,
}

/// A plain HTTP `GET` that is not a WebSocket upgrade (the web page, its
/// assets, `/metrics`, `/dev/token`): the shard answers it through
/// [`crate::web`] and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainRequest {
    /// The path, without the query string.
    pub path: String,
    /// The query string, without `?`.
    pub query: Option<String>,
    /// The `Authorization` header (checked by `/metrics` when
    /// `--metrics-token` is set).
    pub authorization: Option<String>,
}

/// Why a request is not a WebSocket upgrade to authenticate: a refusal, or
/// a request the shard answers directly (probe, page, metrics).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// A health probe (not an error: answered with its own response).
    #[error("health probe")]
    Probe(Probe),
    /// A plain `GET` for a page, an asset, the metrics or a dev token (not
    /// an error: answered with its own response).
    #[error("plain HTTP request")]
    Plain(PlainRequest),
    /// The socket failed or closed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The client did not finish its request in time.
    #[error("handshake timed out")]
    Timeout,
    /// The request headers exceed the configured size.
    #[error("request headers too large")]
    TooLarge,
    /// Not parseable HTTP, or not a WebSocket upgrade.
    #[error("{0}")]
    BadRequest(&'static str),
    /// A path other than `/` or `/ws`.
    #[error("not found")]
    NotFound,
}

impl HandshakeError {
    /// The refusal this error answers with, if the socket can still take
    /// one (an I/O error cannot; a probe or a plain `GET` is no refusal).
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            HandshakeError::Io(_) | HandshakeError::Probe(_) | HandshakeError::Plain(_) => None,
            HandshakeError::Timeout => Some(Refusal::Timeout),
            HandshakeError::TooLarge => Some(Refusal::TooLarge),
            HandshakeError::BadRequest(_) => Some(Refusal::BadRequest),
            HandshakeError::NotFound => Some(Refusal::NotFound),
        }
    }
}

/// Why a handshake was refused. One kind decides the HTTP status, the
/// default body and the `reason` label of `chat_handshakes_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed HTTP, or not a WebSocket upgrade (400).
    BadRequest,
    /// An upgrade to a path other than `/` or `/ws` (404).
    NotFound,
    /// The request headers were too large (431).
    TooLarge,
    /// The request was not complete in time (408).
    Timeout,
    /// The server is shutting down (503).
    ShuttingDown,
    /// The shard holds `--max-connections-per-shard` already (503).
    ServerFull,
    /// A browser origin not in `--allowed-origins` (403).
    Origin,
    /// No token (401).
    MissingToken,
    /// A token over `--max-token-bytes` (401).
    TokenTooLarge,
    /// A token that failed verification: signature, algorithm, claims (401).
    InvalidToken,
    /// An expired token (401).
    ExpiredToken,
    /// The username belongs to another user id (409).
    UsernameTaken,
    /// The user holds `--max-connections-per-user` connections already (429).
    TooManyConnections,
    /// The database did not answer (503).
    Database,
    /// The process holds `--max-pending-handshakes` already: answered at
    /// once, unread (503).
    PendingTotal,
    /// The client's address holds `--max-pending-handshakes-per-ip`
    /// already: answered at once, unread (429).
    PendingPerIp,
    /// Issue 15: an operator blocked the user (`POST
    /// /v1/users/{id}/disconnect` with `block_seconds`) and the block
    /// holds (403).
    Blocked,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 17] = [
        Refusal::BadRequest,
        Refusal::NotFound,
        Refusal::TooLarge,
        Refusal::Timeout,
        Refusal::ShuttingDown,
        Refusal::ServerFull,
        Refusal::Origin,
        Refusal::MissingToken,
        Refusal::TokenTooLarge,
        Refusal::InvalidToken,
        Refusal::ExpiredToken,
        Refusal::UsernameTaken,
        Refusal::TooManyConnections,
        Refusal::Database,
        Refusal::PendingTotal,
        Refusal::PendingPerIp,
        Refusal::Blocked,
    ];

    /// The metric's label value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::NotFound => "not_found",
            Refusal::TooLarge => "too_large",
            Refusal::Timeout => "timeout",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::ServerFull => "server_full",
            Refusal::Origin => "origin",
            Refusal::MissingToken => "missing_token",
            Refusal::TokenTooLarge => "token_too_large",
            Refusal::InvalidToken => "invalid_token",
            Refusal::ExpiredToken => "expired_token",
            Refusal::UsernameTaken => "username_taken",
            Refusal::TooManyConnections => "user_connections",
            Refusal::Database => "database",
            Refusal::PendingTotal => "pending_total",
            Refusal::PendingPerIp => "pending_per_ip",
            Refusal::Blocked => "blocked",
        }
    }

    /// The HTTP status answered.
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::MissingToken
            | Refusal::TokenTooLarge
            | Refusal::InvalidToken
            | Refusal::ExpiredToken => 401,
            Refusal::Origin | Refusal::Blocked => 403,
            Refusal::NotFound => 404,
            Refusal::Timeout => 408,
            Refusal::UsernameTaken => 409,
            Refusal::TooManyConnections | Refusal::PendingPerIp => 429,
            Refusal::TooLarge => 431,
            Refusal::ShuttingDown
            | Refusal::ServerFull
            | Refusal::Database
            | Refusal::PendingTotal => 503,
        }
    }

    /// The body when the refusal has no more specific text (a parse error
    /// or a token error says what exactly was wrong instead).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad request",
            Refusal::NotFound => "not found",
            Refusal::TooLarge => "request headers too large",
            Refusal::Timeout => "handshake timed out",
            Refusal::ShuttingDown => "server shutting down",
            Refusal::ServerFull => "server full",
            Refusal::Origin => "origin not allowed",
            Refusal::MissingToken => "missing token",
            Refusal::TokenTooLarge => "token too large",
            Refusal::InvalidToken => "invalid token",
            Refusal::ExpiredToken => "token expired",
            Refusal::UsernameTaken => "username already taken by another user",
            Refusal::TooManyConnections => "too many connections for this user",
            Refusal::Database => "database unavailable",
            Refusal::PendingTotal => "server busy: too many pending handshakes",
            Refusal::PendingPerIp => "too many pending handshakes from this address",
            Refusal::Blocked => "user blocked",
        }
    }
}

/// Reads one HTTP request (at most `max_bytes` of headers, within
/// `timeout`) and checks that it is a WebSocket upgrade. Returns it with
/// any bytes the client sent after the headers.
pub async fn read_upgrade<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_bytes: usize,
    timeout: Duration,
) -> Result<(UpgradeRequest, Vec<u8>), HandshakeError> {
    tokio::time::timeout(timeout, read_inner(stream, max_bytes))
        .await
        .map_err(|_| HandshakeError::Timeout)?
}

async fn read_inner<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_bytes: usize,
) -> Result<(UpgradeRequest, Vec<u8>), HandshakeError> {
    let mut buf = Vec::with_capacity(1024.min(max_bytes));
    loop {
        if buf.len() >= max_bytes {
            return Err(HandshakeError::TooLarge);
        }
        if buf.capacity() == buf.len() {
            buf.reserve((buf.len()).min(max_bytes - buf.len()).max(512));
        }
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if let Some((req, consumed)) = parse(&buf)? {
            let rest = buf.split_off(consumed);
            return Ok((req, rest));
        }
    }
}

/// Parses a complete request from `buf`; `None` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(UpgradeRequest, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooLarge),
        Err(_) => return Err(HandshakeError::BadRequest("malformed HTTP request")),
    };
    if req.method != Some("GET") {
        return Err(HandshakeError::BadRequest("expected GET"));
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |value: Option<&str>, token: &str| {
        value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let wants_upgrade = has_token(header("upgrade"), "websocket");
    match path {
        "/healthz" => return Err(HandshakeError::Probe(Probe::Health)),
        "/readyz" => return Err(HandshakeError::Probe(Probe::Ready)),
        "/" | "/ws" if wants_upgrade => {}
        // `/ws` is only ever a WebSocket endpoint.
        "/ws" => return Err(HandshakeError::BadRequest("expected a WebSocket upgrade")),
        _ if wants_upgrade => return Err(HandshakeError::NotFound),
        _ => {
            return Err(HandshakeError::Plain(PlainRequest {
                path: path.to_owned(),
                query: query.map(str::to_owned),
                authorization: header("authorization").map(str::to_owned),
            }))
        }
    }
    if !wants_upgrade || !has_token(header("connection"), "upgrade") {
        return Err(HandshakeError::BadRequest("expected a WebSocket upgrade"));
    }
    if header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(HandshakeError::BadRequest("unsupported WebSocket version"));
    }
    let key = header("sec-websocket-key")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(HandshakeError::BadRequest("missing Sec-WebSocket-Key"))?
        .to_owned();
    let bearer = header("authorization").and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    });
    let token = bearer.or_else(|| {
        form_urlencoded::parse(query?.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    Ok(Some((
        UpgradeRequest {
            path: path.to_owned(),
            key,
            token: token.filter(|t| !t.is_empty()),
            origin: header("origin").map(str::to_owned),
        },
        consumed,
    )))
}

/// The `101` that opens the WebSocket, naming the shard that owns it.
pub fn switching_protocols(key: &str, shard: usize) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\
         X-Chat-Shard: {shard}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
}

/// A plain-text response (a refusal, or a probe's answer); the connection
/// closes after it.
pub fn refusal(status: u16, reason: &str) -> String {
    let text = reason_phrase(status);
    let body = format!("{reason}\n");
    format!(
        "HTTP/1.1 {status} {text}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The reason phrase of the status codes this server sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Writes a refusal and shuts the socket's write side, ignoring errors (the
/// client may be gone already).
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, status: u16, reason: &str) {
    let _ = stream.write_all(refusal(status, reason).as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, extra: &str) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    }

    #[test]
    fn finds_token_in_header_or_query() {
        let (r, n) = parse(request("/?token=abc%2Ed", "").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(r.token.as_deref(), Some("abc.d"));
        assert_eq!(n, request("/?token=abc%2Ed", "").len());
        let (r, _) = parse(request("/ws", "Authorization: Bearer tok\r\n").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!((r.path.as_str(), r.token.as_deref()), ("/ws", Some("tok")));
        let (r, _) = parse(request("/", "").as_bytes()).unwrap().unwrap();
        assert_eq!(r.token, None);
    }

    #[test]
    fn partial_then_complete() {
        let full = request("/", "");
        assert!(parse(&full.as_bytes()[..20]).unwrap().is_none());
        assert!(parse(full.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn refuses_non_upgrades() {
        assert!(matches!(
            parse(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HandshakeError::BadRequest(_))
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HandshakeError::BadRequest(_))
        ));
        assert!(matches!(
            parse(request("/other", "").as_bytes()),
            Err(HandshakeError::NotFound)
        ));
        assert!(matches!(
            parse(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HandshakeError::Probe(Probe::Health))
        ));
        assert!(matches!(
            parse(b"GET /readyz?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HandshakeError::Probe(Probe::Ready))
        ));
        assert!(matches!(
            parse(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(HandshakeError::BadRequest(_))
        ));
    }

    #[test]
    fn plain_gets_are_answered_by_the_web_side() {
        match parse(b"GET /dev/token?user_id=1&username=a HTTP/1.1\r\nHost: x\r\n\r\n") {
            Err(HandshakeError::Plain(p)) => {
                assert_eq!(p.path, "/dev/token");
                assert_eq!(p.query.as_deref(), Some("user_id=1&username=a"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HandshakeError::Plain(p)) if p.path == "/" && p.query.is_none()
        ));
        // The same path with an Upgrade header is still a WebSocket upgrade.
        assert!(parse(request("/", "").as_bytes()).unwrap().is_some());
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        let r = switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", 1);
        assert!(r.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(r.contains("X-Chat-Shard: 1\r\n"));
        assert!(refusal(401, "token expired").ends_with("token expired\n"));
    }
}

#[cfg(test)]
mod properties {
    //! Property tests over the request parser: arbitrary bytes never panic,
    //! and a valid upgrade is recognised whatever the header order and case.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn http_like_input_never_panics(s in "GET [ -~]{0,40} HTTP/1\\.[01]\r\n([A-Za-z-]{1,12}: [ -~]{0,30}\r\n){0,8}\r\n") {
            let _ = parse(s.as_bytes());
        }

        #[test]
        fn valid_upgrades_are_recognised(
            token in "[A-Za-z0-9_.-]{1,200}",
            upper in any::<bool>(),
            reverse in any::<bool>(),
            in_header in any::<bool>(),
        ) {
            let name = |n: &str| if upper { n.to_uppercase() } else { n.to_lowercase() };
            let mut headers = vec![
                format!("{}: websocket", name("Upgrade")),
                format!("{}: Upgrade", name("Connection")),
                format!("{}: 13", name("Sec-WebSocket-Version")),
                format!("{}: dGhlIHNhbXBsZSBub25jZQ==", name("Sec-WebSocket-Key")),
            ];
            if in_header {
                headers.push(format!("{}: Bearer {token}", name("Authorization")));
            }
            if reverse {
                headers.reverse();
            }
            let target = if in_header { "/".to_owned() } else { format!("/ws?x=1&token={token}") };
            let req = format!("GET {target} HTTP/1.1\r\nHost: h\r\n{}\r\n\r\n", headers.join("\r\n"));
            let (r, n) = parse(req.as_bytes()).unwrap().unwrap();
            prop_assert_eq!(n, req.len());
            prop_assert_eq!(r.token.as_deref(), Some(token.as_str()));
        }
    }
}
