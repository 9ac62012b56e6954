//! Command-line interface: scenarios as subcommands, shared options as global flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Load generator for `chat_server`: drives real WebSocket clients against a loopback server.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: ScenarioCmd,
    /// Options shared by every scenario.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// One load scenario.
#[derive(Debug, Subcommand)]
pub enum ScenarioCmd {
    /// Room fan-out: every connection joins one of R rooms round-robin, S of them send.
    Room {
        /// Number of rooms (connection i joins room i % R).
        #[arg(long, default_value_t = 10)]
        rooms: u32,
        /// Number of sending connections (connections 0..S; they spread over the rooms).
        #[arg(long, default_value_t = 10)]
        senders: u32,
        /// Room name prefix; room r is named `<prefix>-r<R>-<r>`.
        #[arg(long, default_value = "lt")]
        room_prefix: String,
        /// Do not insert the rooms into PostgreSQL (they must exist already).
        #[arg(long)]
        no_provision: bool,
        /// Traffic shape.
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Direct messages: connections 2k and 2k+1 are a pair and send to each other.
    Dm {
        /// Number of sending connections (connections 0..S; default: all).
        #[arg(long)]
        senders: Option<u32>,
        /// Traffic shape.
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Connection storm: open --connections handshakes, report handshakes/s and latency.
    Connect {
        /// Close every connection right after its handshake instead of holding all until the end.
        #[arg(long)]
        close: bool,
    },
    /// Hot room (issue 16): every connection joins ONE room, S of them send
    /// (defaults: 10 senders, 10 msg/s; with -c 10000 that is 100k frames/s).
    HotRoom {
        /// Number of sending connections (connections 0..S).
        #[arg(long, default_value_t = 10)]
        senders: u32,
        /// Total messages per second over all senders (open loop); 0 = saturation.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// With --rate 0: messages in flight per sender.
        #[arg(long, default_value_t = 1)]
        inflight: u32,
        /// Message content size in bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Room name prefix; the room is named `<prefix>-r1-0`.
        #[arg(long, default_value = "hot")]
        room_prefix: String,
        /// Do not insert the room into PostgreSQL (it must exist already).
        #[arg(long)]
        no_provision: bool,
    },
    /// Reconnect storm (issue 16): every connection joins its room of
    /// --room-size, then all close and reconnect (handshake + join) at once;
    /// reports reconnect handshakes/s and presence frames per client.
    Reconnect {
        /// Members per room (connections g*N .. (g+1)*N - 1 are room g).
        #[arg(long, default_value_t = 100)]
        room_size: u32,
        /// Room name prefix; room g is named `<prefix>-r<R>-<g>`.
        #[arg(long, default_value = "rs")]
        room_prefix: String,
        /// Do not insert the rooms into PostgreSQL (they must exist already).
        #[arg(long)]
        no_provision: bool,
    },
    /// Hold --connections idle connections and report the server's RSS per connection.
    Idle {
        /// Seconds to wait after all connections are up before reading the server's RSS.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
    },
}

/// Message traffic options (room and dm scenarios).
#[derive(Debug, Clone, Args)]
pub struct TrafficArgs {
    /// Total messages per second over all senders on a fixed open-loop schedule; 0 = saturation.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// With --rate 0: messages in flight per sender (released by the sender's own echo).
    #[arg(long, default_value_t = 1)]
    pub inflight: u32,
    /// Message content size in bytes (at least the header `<sender>:<seq>:<nanos>:`).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Comma-separated list of rates: run once per rate (0 = saturation) and chart them.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Option<Vec<f64>>,
    /// With --sweep: write one CSV row per rate to this file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// With --sweep: write an SVG chart of p50/p99/p99.9 latency against delivered/s.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// Options shared by all scenarios.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Server WebSocket URL; only loopback hosts (127.0.0.0/8, ::1, localhost)
    /// are accepted. Several, comma-separated (cluster nodes): the connections
    /// are split in contiguous blocks, block k to URL k.
    #[arg(
        long,
        global = true,
        env = "LOADTEST_URL",
        default_value = "ws://127.0.0.1:9001/"
    )]
    pub url: String,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, global = true, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PostgreSQL URL used to provision rooms (room scenario).
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Pass the token as `?token=` instead of an `Authorization: Bearer` header.
    #[arg(long, global = true)]
    pub token_in_query: bool,
    /// Number of client connections (each is a distinct user).
    #[arg(long, short = 'c', global = true, default_value_t = 100)]
    pub connections: u32,
    /// User id of connection 0; connection i is user `base + i`, named `lt<i>`.
    #[arg(long, global = true, default_value_t = 1_000_000)]
    pub user_id_base: i64,
    /// Seconds of traffic before measuring (latencies are not recorded).
    #[arg(long, global = true, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds of measured traffic (idle: seconds to hold the connections).
    #[arg(long, global = true, default_value_t = 5.0)]
    pub duration: f64,
    /// Upper bound in seconds to wait for outstanding deliveries after sending stops.
    #[arg(long, global = true, default_value_t = 5.0)]
    pub drain: f64,
    /// Tokio worker threads per process (1 = current-thread runtime).
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Worker processes to split the connections over (each has its own fd limit).
    #[arg(long, global = true, default_value_t = 1)]
    pub procs: u32,
    /// Bind connection i to source address 127.0.0.(1 + i % N) (about 28k connections per address).
    #[arg(long, global = true, default_value_t = 1)]
    pub source_ips: u8,
    /// Handshakes in progress at once per process.
    #[arg(long, global = true, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Seconds allowed for one TCP connect + WebSocket handshake (+ room join).
    #[arg(long, global = true, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// PID of the server, to report its CPU per delivered frame and its RSS.
    /// Several, comma-separated (cluster nodes, NATS): figures are summed.
    #[arg(long, global = true, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Also write the JSON result to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Do not print the per-second progress line.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}
