//! Test harness: a real server (two shards) on port 0 against a freshly
//! created PostgreSQL database, and real WebSocket clients.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chat_server::{Config, ServerHandle};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame it expects.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);
pub const SECRET: &str = "integration-test-secret";

static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The admin URL of the test cluster (set up by `scripts/test.sh`).
pub fn admin_url() -> String {
    std::env::var("CHAT_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .expect("set DATABASE_URL (scripts/test.sh provisions a local PostgreSQL)")
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_url();
    let name = format!(
        "chat_test_{}_{}_{}",
        std::process::id(),
        DB_COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the admin database");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    with_database(&admin, &name)
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = main.find("://").map_or(0, |i| i + 3);
    let host_part = match main[scheme_end..].find('/') {
        Some(i) => &main[..scheme_end + i],
        None => main,
    };
    format!("{host_part}/{name}{query}")
}

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    pub db_url: String,
    pub config: Config,
    handle: Option<ServerHandle>,
}

impl TestServer {
    /// Two shards, one writer, defaults otherwise.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Like [`start`](Self::start), with settings changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        // Server logs with RUST_LOG=chat_server=debug (shown for failing tests).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let db_url = fresh_database().await;
        let mut config = Config::for_tests(&db_url, SECRET, "127.0.0.1:0".parse().unwrap());
        config.cores = Some(2);
        config.writers = 1;
        tweak(&mut config);
        let handle = spawn(config.clone()).await;
        config.bind = handle.local_addr();
        TestServer {
            db_url,
            config,
            handle: Some(handle),
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.config.bind
    }

    #[allow(dead_code)]
    /// Issue 15: where the server API listens (`--api-bind`; see
    /// `http::with_api`). A restart binds a new port.
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.handle
            .as_ref()
            .expect("server running")
            .api_addr()
            .expect("the server API is on (http::with_api)")
    }

    /// Graceful stop, then a new server on the same port and database.
    pub async fn restart(&mut self) {
        self.stop().await;
        let handle = spawn(self.config.clone()).await;
        self.handle = Some(handle);
    }

    /// What SIGHUP does: re-read the TLS certificate and the key files.
    pub fn reload(&self) -> Result<(), String> {
        self.handle
            .as_ref()
            .expect("server running")
            .reload()
            .map_err(|e| e.to_string())
    }

    /// Graceful stop.
    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            tokio::task::spawn_blocking(move || h.shutdown())
                .await
                .unwrap();
        }
    }

    pub fn token(&self, user_id: i64, username: &str) -> String {
        chat_server::auth::sign_hs256(SECRET.as_bytes(), user_id, username, 3600)
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr())
    }

    /// Connects as `user_id` with the token in the query string.
    pub async fn connect(&self, user_id: i64, username: &str) -> Client {
        let url = format!("{}?token={}", self.url(), self.token(user_id, username));
        Client::connect_url(&url, None).await.expect("handshake")
    }

    /// Connects until the connection lands on `shard` (the kernel spreads
    /// connections over the shards' sockets by hash, so this takes a few tries).
    pub async fn connect_on_shard(&self, user_id: i64, username: &str, shard: usize) -> Client {
        for _ in 0..200 {
            let c = self.connect(user_id, username).await;
            if c.shard == shard {
                return c;
            }
            c.close().await;
        }
        panic!("no connection landed on shard {shard} in 200 tries");
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.db_url, tokio_postgres::NoTls)
            .await
            .expect("connect to test database");
        tokio::spawn(conn);
        client
    }

    /// The single `count(*)` that `sql` selects, on the test database.
    pub async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    pub async fn create_room(&self, name: &str) {
        let db = self.db().await;
        assert!(chat_server::store::create_room(&db, name).await.unwrap());
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            // Not awaited: the test is over; threads end with the process.
            std::thread::spawn(move || h.shutdown());
        }
    }
}

async fn spawn(config: Config) -> ServerHandle {
    tokio::task::spawn_blocking(move || {
        chat_server::server::start_with_db_wait(config, Duration::from_secs(10))
    })
    .await
    .unwrap()
    .expect("server starts")
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client.
#[derive(Debug)]
pub struct Client {
    pub ws: Ws,
    /// The shard that owns this connection (`X-Chat-Shard`).
    pub shard: usize,
}

/// A refused handshake: HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl Client {
    /// Connects to `url`, optionally with an `Authorization` header.
    pub async fn connect_url(url: &str, authorization: Option<&str>) -> Result<Client, Refused> {
        let mut request = url.into_client_request().unwrap();
        if let Some(a) = authorization {
            request
                .headers_mut()
                .insert("Authorization", HeaderValue::from_str(a).unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, response)) => {
                let shard = response
                    .headers()
                    .get("x-chat-shard")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .expect("X-Chat-Shard header");
                Ok(Client { ws, shard })
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Err(e) => panic!("handshake failed unexpectedly: {e}"),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// Next text frame as JSON, skipping ephemeral notices (`presence`,
    /// `typing`, `member`), which arrive whenever other members come and go; fails
    /// the test after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Value {
        loop {
            let v = self.recv_any().await;
            if !is_notice(&v) {
                return v;
            }
        }
    }

    /// Sends `request` with a `ref` and returns the reply with that ref
    /// (every other frame is skipped).
    pub async fn ask(&mut self, mut request: Value) -> Value {
        request["ref"] = json!("q");
        self.send(request).await;
        loop {
            let v = self.recv_any().await;
            if v["ref"] == "q" {
                return v;
            }
        }
    }

    /// The error text of the reply to `request` (panics on any other reply).
    pub async fn refusal(&mut self, request: Value) -> String {
        let v = self.ask(request.clone()).await;
        assert_eq!(v["type"], "error", "{request} → {v}");
        v["data"]["message"].as_str().unwrap().to_owned()
    }

    /// Asserts `request` is answered `<kind>` with its `room` and `user`.
    pub async fn acked(&mut self, request: Value, kind: &str) -> Value {
        let v = self.ask(request.clone()).await;
        assert_eq!(v["type"], kind, "{request} → {v}");
        assert_eq!(v["data"]["room"], request["room"], "{v}");
        assert_eq!(v["data"]["user"], request["user"], "{v}");
        v
    }

    /// Next text frame as JSON, notices included.
    pub async fn recv_any(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection closed")
                .expect("websocket error");
            match msg {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Close(c) => panic!("closed by server: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Next frame, asserting its type.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "unexpected frame: {v}");
        v
    }

    /// Joins `room`, asserting the ack.
    pub async fn join(&mut self, room: &str) {
        self.send(json!({"type": "join", "room": room})).await;
        let ack = self.recv_type("join_ack").await;
        assert_eq!(ack["data"]["room"], room, "{ack}");
        assert_eq!(ack["data"]["status"], "ok", "{ack}");
    }

    /// Asserts nothing but notices (`presence`, `typing`) arrives for `wait`.
    pub async fn expect_nothing(&mut self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, self.ws.next()).await {
            if let Message::Text(t) = &m {
                if serde_json::from_str::<Value>(t.as_str()).is_ok_and(|v| is_notice(&v)) {
                    continue;
                }
            }
            panic!("expected no frame, got {m:?}");
        }
    }

    /// Asserts no frame at all (notices included) arrives for `wait`, but
    /// `member` events (which other members' joins and leaves cause).
    pub async fn expect_silence(&mut self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, self.ws.next()).await {
            if let Message::Text(t) = &m {
                if serde_json::from_str::<Value>(t.as_str()).is_ok_and(|v| v["type"] == "member") {
                    continue;
                }
            }
            panic!("expected no frame, got {m:?}");
        }
    }

    /// Waits for the server to close the connection; its close code (`None`
    /// when the stream ended without a close frame). Fails after `within`.
    pub async fn close_code(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection still open after {within:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// True for the ephemeral frames other members' comings and goings cause
/// (`member` events too: `joined`/`left` arrive whenever others join and leave).
pub fn is_notice(v: &Value) -> bool {
    v["type"] == "presence"
        || v["type"] == "presence_batch"
        || v["type"] == "typing"
        || v["type"] == "member"
}

impl TestServer {
    /// Where `/metrics` is served on its own (`metrics_bind`), if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.handle.as_ref().and_then(|h| h.metrics_addr())
    }
}
