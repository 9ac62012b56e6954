//! Replays the hostile-client findings of issue 13 against a running
//! `chat_server` and reports what the server and a legitimate user see.
//!
//! * `one-token`: one user opens as many connections as it can with one
//!   token while a second user connects every few hundred ms; prints how
//!   many were accepted and refused (by status) and the second user's
//!   handshake latency.
//! * `replay-burst`: fills a room with large messages (through PostgreSQL),
//!   then many connections each send one `join` with `since: 0` and do not
//!   read; prints the server's RSS before, during and after.
//!
//! Loopback only: the URL must name a 127.0.0.0/8 address. Every run is
//! bounded in connections and time and stops by itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use futures_util::SinkExt;
use jsonwebtoken::{EncodingKey, Header};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "Reproduce issue 13's hostile-client cases against a local chat_server")]
struct Cli {
    /// WebSocket URL of the server (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    url: String,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, env = "JWT_SECRET")]
    secret: String,
    /// Server process id, for RSS readings from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(subcommand)]
    case: Case,
}

#[derive(Subcommand)]
enum Case {
    /// One token opens up to --connections sockets; a second user probes.
    OneToken {
        /// Connections attempted with the one token.
        #[arg(long, default_value_t = 19_000)]
        connections: u32,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        /// The hostile user's id.
        #[arg(long, default_value_t = 900_001)]
        user: i64,
        /// The legitimate user's id.
        #[arg(long, default_value_t = 900_002)]
        probe_user: i64,
        /// Interval between the legitimate user's handshakes, in ms.
        #[arg(long, default_value_t = 100)]
        probe_every_ms: u64,
        /// How long the opened connections are held, in seconds.
        #[arg(long, default_value_t = 10)]
        hold_secs: u64,
    },
    /// Large replays requested by connections that do not read.
    ReplayBurst {
        /// PostgreSQL URL of the server's database (to fill the room fast).
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Room to fill and replay.
        #[arg(long, default_value = "abuse-replay")]
        room: String,
        /// Messages in the room.
        #[arg(long, default_value_t = 1000)]
        messages: i64,
        /// Characters per message.
        #[arg(long, default_value_t = 16_000)]
        size: usize,
        /// Connections that each request one replay.
        #[arg(long, default_value_t = 250)]
        requests: u32,
        /// How long the connections stay open without reading, in seconds.
        #[arg(long, default_value_t = 10)]
        hold_secs: u64,
        /// How long to watch RSS after they closed, in seconds.
        #[arg(long, default_value_t = 10)]
        after_secs: u64,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let host = cli
        .url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split([':', '/']).next())
        .unwrap_or("");
    if !host.starts_with("127.") && host != "localhost" {
        bail!("--url must be a loopback address, got {host:?}");
    }
    raise_nofile();
    let tokens = Tokens::new(&cli.secret);
    match cli.case {
        Case::OneToken {
            connections,
            concurrency,
            user,
            probe_user,
            probe_every_ms,
            hold_secs,
        } => {
            let params = OneToken {
                connections,
                concurrency,
                user,
                probe_user,
                probe_every: Duration::from_millis(probe_every_ms),
                hold: Duration::from_secs(hold_secs),
            };
            one_token(&cli.url, &tokens, cli.server_pid, params).await
        }
        Case::ReplayBurst {
            database_url,
            room,
            messages,
            size,
            requests,
            hold_secs,
            after_secs,
        } => {
            let params = Burst {
                room,
                messages,
                size,
                requests,
                hold: Duration::from_secs(hold_secs),
                after: Duration::from_secs(after_secs),
            };
            replay_burst(&cli.url, &database_url, &tokens, cli.server_pid, params).await
        }
    }
}

/// Mints HS256 tokens valid for an hour.
struct Tokens {
    key: EncodingKey,
}

impl Tokens {
    fn new(secret: &str) -> Tokens {
        Tokens {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    fn mint(&self, user: i64) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() + 3600)
            .unwrap_or(0);
        let claims =
            serde_json::json!({"user_id": user, "username": format!("abuse{user}"), "exp": exp});
        jsonwebtoken::encode(&Header::default(), &claims, &self.key).expect("HS256 signing")
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// How one handshake ended.
enum Outcome {
    Open(Box<Ws>),
    Status(u16),
    Failed,
}

async fn handshake(url: &str, token: &str, timeout: Duration) -> Outcome {
    let Ok(request) = format!("{url}?token={token}").into_client_request() else {
        return Outcome::Failed;
    };
    let Some(addr) = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .map(str::to_string)
    else {
        return Outcome::Failed;
    };
    let connect = async move {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(tokio_tungstenite::tungstenite::Error::Io)?;
        tokio_tungstenite::client_async(request, tcp).await
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok((ws, _))) => Outcome::Open(Box::new(ws)),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            Outcome::Status(response.status().as_u16())
        }
        _ => Outcome::Failed,
    }
}

struct OneToken {
    connections: u32,
    concurrency: usize,
    user: i64,
    probe_user: i64,
    probe_every: Duration,
    hold: Duration,
}

async fn one_token(
    url: &str,
    tokens: &Tokens,
    pid: Option<u32>,
    p: OneToken,
) -> anyhow::Result<()> {
    let rss_before = rss_kib(pid);
    let hostile = Arc::new(tokens.mint(p.user));
    let probe_token = tokens.mint(p.probe_user);
    let next = Arc::new(AtomicU64::new(0));
    let stop_probe = Arc::new(tokio::sync::Notify::new());

    // The legitimate user: one handshake every probe_every, timed.
    let probe = {
        let url = url.to_string();
        let stop = stop_probe.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u32;
            loop {
                let started = Instant::now();
                match handshake(&url, &probe_token, Duration::from_secs(10)).await {
                    Outcome::Open(mut ws) => {
                        latencies.push(started.elapsed());
                        let _ = ws.send(Message::Close(None)).await;
                    }
                    _ => failures += 1,
                }
                tokio::select! {
                    () = stop.notified() => break,
                    () = tokio::time::sleep(p.probe_every) => {}
                }
            }
            (latencies, failures)
        })
    };

    // The hostile user: `concurrency` tasks opening connections until the
    // budget is spent; open sockets are kept (not read) until the hold ends.
    let started = Instant::now();
    let mut openers = Vec::new();
    for _ in 0..p.concurrency {
        let url = url.to_string();
        let token = hostile.clone();
        let next = next.clone();
        let total = u64::from(p.connections);
        openers.push(tokio::spawn(async move {
            let mut open = Vec::new();
            let mut statuses: Vec<u16> = Vec::new();
            let mut failed = 0u32;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                match handshake(&url, &token, Duration::from_secs(10)).await {
                    Outcome::Open(ws) => open.push(ws),
                    Outcome::Status(s) => statuses.push(s),
                    Outcome::Failed => failed += 1,
                }
            }
            (open, statuses, failed)
        }));
    }
    let mut open = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    let mut failed = 0;
    for o in openers {
        let (ws, s, f) = o.await?;
        open.extend(ws);
        for code in s {
            *statuses.entry(code).or_default() += 1;
        }
        failed += f;
    }
    let open_secs = started.elapsed().as_secs_f64();
    let rss_during = rss_kib(pid);
    tokio::time::sleep(p.hold).await;
    stop_probe.notify_one();
    let (mut latencies, probe_failures) = probe.await?;
    let opened = open.len();
    drop(open);
    latencies.sort();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .map(|d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "one-token: attempted {} in {open_secs:.1} s: accepted {opened}, refused {statuses:?}, failed {failed}",
        p.connections
    );
    println!(
        "second user: {} handshakes ok, {probe_failures} failed; latency p50 {} p99 {} max {}",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "server RSS: before {} KiB, with the connections open {} KiB",
        show(rss_before),
        show(rss_during)
    );
    Ok(())
}

struct Burst {
    room: String,
    messages: i64,
    size: usize,
    requests: u32,
    hold: Duration,
    after: Duration,
}

async fn replay_burst(
    url: &str,
    database_url: &str,
    tokens: &Tokens,
    pid: Option<u32>,
    p: Burst,
) -> anyhow::Result<()> {
    fill_room(database_url, &p).await?;
    // Let the server settle after any previous run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid);
    let sampler = {
        let stop = Arc::new(tokio::sync::Notify::new());
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = 0u64;
            loop {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                tokio::select! {
                    () = s.notified() => break peak,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        (stop, task)
    };
    let mut conns = Vec::new();
    let mut failed = 0;
    for i in 0..p.requests {
        let token = tokens.mint(910_000 + i64::from(i));
        match handshake(url, &token, Duration::from_secs(10)).await {
            Outcome::Open(mut ws) => {
                let join = serde_json::json!({"type": "join", "room": p.room, "since": 0});
                if ws.send(Message::text(join.to_string())).await.is_ok() {
                    conns.push(ws);
                } else {
                    failed += 1;
                }
            }
            _ => failed += 1,
        }
    }
    tokio::time::sleep(p.hold).await;
    let during = rss_kib(pid);
    drop(conns);
    sampler.0.notify_one();
    let peak = sampler.1.await?;
    tokio::time::sleep(p.after).await;
    let after = rss_kib(pid);
    println!(
        "replay-burst: {} joins since 0 on {} messages of {} chars ({} failed handshakes)",
        p.requests, p.messages, p.size, failed
    );
    println!(
        "server RSS: before {} KiB, peak {} KiB, at the end of the hold {} KiB, {} s after close {} KiB",
        show(before),
        peak,
        show(during),
        p.after.as_secs(),
        show(after)
    );
    Ok(())
}

/// Creates the room and its members' rows and inserts the messages directly.
async fn fill_room(database_url: &str, p: &Burst) -> anyhow::Result<()> {
    let (db, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to --database-url")?;
    tokio::spawn(connection);
    db.execute(
        "INSERT INTO rooms(name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        &[&p.room],
    )
    .await?;
    db.execute(
        "INSERT INTO users(id, username) VALUES (909999, 'abuse-filler') ON CONFLICT DO NOTHING",
        &[],
    )
    .await?;
    let have: i64 = db
        .query_one("SELECT count(*) FROM messages WHERE room = $1", &[&p.room])
        .await?
        .get(0);
    if have < p.messages {
        let content = "x".repeat(p.size);
        db.execute(
            "INSERT INTO messages (from_user, room, content) \
             SELECT 909999, $1, $2 FROM generate_series(1, $3::bigint)",
            &[&p.room, &content, &(p.messages - have)],
        )
        .await
        .context("filling the room")?;
    }
    Ok(())
}

/// Resident set size of `pid`, in KiB.
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn show(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn raise_nofile() {
    if let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        if soft < hard {
            let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard);
        }
    }
}
