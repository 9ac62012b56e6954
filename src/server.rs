//! Start-up and shutdown: migrates the database, binds one `SO_REUSEPORT`
//! socket per shard, builds the mesh (shard inboxes, router, writer queues)
//! once, and starts the writer and shard threads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::accept;
use crate::cluster::{ClusterLink, LinkError, LinkSettings};
use crate::config::Config;
use crate::credentials::{Credentials, CredentialsError};
use crate::fd_budget::{FdBudget, FdInputs};
use crate::mesh::mailbox;
use crate::metrics::Metrics;
use crate::pending::PendingHandshakes;
use crate::router::Router;
use crate::shard::{self, Phase, ShardParts};
use crate::store::writer::{self, WriterPool, WriterSettings};
use crate::store::{self, StoreError};
use crate::userlimits::UserLimits;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A required setting is missing or invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The JWT keys or the TLS certificate could not be loaded.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The database could not be reached or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Binding the listeners or starting threads failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A shard failed to start.
    #[error("shard failed to start: {0}")]
    Shard(String),
    /// The cluster link could not start.
    #[error(transparent)]
    Cluster(#[from] LinkError),
}

/// A running server. Dropping it without [`shutdown`](Self::shutdown)
/// leaves its threads running until the process exits.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    phase: watch::Sender<Phase>,
    shards: Vec<std::thread::JoinHandle<()>>,
    writers: WriterPool,
    link: Option<ClusterLink>,
    credentials: Arc<Credentials>,
    metrics_addr: Option<SocketAddr>,
    metrics_thread: Option<std::thread::JoinHandle<()>>,
    api_addr: Option<SocketAddr>,
    api_thread: Option<std::thread::JoinHandle<()>>,
    feed_thread: Option<std::thread::JoinHandle<()>>,
}

/// How long start-up keeps retrying an unreachable database.
const STARTUP_DB_WAIT: Duration = Duration::from_secs(60);

/// Starts the server: returns once every shard accepts connections.
/// Blocking; call it from a plain thread (or `spawn_blocking`).
pub fn start(config: Config) -> Result<ServerHandle, StartError> {
    start_with_db_wait(config, STARTUP_DB_WAIT)
}

/// [`start`], giving up on an unreachable database after `db_wait`.
pub fn start_with_db_wait(
    mut config: Config,
    db_wait: Duration,
) -> Result<ServerHandle, StartError> {
    if config.database_url.is_empty() {
        return Err(StartError::Config(
            "DATABASE_URL (or --database-url) is required".into(),
        ));
    }
    // Issue 15: the API and the webhook need their secrets.
    let api_keys = match config.api_bind {
        None => None,
        Some(_) => Some(
            crate::api::ApiKeys::new(&config.api_keys)
                .map_err(|e| StartError::Config(e.to_string()))?,
        ),
    };
    if config.webhook_url.is_some() && config.webhook_secret.is_none() {
        return Err(StartError::Config(
            "--webhook-url is set but CHAT_WEBHOOK_SECRET is not: refusing to send unsigned webhooks"
                .into(),
        ));
    }
    // Keys and certificate first: a bad file fails at once, not after the database.
    let credentials = Arc::new(Credentials::load(&config)?);
    credentials.log_active("active");
    let fd_limit = raise_fd_limit();
    prepare_database(&config.database_url, db_wait)?;

    let shards = config.shard_count();
    let writers = config.writer_count();
    let budget = apply_fd_budget(&mut config, fd_limit, shards, writers);
    let pending = Arc::new(PendingHandshakes::new(
        budget.pending_handshakes,
        config.max_pending_handshakes_per_ip,
    ));
    let listeners = bind_listeners(config.bind, shards, config.backlog)?;
    let addr = listeners[0].local_addr()?;

    let (inbox_senders, inboxes): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| mailbox(config.shard_queue)).unzip();
    let router = Router::new(inbox_senders);
    let presence = Arc::new(crate::presence::Presence::new());
    let user_limits = Arc::new(UserLimits::new(&config));
    let node_id = config.node_id.clone().unwrap_or_else(generated_node_id);
    let metrics = Arc::new(Metrics::new(shards, writers).with_node(&node_id, config.clustered()));
    let link = match &config.cluster_url {
        None => None,
        Some(url) => Some(crate::cluster::spawn(
            LinkSettings {
                url: url.clone(),
                node_id: node_id.clone(),
                database_url: config.database_url.clone(),
                gap_wait: Duration::from_millis(config.cluster_gap_wait_ms),
                presence: presence.clone(),
                check_every: Duration::from_millis(config.cluster_check_ms.max(10)),
                queue: config.cluster_queue,
                fill_max: config.cluster_fill_max,
                user_limits: user_limits.clone(),
            },
            router.clone(),
        )?),
    };
    let (writer_handles, writer_pool) = writer::spawn(
        writers,
        WriterSettings {
            database_url: config.database_url.clone(),
            batch_max: config.batch_max.max(1),
            batch_linger: config.batch_linger(),
            persist_timeout: config.persist_timeout(),
            queue: config.writer_queue,
            synchronous_commit: config.synchronous_commit,
            metrics: metrics.clone(),
        },
        router.clone(),
        link.as_ref().map(|l| l.committed.clone()),
    )?;

    // The database answered the migrations a moment ago: give the writers
    // a few seconds to connect, so that `ready` (and /readyz) mean it.
    let writers_deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !writer_handles.healthy() && std::time::Instant::now() < writers_deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !writer_handles.healthy() {
        warn!("writers not connected yet; starting anyway (they keep retrying)");
    }

    let config = Arc::new(config);
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::with_capacity(shards);
    let services = shard::Services {
        config: config.clone(),
        credentials: credentials.clone(),
        router: router.clone(),
        writers: writer_handles.clone(),
        metrics: metrics.clone(),
        presence: presence.clone(),
        cluster: link.as_ref().map(|l| l.handle.clone()),
        // One for the whole process: the limits hold across shards.
        user_limits: user_limits.clone(),
        pending,
        reply_budget: crate::budget::ReplyBudget::new(
            config.reply_budget_bytes,
            Duration::from_millis(config.reply_budget_wait_ms),
            metrics.replies.clone(),
        ),
    };
    let metrics_port = match config.metrics_bind {
        None => None,
        Some(bind) => {
            let (metrics, router, writers) =
                (metrics.clone(), router.clone(), writer_handles.clone());
            let render: crate::metrics_port::Render =
                Arc::new(move || metrics.render(router.inbox_depths(), writers.queue_depths()));
            Some(crate::metrics_port::spawn(
                bind,
                config.clone(),
                render,
                phase_rx.clone(),
            )?)
        }
    };
    let api = match (config.api_bind, api_keys) {
        (Some(bind), Some(keys)) => {
            let api_store =
                store::Store::new(&config.database_url, config.api_db_pool_size.max(1))?;
            let state = crate::api::ApiState {
                config: config.clone(),
                feed: crate::api::events::HeadWatch::new(
                    api_store.clone(),
                    config.feed_poll(),
                    config.feed_max_waiters,
                    metrics.clone(),
                ),
                store: api_store,
                writers: writer_handles.clone(),
                router: router.clone(),
                presence: presence.clone(),
                user_limits: user_limits.clone(),
                cluster: link.as_ref().map(|l| l.handle.clone()),
                metrics: metrics.clone(),
                keys,
            };
            Some(crate::api::spawn(bind, state, phase_rx.clone())?)
        }
        _ => None,
    };
    // The feed's retention and webhook deliverer (with or without the API).
    let feed_thread = crate::feed_jobs::spawn(config.clone(), metrics.clone(), phase_rx.clone())?;
    for (index, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
        threads.push(shard::spawn(
            ShardParts {
                index,
                listener,
                inbox,
                phase: phase_rx.clone(),
                services: services.clone(),
            },
            accept::serve,
            ready_tx.clone(),
        )?);
    }
    drop(ready_tx);
    let handle = ServerHandle {
        addr,
        phase: phase_tx,
        shards: threads,
        writers: writer_pool,
        link,
        credentials: credentials.clone(),
        metrics_addr: metrics_port.as_ref().map(|(a, _)| *a),
        metrics_thread: metrics_port.map(|(_, t)| t),
        api_addr: api.as_ref().map(|(a, _)| *a),
        api_thread: api.map(|(_, t)| t),
        feed_thread: Some(feed_thread),
    };
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                handle.shutdown();
                return Err(StartError::Shard(e));
            }
            Err(_) => {
                handle.shutdown();
                return Err(StartError::Shard("a shard thread exited".into()));
            }
        }
    }
    info!(
        %addr,
        node = %node_id,
        cluster = config.cluster_url.as_deref().unwrap_or("off"),
        shards,
        writers,
        batch_max = config.batch_max,
        batch_linger_ms = config.batch_linger_ms,
        tls = credentials.tls_enabled(),
        fd_limit,
        connection_ceiling = budget.connections_per_shard * shards,
        connections_per_shard = budget.connections_per_shard,
        pending_handshakes = budget.pending_handshakes,
        pending_per_ip = config.max_pending_handshakes_per_ip,
        fd_reserve = budget.reserve,
        metrics_bind = ?handle.metrics_addr,
        api_bind = ?handle.api_addr,
        "chat server ready"
    );
    if config.dev {
        warn!("--dev: GET /dev/token signs a token for anyone who asks; development only");
    }
    Ok(handle)
}

impl ServerHandle {
    /// The address the shards listen on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served on its own (`--metrics-bind`), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where the server API is served (`--api-bind`), if it is.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// Re-reads the TLS certificate and key and the JWT key files (what
    /// SIGHUP does). New connections get what was loaded; open connections
    /// are untouched. A part that fails to load is logged and keeps its
    /// previous value; the first failure is returned.
    pub fn reload(&self) -> Result<(), CredentialsError> {
        info!("reloading keys and certificate");
        self.credentials.reload()
    }

    /// Graceful stop: stop accepting and reading requests, let the writers
    /// commit and publish everything queued, deliver it, close every
    /// connection with 1001 `going away`, and join all threads. Blocking.
    pub fn shutdown(self) {
        let _ = self.phase.send(Phase::Draining);
        // Requests already read may still be submitting (e.g. after a user
        // check); give them a moment before the writers drain.
        std::thread::sleep(Duration::from_millis(20));
        self.writers.stop_and_join();
        if let Some(link) = self.link {
            // Delivers what the writers handed over before shards close.
            link.stop_and_join();
        }
        let _ = self.phase.send(Phase::Closing);
        for t in self.shards {
            let _ = t.join();
        }
        if let Some(t) = self.metrics_thread {
            let _ = t.join();
        }
        if let Some(t) = self.api_thread {
            let _ = t.join();
        }
        if let Some(t) = self.feed_thread {
            let _ = t.join();
        }
        info!("chat server stopped");
    }
}

/// A node name when none is configured: process id and start time.
fn generated_node_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("node-{}-{:08x}", std::process::id(), nanos)
}

/// Derives the connection ceiling and the pending-handshake cap from the
/// file limit (`fd_budget`), writes them into `config` and logs them.
fn apply_fd_budget(config: &mut Config, fd_limit: u64, shards: usize, writers: usize) -> FdBudget {
    let budget = FdBudget::derive(FdInputs {
        fd_limit,
        shards,
        db_pool_size: config.db_pool_size,
        db_read_pool_size: config.db_read_pool_size,
        writers,
        clustered: config.clustered(),
        metrics_listener: config.metrics_bind.is_some(),
        max_connections_per_shard: config.max_connections_per_shard,
        max_pending_handshakes: config.max_pending_handshakes,
    });
    if budget.clamped {
        warn!(
            requested = config.max_connections_per_shard,
            allowed = budget.connections_per_shard,
            fd_limit,
            "--max-connections-per-shard exceeds what the open-files limit allows; lowered"
        );
    }
    if budget.pending_over_budget {
        warn!(
            pending_handshakes = budget.pending_handshakes,
            available = budget.available,
            fd_limit,
            "--max-pending-handshakes exceeds what the open-files limit leaves for it; \
             descriptors may run out (accept then backs off)"
        );
    }
    if budget.connections_per_shard == 0 {
        warn!(
            fd_limit,
            reserve = budget.reserve,
            "the open-files limit leaves no room for connections"
        );
    }
    info!(
        fd_limit,
        fd_reserve = budget.reserve,
        pending_handshakes = budget.pending_handshakes,
        connections_per_shard = budget.connections_per_shard,
        derived_per_shard = budget.derived_per_shard,
        shards,
        "connection ceiling from the open-files limit"
    );
    config.max_connections_per_shard = budget.connections_per_shard;
    config.max_pending_handshakes = budget.pending_handshakes;
    budget
}

/// Raises the soft open-files limit to the hard limit; returns the result.
fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "could not raise the open-files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// Connects (retrying while the database is down) and applies migrations,
/// on a private runtime so that callers need none.
fn prepare_database(url: &str, wait: Duration) -> Result<(), StartError> {
    let url = url.to_owned();
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut client = store::connect_with_retry(&url, wait).await?;
                store::migrate(&mut client).await
            })
            .map_err(StartError::from)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(StartError::Io(std::io::Error::other(
                "the database set-up thread panicked",
            )))
        })
    })
}

/// Binds `n` listeners on `addr` with `SO_REUSEPORT`, so the kernel spreads
/// incoming connections over the shards. Port 0 picks one free port for all.
fn bind_listeners(
    addr: SocketAddr,
    n: usize,
    backlog: u32,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    if addr.port() != 0 {
        // SO_REUSEPORT would silently share the port with another running
        // server of the same user: make sure nobody holds it first.
        drop(std::net::TcpListener::bind(addr)?);
    }
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        let listener: std::net::TcpListener = socket.into();
        if addr.port() == 0 {
            addr = listener.local_addr()?;
        }
        listeners.push(listener);
    }
    Ok(listeners)
}
