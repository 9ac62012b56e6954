//! Memory per joined connection (issue 16, target 3): opens `--connections`
//! WebSockets at `--rate` per second, each joining one of `--rooms` rooms
//! (connection i joins room i % R, so 10k connections and 100 rooms are
//! 100 rooms of 100), holds them, and reads the server's RSS from
//! `/proc/<pid>/status`: at rest before the storm, the highest sample
//! during it (and `VmHWM`), and the steady figure after `--settle` seconds.
//!
//! Every connection reads what it is sent (join acks, presence and member
//! events), so the server's queues drain as they would with live clients.
//!
//! Loopback only: the URL must name a 127.0.0.0/8 address. Bounded in
//! connections and time; it closes everything and stops by itself.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "Connect N clients, join one room each, hold, and report the server's RSS")]
struct Cli {
    /// WebSocket URL of the server (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:19301/")]
    url: String,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// PostgreSQL URL, to create the rooms (existing ones are kept).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Server process id, for RSS readings from /proc.
    #[arg(long)]
    server_pid: u32,
    /// Connections to open (at most 19,000: the open-files limit is 20k).
    #[arg(long, default_value_t = 10_000)]
    connections: u32,
    /// Rooms; connection i joins room i % rooms.
    #[arg(long, default_value_t = 100)]
    rooms: u32,
    /// Connections started per second.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Seconds to wait after the last join before reading the steady RSS.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// User id of connection 0 (connection i is user base + i, named mh<user id>).
    #[arg(long, default_value_t = 3_000_000)]
    user_base: i64,
    /// Room name prefix (room r is `<prefix>-<r>`).
    #[arg(long, default_value = "mem")]
    room_prefix: String,
    /// Handshakes (with their join) in progress at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds allowed for one connection's handshake and join.
    #[arg(long, default_value_t = 20.0)]
    timeout: f64,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.connections > 19_000 {
        bail!("--connections must be at most 19000");
    }
    let host = cli
        .url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .context("--url must be ws://127.x.y.z:port/")?
        .to_string();
    let ip: std::net::SocketAddr = host.parse().context("--url host must be an IP:port")?;
    if !ip.ip().is_loopback() {
        bail!("--url must be a loopback address");
    }
    let _ = rlimit::increase_nofile_limit(u64::from(cli.connections) + 256);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli, ip))
}

/// VmRSS and VmHWM of `pid`, in KiB.
fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

async fn run(cli: Cli, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let rooms: Vec<String> = (0..cli.rooms)
        .map(|r| format!("{}-{r}", cli.room_prefix))
        .collect();
    provision(&cli.database_url, &rooms).await?;

    let pid = cli.server_pid;
    let (rest, hwm_rest) = rss(pid).context("reading the server's /proc status")?;
    // A sampler thread: the highest VmRSS seen while the storm runs.
    let peak = Arc::new(AtomicU64::new(rest));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Relaxed) {
                if let Some((now, _)) = rss(pid) {
                    peak.fetch_max(now, Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let key = Arc::new(EncodingKey::from_secret(cli.secret.as_bytes()));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let joined = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let frames = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let timeout = Duration::from_secs_f64(cli.timeout);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(cli.concurrency));
    for i in 0..cli.connections {
        let at = start + Duration::from_secs_f64(f64::from(i) / cli.rate);
        let user = cli.user_base + i64::from(i);
        let claims =
            serde_json::json!({"user_id": user, "username": format!("mh{user}"), "exp": exp});
        let token = jsonwebtoken::encode(&Header::default(), &claims, &key)?;
        let room = rooms[(i % cli.rooms) as usize].clone();
        let url = cli.url.clone();
        let (joined, failed, frames) = (joined.clone(), failed.clone(), frames.clone());
        let mut stop = stop_rx.clone();
        let gate = gate.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let Ok(permit) = gate.acquire().await else {
                return;
            };
            let opened = tokio::time::timeout(timeout, open(addr, &url, &token, &room)).await;
            drop(permit);
            let ws = match opened {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => {
                    if failed.fetch_add(1, Relaxed) < 5 {
                        eprintln!("connection {i}: {e:#}");
                    }
                    return;
                }
                Err(_) => {
                    failed.fetch_add(1, Relaxed);
                    return;
                }
            };
            joined.fetch_add(1, Relaxed);
            hold(ws, &mut stop, &frames).await;
        });
    }
    // Wait until every connection has joined or failed.
    let deadline = start
        + Duration::from_secs_f64(f64::from(cli.connections) / cli.rate)
        + timeout
        + Duration::from_secs(5);
    while joined.load(Relaxed) + failed.load(Relaxed) < cli.connections as usize {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let storm = start.elapsed();
    let storm_peak = peak.load(Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(cli.settle)).await;
    // Steady: the median of 5 samples, 200 ms apart.
    let mut samples = Vec::new();
    for _ in 0..5 {
        if let Some((now, _)) = rss(pid) {
            samples.push(now);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    samples.sort_unstable();
    let steady = samples.get(samples.len() / 2).copied().unwrap_or(0);
    sampling.store(false, Relaxed);
    let _ = sampler.join();
    let peak_all = peak.load(Relaxed);
    let hwm = rss(pid).map_or(0, |(_, h)| h);

    let n = joined.load(Relaxed).max(1) as f64;
    let per = |kib: u64| (kib.saturating_sub(rest)) as f64 / n;
    println!(
        "connections joined {} failed {} in {:.2} s ({:.0}/s); frames read {}",
        joined.load(Relaxed),
        failed.load(Relaxed),
        storm.as_secs_f64(),
        n / storm.as_secs_f64(),
        frames.load(Relaxed),
    );
    println!(
        "rss_kib rest {rest} storm_peak {storm_peak} peak {peak_all} steady {steady} (VmHWM before {hwm_rest}, after {hwm})"
    );
    println!(
        "kib_per_conn steady {:.2} peak {:.2} hwm {:.2}; peak/steady {:.3}",
        per(steady),
        per(peak_all),
        per(hwm),
        per(peak_all) / per(steady).max(f64::MIN_POSITIVE),
    );
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn provision(url: &str, rooms: &[String]) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to --database-url")?;
    let task = tokio::spawn(conn);
    client
        .execute(
            "INSERT INTO rooms(name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING",
            &[&rooms],
        )
        .await
        .context("creating the rooms (is the schema migrated?)")?;
    drop(client);
    let _ = task.await;
    Ok(())
}

/// Handshake, `join`, and wait for the `join_ack`.
async fn open(
    addr: std::net::SocketAddr,
    url: &str,
    token: &str,
    room: &str,
) -> anyhow::Result<Ws> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
    let join = serde_json::json!({"type": "join", "room": room}).to_string();
    ws.send(Message::text(join)).await?;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            if t.as_str().contains("\"join_ack\"") {
                return Ok(ws);
            }
            if t.as_str().starts_with("{\"type\":\"error\"") {
                bail!("join refused: {}", t.as_str());
            }
        }
    }
    bail!("closed before join_ack")
}

/// Reads (and counts) everything until told to stop, then closes.
async fn hold(mut ws: Ws, stop: &mut tokio::sync::watch::Receiver<bool>, frames: &AtomicU64) {
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(_)) => { frames.fetch_add(1, Relaxed); }
                _ => return,
            },
            _ = stop.changed() => break,
        }
    }
    let _ = ws.close(None).await;
}
