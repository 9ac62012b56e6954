//! Server settings: every limit and tuning knob, each a flag with an
//! environment variable and a documented default (`chat_server --help`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Settings of a running server. Built by clap from flags and environment,
/// or by tests with [`Config::for_tests`].
#[derive(Clone, Args)]
pub struct Config {
    /// Address every shard listens on (SO_REUSEPORT).
    #[arg(long = "bind", env = "WS_BIND_ADDR", default_value = "127.0.0.1:9001")]
    pub bind: SocketAddr,

    /// PostgreSQL connection string.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// The current HS256 secret (the `token` command signs with it).
    /// Required unless --jwt-public-key or --jwks-file is given.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Key id of JWT_SECRET: tokens whose header has a `kid` are verified
    /// only with the key of that id.
    #[arg(long, env = "JWT_SECRET_KID")]
    pub jwt_secret_kid: Option<String>,

    /// Previous HS256 secrets still accepted (comma-separated), each
    /// `SECRET` or `KID:SECRET` (before the first `:` is the key id; write
    /// `:SECRET` for a secret that contains `:` and has no id).
    #[arg(
        long,
        env = "JWT_PREVIOUS_SECRETS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub jwt_previous_secrets: Vec<String>,

    /// PEM public key files (comma-separated or repeated), each `PATH` or
    /// `KID:PATH`: RSA (RS256/RS384/RS512), EC P-256 (ES256) or P-384
    /// (ES384), Ed25519 (EdDSA). Re-read on SIGHUP.
    #[arg(
        long = "jwt-public-key",
        env = "CHAT_JWT_PUBLIC_KEY",
        value_delimiter = ','
    )]
    pub jwt_public_keys: Vec<String>,

    /// A JWKS document on disk (keys selected by `kid`). Re-read on SIGHUP.
    #[arg(long, env = "CHAT_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// When set, a token's `iss` must be exactly this.
    #[arg(long, env = "CHAT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// When set, a token's `aud` must be (or contain) this.
    #[arg(long, env = "CHAT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// PEM certificate chain: serve `wss://` and `https://` (with --tls-key).
    /// Re-read on SIGHUP.
    #[arg(long, env = "CHAT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert. Re-read on SIGHUP.
    #[arg(long, env = "CHAT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Clock skew tolerated on a token's `exp` and `nbf`, in seconds.
    #[arg(long, env = "CHAT_JWT_LEEWAY_SECS", default_value_t = 0)]
    pub jwt_leeway_secs: u64,

    /// Number of shards: one OS thread with its own single-threaded runtime
    /// and listening socket each. Default: available cores.
    #[arg(long, env = "CHAT_CORES")]
    pub cores: Option<usize>,

    /// Writer threads persisting messages to PostgreSQL, each with its own connection.
    #[arg(long, env = "CHAT_WRITERS", default_value_t = 1)]
    pub writers: usize,

    /// Most rows in one insert batch (one statement per batch).
    #[arg(long, env = "CHAT_BATCH_MAX", default_value_t = 1000)]
    pub batch_max: usize,

    /// How long a writer waits for more messages to fill a batch, in ms.
    /// 0 (the default) takes what is queued and goes: batches still form
    /// naturally while the previous commit is in flight, and a lone message
    /// does not wait (measured: 1 ms of linger costs ~2.5 ms of p50).
    #[arg(long, env = "CHAT_BATCH_LINGER_MS", default_value_t = 0)]
    pub batch_linger_ms: u64,

    /// Wait for PostgreSQL to flush the WAL before a batch counts as
    /// committed. `false` lowers latency by the fsync time, but a PostgreSQL
    /// or OS crash may then lose the last ~0.6 s of delivered messages (a
    /// crash of this server alone loses nothing either way).
    #[arg(long, env = "CHAT_SYNCHRONOUS_COMMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub synchronous_commit: bool,

    /// Messages waiting for each writer before senders get "server busy".
    #[arg(long, env = "CHAT_WRITER_QUEUE", default_value_t = 65_536)]
    pub writer_queue: usize,

    /// Events waiting in each shard's inbox before producers must wait.
    #[arg(long, env = "CHAT_SHARD_QUEUE", default_value_t = 65_536)]
    pub shard_queue: usize,

    /// Longest message content, in characters.
    #[arg(long, env = "CHAT_MAX_CONTENT", default_value_t = 4096)]
    pub max_content: usize,

    /// Largest incoming WebSocket message (and frame), in bytes.
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// History entries returned when a request gives no `limit`.
    #[arg(long, env = "CHAT_HISTORY_DEFAULT", default_value_t = 50)]
    pub history_default: i64,

    /// Most history entries one request may return (larger limits are capped).
    #[arg(long, env = "CHAT_HISTORY_MAX", default_value_t = 500)]
    pub history_max: i64,

    /// Most rooms one user may belong to.
    #[arg(long, env = "CHAT_MAX_ROOMS_PER_USER", default_value_t = 1000)]
    pub max_rooms_per_user: usize,

    /// Most missed messages `join` with `since` (or `dm_sync`) replays; past
    /// it the reply says `"recovered": false` and nothing is replayed.
    #[arg(long, env = "CHAT_RECOVERY_MAX", default_value_t = 1000)]
    pub recovery_max: usize,

    /// Refuse `create_room` from clients (rooms are then made with
    /// `chat_server room create`).
    #[arg(long, env = "CHAT_NO_CLIENT_ROOM_CREATE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub no_client_room_create: bool,

    /// Rooms with more members online than this get no `presence` events
    /// and no `online` list in `join_ack` (both cost grows with it), and
    /// (issue 16) a member's own `joined`/`left` reaches only that member's
    /// own connections, not the room (counting the member: a join after
    /// it, a leave before it; without the cap, n members joining cost
    /// n²/2 frames).
    #[arg(long, env = "CHAT_PRESENCE_MAX_MEMBERS", default_value_t = 1000)]
    pub presence_max_members: usize,

    /// Highest unread count the `rooms` reply reports per room (counting
    /// stops there, so the query stays bounded).
    #[arg(long, env = "CHAT_UNREAD_MAX", default_value_t = 10_000)]
    pub unread_max: i64,

    /// Frames queued for one connection before it counts as a slow consumer
    /// and is disconnected.
    #[arg(long, env = "CHAT_OUTBOX_FRAMES", default_value_t = 4096)]
    pub outbox_frames: usize,

    /// Bytes queued for one connection before it counts as a slow consumer.
    #[arg(long, env = "CHAT_OUTBOX_BYTES", default_value_t = 4 << 20)]
    pub outbox_bytes: usize,

    /// WebSocket read buffer per connection, in bytes (tungstenite's default
    /// of 128 KiB costs far too much per idle connection). Allocated for the
    /// connection's whole life; a larger frame grows it to its size. Chat
    /// requests are far below 1 KiB (issue 16: memory per connection).
    #[arg(long, env = "CHAT_WS_READ_BUFFER", default_value_t = 1024)]
    pub ws_read_buffer: usize,

    /// WebSocket write buffer target per connection, in bytes (frames are
    /// written once this fills, and always on flush).
    #[arg(long, env = "CHAT_WS_WRITE_BUFFER", default_value_t = 16 * 1024)]
    pub ws_write_buffer: usize,

    /// Give up on a connection whose socket accepts no bytes for this long, in ms.
    #[arg(long, env = "CHAT_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,

    /// Set TCP_NODELAY on accepted sockets.
    #[arg(long, env = "CHAT_TCP_NODELAY", default_value_t = true, action = clap::ArgAction::Set)]
    pub tcp_nodelay: bool,

    /// Listen backlog of each shard's socket.
    #[arg(long, env = "CHAT_BACKLOG", default_value_t = 4096)]
    pub backlog: u32,

    /// Largest HTTP upgrade request accepted, in bytes.
    #[arg(long, env = "CHAT_MAX_HANDSHAKE_BYTES", default_value_t = 16 * 1024)]
    pub max_handshake_bytes: usize,

    /// Time a client has to complete its HTTP upgrade request, in ms.
    #[arg(long, env = "CHAT_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,

    /// PostgreSQL connections per shard, for handshakes, joins and short
    /// writes (heavy reads have `--db-read-pool-size`).
    #[arg(long, env = "CHAT_DB_POOL_SIZE", default_value_t = 4)]
    pub db_pool_size: usize,

    /// A message not committed within this many ms (database down) is
    /// refused with an error frame and never delivered.
    #[arg(long, env = "CHAT_PERSIST_TIMEOUT_MS", default_value_t = 5_000)]
    pub persist_timeout_ms: u64,

    /// Time allowed for a graceful shutdown, in ms.
    #[arg(long, env = "CHAT_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,

    /// Requests per second one connection may make (token bucket refill; 0: no limit).
    #[arg(long, env = "CHAT_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,

    /// Requests one connection may make in a burst (token bucket size).
    #[arg(long, env = "CHAT_RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,

    /// A connection refused for rate at least once a second for this many
    /// seconds is closed with 1008.
    #[arg(long, env = "CHAT_FLOOD_CLOSE_SECS", default_value_t = 3)]
    pub flood_close_secs: u64,

    /// Most connections one shard holds; past it, handshakes get HTTP 503
    /// `server full`. Default (0): derived at start from the open-files
    /// limit (see `--max-pending-handshakes` and `fd_budget::FdBudget`); a
    /// larger explicit value is clamped to what the file limit allows.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_SHARD", default_value_t = 0)]
    pub max_connections_per_shard: usize,

    /// Seconds between server pings on an otherwise quiet connection.
    #[arg(long, env = "CHAT_PING_INTERVAL_SECS", default_value_t = 30)]
    pub ping_interval_secs: u64,

    /// A connection that sends nothing (no frame, no pong) for this many
    /// seconds is closed.
    #[arg(long, env = "CHAT_IDLE_TIMEOUT_SECS", default_value_t = 75)]
    pub idle_timeout_secs: u64,

    /// Longest accepted token, in bytes (longer: HTTP 401).
    #[arg(long, env = "CHAT_MAX_TOKEN_BYTES", default_value_t = 4096)]
    pub max_token_bytes: usize,

    /// Browser origins allowed to connect (comma-separated). Empty: any.
    /// Requests without an `Origin` header (non-browser clients) are always allowed.
    #[arg(long, env = "CHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Pin shard i to CPU core i (modulo the number of cores).
    #[arg(long, env = "CHAT_PIN_CORES", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub pin_cores: bool,

    /// tokio `event_interval` of each shard runtime (ticks between I/O polls).
    #[arg(long, env = "CHAT_EVENT_INTERVAL", default_value_t = 61)]
    pub event_interval: u32,

    /// NATS server of the cluster (`nats://HOST:PORT`). Set, this node
    /// serves one chat with every other node on the same NATS and
    /// PostgreSQL; unset, the server runs alone and needs no NATS.
    #[arg(long, env = "CHAT_CLUSTER_URL")]
    pub cluster_url: Option<String>,

    /// Name of this node in logs and in NATS. Default: generated.
    #[arg(long, env = "CHAT_NODE_ID")]
    pub node_id: Option<String>,

    /// Cluster: how long an out-of-order message waits for its missing
    /// predecessors over NATS before they are read from PostgreSQL, in ms.
    #[arg(long, env = "CHAT_CLUSTER_GAP_WAIT_MS", default_value_t = 50)]
    pub cluster_gap_wait_ms: u64,

    /// Cluster: how often every followed room and user is compared with
    /// PostgreSQL (catches a lost last message of a silent stream), in ms.
    #[arg(long, env = "CHAT_CLUSTER_CHECK_MS", default_value_t = 1000)]
    pub cluster_check_ms: u64,

    /// Cluster: messages waiting for the cluster link (from the writers and
    /// from NATS) before producers wait; also the NATS publish queue.
    #[arg(long, env = "CHAT_CLUSTER_QUEUE", default_value_t = 65_536)]
    pub cluster_queue: usize,

    /// Cluster: most out-of-order messages held per stream before a fill
    /// from PostgreSQL is forced; also the rows read per fill query.
    #[arg(long, env = "CHAT_CLUSTER_FILL_MAX", default_value_t = 1000)]
    pub cluster_fill_max: usize,

    // --- issue 13: limits per user (connections, messages, rooms created) ---
    /// Most connections one user may hold at once on this server, counted
    /// across all shards (per node in cluster mode); past it, handshakes get
    /// HTTP 429. 0: no limit.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_USER", default_value_t = 32)]
    pub max_connections_per_user: usize,

    /// Messages (`message`, `dm`) per second one user may send, across all
    /// of its connections on this server (token bucket refill; 0: no limit).
    #[arg(long, env = "CHAT_USER_MESSAGE_RATE", default_value_t = 100)]
    pub user_message_rate: u32,

    /// Messages one user may send in a burst, across all of its connections
    /// (token bucket size).
    #[arg(long, env = "CHAT_USER_MESSAGE_BURST", default_value_t = 200)]
    pub user_message_burst: u32,

    /// Rooms one user may create with `create_room` in any sliding hour,
    /// counted in PostgreSQL (so across restarts and nodes). 0: no limit.
    /// `chat_server room create` is not limited.
    #[arg(long, env = "CHAT_MAX_ROOMS_CREATED_PER_HOUR", default_value_t = 20)]
    pub max_rooms_created_per_hour: u32,
    // --- end issue 13: limits per user ---
    // --- issue 13: server-wide resources (descriptors, handshakes, pools, metrics) ---
    /// Most handshakes in progress in the whole process (accepted sockets
    /// that are not yet a WebSocket nor answered); past it a new socket is
    /// answered 503 at once, unread. Default (0): derived from the
    /// open-files limit (an eighth of what is left after the reserve, at
    /// most 1024).
    #[arg(long, env = "CHAT_MAX_PENDING_HANDSHAKES", default_value_t = 0)]
    pub max_pending_handshakes: usize,

    /// Most handshakes in progress from one IP address; past it a new
    /// socket from that address is answered 429 at once, unread.
    #[arg(
        long,
        env = "CHAT_MAX_PENDING_HANDSHAKES_PER_IP",
        default_value_t = 256
    )]
    pub max_pending_handshakes_per_ip: usize,

    /// Time an accepted socket has to send the first byte of its request,
    /// in ms (silent sockets are closed with 408 after it); the whole
    /// request still has `--handshake-timeout-ms`.
    #[arg(long, env = "CHAT_HANDSHAKE_FIRST_BYTE_MS", default_value_t = 3_000)]
    pub handshake_first_byte_ms: u64,

    /// PostgreSQL connections per shard for reads that can be heavy (room
    /// and DM history, `join` replay, `dm_sync`, the `rooms` unread
    /// counts), so that handshakes never wait behind them.
    #[arg(long, env = "CHAT_DB_READ_POOL_SIZE", default_value_t = 4)]
    pub db_read_pool_size: usize,

    /// Serve `/metrics` only on this address (plain HTTP, its own small
    /// listener); the main port then answers 404 for it. Recommended.
    #[arg(long, env = "CHAT_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,

    /// When set, `/metrics` requires `Authorization: Bearer TOKEN` (else 401).
    #[arg(long, env = "CHAT_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    // --- end issue 13: server-wide resources ---
    // --- issue 13: replies in bounded memory (replay/history pages, budget, slow consumers) ---
    /// Most messages read and written per page of a replay (`join` with
    /// `since`, `dm_sync`) or of a history reply.
    #[arg(long, env = "CHAT_REPLAY_PAGE", default_value_t = 100)]
    pub replay_page: usize,

    /// Most stored content bytes per page (a single larger message is a
    /// page of its own).
    #[arg(long, env = "CHAT_REPLAY_PAGE_BYTES", default_value_t = 1 << 20)]
    pub replay_page_bytes: usize,

    /// Server-wide budget of reply bytes in flight (replay and history
    /// pages read and not yet written), across all shards.
    #[arg(long, env = "CHAT_REPLY_BUDGET_BYTES", default_value_t = 64 << 20)]
    pub reply_budget_bytes: u64,

    /// How long a replay or history request waits for budget before it is
    /// refused with `server busy: try again`, in ms.
    #[arg(long, env = "CHAT_REPLY_BUDGET_WAIT_MS", default_value_t = 5_000)]
    pub reply_budget_wait_ms: u64,

    /// A connection whose outbound queue (live traffic) stays above
    /// --outbox-frames / --outbox-bytes this long is a slow consumer, in ms
    /// (past twice those bounds it is one at once).
    #[arg(long, env = "CHAT_SLOW_CONSUMER_GRACE_MS", default_value_t = 5_000)]
    pub slow_consumer_grace_ms: u64,
    // --- end issue 13: replies in bounded memory ---
    // --- issue 14: room access (roles, invites, member lists, mutes) ---
    /// Most members one `members` reply lists (also its size without
    /// `limit`); the client pages on with `after`.
    #[arg(long, env = "CHAT_MEMBERS_PAGE_MAX", default_value_t = 200)]
    pub members_page_max: i64,
    // --- end issue 14: room access ---
    /// DEVELOPMENT ONLY: serve `GET /dev/token?user_id=N&username=NAME`,
    /// which signs a token for whoever asks. Never on a reachable server.
    #[arg(long, env = "CHAT_DEV", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dev: bool,

    // --- issue 13: identity, token lifetime and request strictness ---
    /// Longest a token may still be valid when presented, in seconds: a
    /// token whose `exp` is more than this (plus --jwt-leeway-secs) ahead
    /// is refused at the handshake (401) and by `refresh`.
    #[arg(long, env = "CHAT_MAX_TOKEN_LIFETIME_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_token_lifetime_secs: u64,

    // --- issue 15: the server API and the event feed ---
    /// Address of the server API (`/v1`, for the application's backend),
    /// off when unset. Requires CHAT_API_KEYS.
    #[arg(long, env = "CHAT_API_BIND")]
    pub api_bind: Option<SocketAddr>,

    /// Bearer keys of the server API (comma-separated: several keys are
    /// accepted at once, so one can be rotated). Environment only.
    #[arg(skip)]
    pub api_keys: Vec<String>,

    /// Largest request body the server API reads, in bytes (more: 413).
    #[arg(long, env = "CHAT_API_MAX_BODY", default_value_t = 1 << 20)]
    pub api_max_body: usize,

    /// Connections of the server API's own database pool.
    #[arg(long, env = "CHAT_API_DB_POOL_SIZE", default_value_t = 4)]
    pub api_db_pool_size: usize,

    /// How long the event feed keeps events (at least), e.g. `7d`, `12h`.
    /// Asking for older ones is 410 `gone`.
    #[arg(long, env = "CHAT_FEED_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub feed_retention: Duration,

    /// Where the webhook deliverer POSTs the event feed (off when unset).
    /// Requires CHAT_WEBHOOK_SECRET.
    #[arg(long, env = "CHAT_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// The HMAC-SHA256 key of `X-Chat-Signature`. Environment only.
    #[arg(skip)]
    pub webhook_secret: Option<String>,

    /// Most events per webhook POST.
    #[arg(long, env = "CHAT_WEBHOOK_BATCH", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub webhook_batch: u32,

    /// Time a webhook POST may take before it is retried, e.g. `5s`.
    #[arg(long, env = "CHAT_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,

    /// Longest wait between two attempts of a failing webhook POST (the
    /// back-off doubles up to it, with jitter), e.g. `30s`.
    #[arg(long, env = "CHAT_WEBHOOK_BACKOFF_MAX", default_value = "30s", value_parser = humantime::parse_duration)]
    pub webhook_backoff_max: Duration,
    // --- end issue 15 ---

    // --- issue 15: the server API's users and rooms routes ---
    /// Most items one page of `GET /v1/rooms` or
    /// `GET /v1/rooms/{room}/moderation` lists (also its size without
    /// `limit`); the backend pages on with `after`.
    #[arg(long, env = "CHAT_API_PAGE_MAX", default_value_t = 100,
          value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub api_page_max: i64,
    // --- end issue 15: users and rooms routes ---
    // --- feed: the event feed's reads, webhook delivery and retention ---
    /// Most `GET /v1/events?wait=` requests waiting at once on this node
    /// (one more: 503 `unavailable`).
    #[arg(long, env = "CHAT_FEED_MAX_WAITERS", default_value_t = 1000)]
    pub feed_max_waiters: usize,

    /// How often the feed's head is read for waiting readers and for the
    /// webhook deliverer when it is idle, in milliseconds.
    #[arg(long, env = "CHAT_FEED_POLL_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub feed_poll_ms: u64,

    /// Most events one retention transaction deletes.
    #[arg(long, env = "CHAT_FEED_PURGE_CHUNK", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub feed_purge_chunk: u32,
    // --- end feed ---
    // --- issue 16: connect storms (presence batching) ---
    /// Presence batching window per room, in ms: the first presence change
    /// of a room after a quiet window goes out at once; further changes
    /// within the window are sent together at its end as one
    /// `presence_batch` frame (0 = every change at once). At most
    /// --presence-max-members changes are held per room (more flush early).
    #[arg(long, env = "CHAT_PRESENCE_BATCH_MS", default_value_t = 200)]
    pub presence_batch_ms: u64,
    // --- end issue 16: connect storms ---
}

/// Prints the settings that shape the server, never a secret: the JWT
/// secrets are counted, the database and NATS URLs lose their passwords.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("database_url", &redact_password(&self.database_url))
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_previous_secrets", &self.jwt_previous_secrets.len())
            .field("cores", &self.cores)
            .field("writers", &self.writers)
            .field("batch_max", &self.batch_max)
            .field("tls_cert", &self.tls_cert)
            .field("api_bind", &self.api_bind)
            .field("api_keys", &self.api_keys.len())
            .field("webhook_url", &self.webhook_url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "cluster_url",
                &self.cluster_url.as_deref().map(redact_password),
            )
            .finish_non_exhaustive()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

impl Config {
    /// Number of shards to start.
    pub fn shard_count(&self) -> usize {
        self.cores
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1)
    }

    /// Number of writer threads to start.
    pub fn writer_count(&self) -> usize {
        self.writers.max(1)
    }

    /// Batch linger as a duration.
    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// Persist timeout as a duration.
    pub fn persist_timeout(&self) -> Duration {
        Duration::from_millis(self.persist_timeout_ms)
    }

    /// The presence batching window (zero: no batching).
    pub fn presence_batch(&self) -> Duration {
        Duration::from_millis(self.presence_batch_ms)
    }

    /// Socket write timeout as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// True when this node serves a chat with other nodes through NATS.
    pub fn clustered(&self) -> bool {
        self.cluster_url.is_some()
    }

    /// Time allowed for the first byte of a request: the first-byte
    /// setting, never longer than the whole handshake's.
    pub fn handshake_first_byte(&self) -> Duration {
        Duration::from_millis(self.handshake_first_byte_ms.min(self.handshake_timeout_ms))
    }

    /// Handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// Ping interval as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs.max(1))
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }

    /// True when a browser from `origin` may connect.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => {
                self.allowed_origins.is_empty()
                    || self
                        .allowed_origins
                        .iter()
                        .any(|a| a.trim().eq_ignore_ascii_case(o.trim()))
            }
        }
    }

    /// Shutdown timeout as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// Clamps a client's requested history size to `[1, history_max]`.
    pub fn history_limit(&self, requested: Option<i64>) -> Result<i64, &'static str> {
        match requested {
            None => Ok(self.history_default.min(self.history_max)),
            Some(n) if n < 1 => Err("limit must be a positive integer"),
            Some(n) => Ok(n.min(self.history_max)),
        }
    }

    /// The size of a `members` page: `limit` (at least 1) capped at
    /// `--members-page-max`; without it, the cap.
    pub fn members_limit(&self, requested: Option<i64>) -> Result<i64, &'static str> {
        let max = self.members_page_max.max(1);
        match requested {
            None => Ok(max),
            Some(n) if n < 1 => Err("limit must be a positive integer"),
            Some(n) => Ok(n.min(max)),
        }
    }

    /// Issue 15: the size of a page of the server API's rooms and
    /// moderation lists: `limit` (at least 1) capped at `--api-page-max`;
    /// without it, the cap.
    pub fn api_page_limit(&self, requested: Option<i64>) -> Result<i64, &'static str> {
        let max = self.api_page_max.max(1);
        match requested {
            None => Ok(max),
            Some(n) if n < 1 => Err("limit must be a positive integer"),
            Some(n) => Ok(n.min(max)),
        }
    }

    /// Defaults with the given database, secret and address: what the
    /// integration tests start from. Environment variables are not read.
    pub fn for_tests(database_url: &str, jwt_secret: &str, bind: SocketAddr) -> Config {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let mut config = <Wrapper as clap::Parser>::try_parse_from([
            "chat_server",
            "--database-url",
            database_url,
            "--jwt-secret",
            jwt_secret,
        ])
        .expect("default configuration parses")
        .config;
        // Defaults are what clap gives, but the environment may have leaked in.
        config.bind = bind;
        config.database_url = database_url.to_owned();
        config.jwt_secret = Some(jwt_secret.to_owned());
        config.jwt_secret_kid = None;
        config.jwt_previous_secrets = Vec::new();
        config.jwt_public_keys = Vec::new();
        config.jwks_file = None;
        config.jwt_issuer = None;
        config.jwt_audience = None;
        config.tls_cert = None;
        config.tls_key = None;
        config.cluster_url = None;
        config.node_id = None;
        config.max_token_lifetime_secs = 86_400;
        // --- issue 13: limits per user (the defaults, not the environment) ---
        config.max_connections_per_user = 32;
        config.user_message_rate = 100;
        config.user_message_burst = 200;
        config.max_rooms_created_per_hour = 20;
        config.metrics_bind = None;
        config.metrics_token = None;
        // --- issue 13: replies in bounded memory ---
        config.replay_page = 100;
        config.replay_page_bytes = 1 << 20;
        config.reply_budget_bytes = 64 << 20;
        config.reply_budget_wait_ms = 5_000;
        config.slow_consumer_grace_ms = 5_000;
        // --- issue 14: room access ---
        config.members_page_max = 200;
        // --- issue 15: the server API and the event feed ---
        config.api_bind = None;
        config.api_keys = Vec::new();
        config.api_max_body = 1 << 20;
        config.api_db_pool_size = 4;
        config.feed_retention = Duration::from_secs(7 * 86_400);
        config.webhook_url = None;
        config.webhook_secret = None;
        config.webhook_batch = 100;
        config.webhook_timeout = Duration::from_secs(5);
        config.webhook_backoff_max = Duration::from_secs(30);
        // --- issue 15: the server API's users and rooms routes ---
        config.api_page_max = 100;
        // --- feed: the event feed's reads, webhook delivery and retention ---
        config.feed_max_waiters = 1000;
        config.feed_poll_ms = 100;
        config.feed_purge_chunk = 10_000;
        // --- issue 16: connect storms ---
        config.presence_batch_ms = 200;
        config
    }

    /// How often the feed's head is polled (`--feed-poll-ms`).
    pub fn feed_poll(&self) -> Duration {
        Duration::from_millis(self.feed_poll_ms.max(1))
    }

    /// Issue 15: reads the secrets that are taken from the environment
    /// only (never flags, which `ps` shows): `CHAT_API_KEYS` (comma-separated)
    /// and `CHAT_WEBHOOK_SECRET`.
    pub fn read_secret_env(&mut self) {
        if let Ok(keys) = std::env::var("CHAT_API_KEYS") {
            self.api_keys = keys
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Ok(secret) = std::env::var("CHAT_WEBHOOK_SECRET") {
            if !secret.is_empty() {
                self.webhook_secret = Some(secret);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secrets() {
        let mut c = Config::for_tests(
            "postgres://app:hunter2@127.0.0.1/chat",
            "topsecret",
            "127.0.0.1:0".parse().unwrap(),
        );
        c.jwt_previous_secrets = vec!["oldsecret".into()];
        let shown = format!("{c:?}");
        for secret in ["hunter2", "topsecret", "oldsecret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("postgres://app:***@127.0.0.1/chat"),
            "{shown}"
        );
        assert_eq!(redact_password("postgres://u@h/d"), "postgres://u@h/d");
    }

    #[test]
    fn history_limit_defaults_caps_and_refuses() {
        let c = Config::for_tests("postgres://x", "s", "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.history_limit(None), Ok(50));
        assert_eq!(c.history_limit(Some(10)), Ok(10));
        assert_eq!(c.history_limit(Some(100_000)), Ok(500));
        assert!(c.history_limit(Some(0)).is_err());
        assert!(c.history_limit(Some(-3)).is_err());
    }
}
