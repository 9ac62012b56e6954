//! Fault-test harness: the real `chat_server` binary as a child process
//! (its log, on stdout and stderr, captured line by line),
//! real WebSocket clients, databases on the shared test cluster, and
//! private PostgreSQL clusters (via `scripts/pg.sh`) that a test may stop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "faults-test-secret";
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The fault tests stop servers and clusters and measure timings: they run
/// one at a time (the machine may have only two cores).
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------- databases

/// The admin URL of the shared test cluster (set up by `scripts/test.sh`).
pub fn admin_url() -> String {
    std::env::var("CHAT_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .expect("set DATABASE_URL (scripts/test.sh provisions a local PostgreSQL)")
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
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

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// An empty database on the shared cluster (`chat_test_*`: `scripts/test.sh`
/// drops leftovers); [`SharedDb::drop_now`] removes it at the end of a test.
pub struct SharedDb {
    pub url: String,
    name: String,
}

impl SharedDb {
    pub async fn create() -> SharedDb {
        let name = unique("chat_test_faults");
        let admin = pg_connect(&admin_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        SharedDb {
            url: with_database(&admin_url(), &name),
            name,
        }
    }

    pub async fn drop_now(self) {
        let admin = pg_connect(&admin_url()).await;
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// Creates `room` (the server has migrated the schema by then).
pub async fn create_room(db_url: &str, room: &str) {
    let client = chat_server::store::connect(db_url)
        .await
        .expect("connect to the test database");
    assert!(chat_server::store::create_room(&client, room)
        .await
        .expect("create room"));
}

/// id → content of the stored messages among `ids`.
pub async fn stored_by_id(db_url: &str, ids: &[i64]) -> HashMap<i64, String> {
    let client = pg_connect(db_url).await;
    let rows = client
        .query(
            "SELECT id, content FROM messages WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .expect("query messages");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// content → number of stored rows, for the given contents.
pub async fn stored_count_by_content(db_url: &str, contents: &[String]) -> HashMap<String, i64> {
    let client = pg_connect(db_url).await;
    let rows = client
        .query(
            "SELECT content, count(*) FROM messages WHERE content = ANY($1) GROUP BY content",
            &[&contents],
        )
        .await
        .expect("query messages");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Checks that every message in `seen` is stored with the same content.
pub async fn assert_all_stored(db_url: &str, seen: &[Msg], what: &str) {
    let ids: Vec<i64> = seen.iter().map(|m| m.id).collect();
    let stored = stored_by_id(db_url, &ids).await;
    let mut missing = Vec::new();
    let mut differ = Vec::new();
    for m in seen {
        match stored.get(&m.id) {
            None => missing.push(m.id),
            Some(c) if *c != m.content => differ.push((m.id, m.content.clone(), c.clone())),
            Some(_) => {}
        }
    }
    assert!(
        missing.is_empty() && differ.is_empty(),
        "{what}: {} of {} seen messages not stored (first: {:?}); {} stored with other content (first: {:?})",
        missing.len(),
        seen.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        differ.len(),
        differ.iter().take(5).collect::<Vec<_>>()
    );
}

// ------------------------------------------------------------ private cluster

/// A private PostgreSQL cluster (its own dir and port, started with
/// `scripts/pg.sh`) that a test may stop and start. Dropping it stops the
/// cluster and deletes its directory.
pub struct PrivatePg {
    dir: PathBuf,
    port: u16,
    pub url: String,
}

impl PrivatePg {
    /// Creates and starts a fresh cluster with a `chat` database.
    pub async fn create() -> PrivatePg {
        // Under the system temp dir: as root the cluster runs as `postgres`,
        // which may not be able to reach the checkout (e.g. under /root).
        let dir = std::env::temp_dir()
            .join("chat-faults-pg")
            .join(unique("pg"));
        std::fs::create_dir_all(dir.parent().unwrap()).expect("create the cluster's parent dir");
        let mut pg = PrivatePg {
            dir,
            port: free_port(),
            url: String::new(),
        };
        pg.url = pg.run("start").await.trim().to_owned();
        assert!(
            pg.url.starts_with("postgresql://"),
            "pg.sh start printed {:?}",
            pg.url
        );
        pg
    }

    pub async fn start(&self) {
        self.run("start").await;
    }

    pub async fn stop(&self) {
        self.run("stop").await;
    }

    fn command(&self, action: &str) -> Command {
        let mut c = Command::new(format!("{REPO}/scripts/pg.sh"));
        c.arg(action)
            .env("CHAT_PG_DIR", &self.dir)
            .env("CHAT_PG_PORT", self.port.to_string())
            .stdin(Stdio::null());
        c
    }

    async fn run(&self, action: &str) -> String {
        let mut c = tokio::process::Command::from(self.command(action));
        c.kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(120), c.output())
            .await
            .unwrap_or_else(|_| panic!("pg.sh {action} took more than 120 s"))
            .expect("run scripts/pg.sh");
        assert!(
            out.status.success(),
            "pg.sh {action} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self
            .command("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

// ------------------------------------------------------------- server process

/// The real server binary, running as a child process. Dropping it kills it
/// (and shows its log when the test failed).
pub struct ServerProcess {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    pub port: u16,
    status: Option<ExitStatus>,
}

impl ServerProcess {
    /// Starts the server on `db_url` (two shards, port 0); does not wait.
    pub fn spawn(db_url: &str, extra_env: &[(&str, &str)]) -> ServerProcess {
        Self::spawn_with_nofile(db_url, extra_env, None)
    }

    /// [`spawn`](Self::spawn), with the child's open-files limit (soft and
    /// hard) set to `nofile` when given.
    pub fn spawn_with_nofile(
        db_url: &str,
        extra_env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> ServerProcess {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chat_server"));
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit (async-signal-safe) runs in the child
            // between fork and exec.
            unsafe {
                c.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, n, n));
            }
        }
        c.env("DATABASE_URL", db_url)
            .env("JWT_SECRET", SECRET)
            .env("WS_BIND_ADDR", "127.0.0.1:0")
            .env("CHAT_CORES", "2")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // The bursts here are about durability, not flood control.
            .env("CHAT_RATE_LIMIT", "1000000")
            .env("CHAT_RATE_BURST", "1000000")
            .env("CHAT_USER_MESSAGE_RATE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn chat_server");
        // tracing-subscriber's fmt writes to stdout by default: read both.
        let log = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().expect("piped stdout"), log.clone());
        collect_lines(child.stderr.take().expect("piped stderr"), log.clone());
        ServerProcess {
            child,
            log,
            port: 0,
            status: None,
        }
    }

    /// Starts the server and waits for its ready line.
    pub async fn start(db_url: &str, extra_env: &[(&str, &str)]) -> ServerProcess {
        let mut s = Self::spawn(db_url, extra_env);
        s.wait_ready(Duration::from_secs(30)).await;
        s
    }

    /// Waits for `chat server ready addr=127.0.0.1:PORT`; returns the port.
    pub async fn wait_ready(&mut self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(port) = self.log.lock().unwrap().iter().find_map(|l| ready_port(l)) {
                self.port = port;
                return port;
            }
            if let Some(status) = self.try_status() {
                panic!(
                    "server exited ({status}) before it was ready:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server not ready within {timeout:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends a signal by name (`TERM`, `INT`, ...).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -s {name} {} failed", self.pid());
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the server");
    }

    /// Waits for the process to exit (fails the test after `timeout`).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "server still running {timeout:?} after the signal:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Fails the test if the server logged a panic.
    pub fn assert_no_panic(&self) {
        assert!(
            !self.log_contains("panicked"),
            "the server panicked:\n{}",
            self.log_text()
        );
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            // Give the log thread a moment to read the last lines.
            std::thread::sleep(Duration::from_millis(50));
            eprintln!("---- server log ----\n{}\n--------", self.log_text());
        }
    }
}

/// Appends each line read from `from` (ANSI escapes removed) to `log`.
fn collect_lines(from: impl std::io::Read + Send + 'static, log: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            log.lock().unwrap().push(strip_ansi(&line));
        }
    });
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn ready_port(line: &str) -> Option<u16> {
    if !line.contains("chat server ready") {
        return None;
    }
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
}

// ---------------------------------------------------------------- clients

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type Sink = SplitSink<Ws, Message>;

pub fn token(user_id: i64, username: &str) -> String {
    chat_server::auth::sign_hs256(SECRET.as_bytes(), user_id, username, 3600)
}

/// A connected WebSocket client and the shard that owns it.
pub struct Client {
    pub ws: Ws,
    pub shard: usize,
}

impl Client {
    pub async fn connect(server: &ServerProcess, user_id: i64, username: &str) -> Client {
        let url = format!("{}?token={}", server.url(), token(user_id, username));
        let (ws, response) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .expect("handshake timed out")
        .expect("handshake");
        let shard = response
            .headers()
            .get("x-chat-shard")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("X-Chat-Shard header");
        Client { ws, shard }
    }

    /// Reconnects until the connection lands on `shard`.
    pub async fn connect_on_shard(
        server: &ServerProcess,
        user_id: i64,
        username: &str,
        shard: usize,
    ) -> Client {
        for _ in 0..200 {
            let mut c = Client::connect(server, user_id, username).await;
            if c.shard == shard {
                return c;
            }
            let _ = c.ws.close(None).await;
        }
        panic!("no connection landed on shard {shard} in 200 tries");
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    /// Next text frame as JSON (10 s at most), skipping `presence`,
    /// `typing` and `member` notices, which other members' comings and goings cause.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection closed")
                .expect("websocket error");
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    let notice = ["presence", "presence_batch", "typing", "member"];
                    if !notice.iter().any(|n| v["type"] == *n) {
                        return v;
                    }
                }
                Message::Close(c) => panic!("closed by server: {c:?}"),
                _ => continue,
            }
        }
    }

    pub async fn join(&mut self, room: &str) {
        self.send(json!({"type": "join", "room": room})).await;
        let ack = self.recv().await;
        assert_eq!(ack["type"], "join_ack", "unexpected frame: {ack}");
    }

    /// Splits into a sink and a background reader recording every frame.
    pub fn split(self) -> (Sink, Reader) {
        let (sink, stream) = self.ws.split();
        (sink, Reader::spawn(stream))
    }
}

/// One `message` frame: id and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub id: i64,
    pub content: String,
}

/// Everything a reader saw.
#[derive(Debug, Default, Clone)]
pub struct Log {
    pub messages: Vec<Msg>,
    pub errors: Vec<String>,
    /// When each error frame arrived.
    pub error_times: Vec<Instant>,
    /// Other text frames (e.g. history).
    pub others: Vec<Value>,
    /// For each of `others`, how many messages had arrived before it.
    pub others_after: Vec<usize>,
    /// The close frame, if one came: code and reason.
    pub close: Option<(u16, String)>,
    /// How the stream ended (`None`: still open).
    pub ended: Option<String>,
}

/// A task reading one client's frames into a shared [`Log`].
pub struct Reader {
    log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

impl Reader {
    fn spawn(mut stream: SplitStream<Ws>) -> Reader {
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let end = loop {
                match stream.next().await {
                    None => break "stream ended".to_owned(),
                    Some(Err(e)) => break format!("error: {e}"),
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                        let mut l = shared.lock().unwrap();
                        match v["type"].as_str() {
                            Some("message") => l.messages.push(Msg {
                                id: v["data"]["id"].as_i64().expect("message id"),
                                content: v["data"]["content"]
                                    .as_str()
                                    .expect("message content")
                                    .to_owned(),
                            }),
                            Some("error") => {
                                let e = v["data"]["message"].as_str().unwrap_or_default();
                                l.errors.push(e.to_owned());
                                l.error_times.push(Instant::now());
                            }
                            Some("presence" | "presence_batch" | "typing" | "member") => {}
                            _ => {
                                let seen = l.messages.len();
                                l.others.push(v);
                                l.others_after.push(seen);
                            }
                        }
                    }
                    Some(Ok(Message::Close(c))) => {
                        shared.lock().unwrap().close = Some(
                            c.map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new())),
                        );
                    }
                    Some(Ok(_)) => {}
                }
            };
            shared.lock().unwrap().ended = Some(end);
        });
        Reader { log, task }
    }

    /// A copy of what was seen so far.
    pub fn snapshot(&self) -> Log {
        self.log.lock().unwrap().clone()
    }

    pub fn message_count(&self) -> usize {
        self.log.lock().unwrap().messages.len()
    }

    /// Waits until `cond` holds (fails the test after `timeout`).
    pub async fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&Log) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let l = self.log.lock().unwrap();
                if cond(&l) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {what}; seen {} messages, errors {:?}, others {:?}, close {:?}, ended {:?}",
                    l.messages.len(),
                    l.errors.iter().take(5).collect::<Vec<_>>(),
                    l.others.iter().take(5).collect::<Vec<_>>(),
                    l.close,
                    l.ended
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for the stream to end; returns the log.
    pub async fn finish(self, timeout: Duration) -> Log {
        self.wait_for("the connection to end", timeout, |l| l.ended.is_some())
            .await;
        let log = self.snapshot();
        let _ = self.task.await;
        log
    }
}

/// Sends one room message.
/// Sends `count` messages `"{prefix}-{i}"` to `room` as fast as the socket
/// takes them, in a task; it yields how many were written, and the sink.
pub fn spawn_burst(
    mut sink: Sink,
    room: &'static str,
    prefix: &'static str,
    count: usize,
) -> tokio::task::JoinHandle<(usize, Sink)> {
    tokio::spawn(async move {
        let mut written = 0;
        for i in 0..count {
            if send_message(&mut sink, room, &format!("{prefix}-{i}"))
                .await
                .is_err()
            {
                break;
            }
            written += 1;
        }
        (written, sink)
    })
}

pub async fn send_message(sink: &mut Sink, room: &str, content: &str) -> Result<(), String> {
    sink.send(Message::text(
        json!({"type": "message", "room": room, "content": content}).to_string(),
    ))
    .await
    .map_err(|e| e.to_string())
}

/// Asserts ids strictly increase.
pub fn assert_increasing(messages: &[Msg], who: &str) {
    for w in messages.windows(2) {
        assert!(
            w[0].id < w[1].id,
            "{who}: ids out of order: {} then {}",
            w[0].id,
            w[1].id
        );
    }
}
