//! A shard: one OS thread running one single-threaded tokio runtime that
//! owns a listening socket (`SO_REUSEPORT`), every connection it accepts,
//! and the local indexes used to deliver to them.
//!
//! # Layout
//!
//! - this file: the thread's life ([`spawn`]: accept loop, draining,
//!   closing), its context [`Shard`] (what the shard's tasks share, in an
//!   `Rc`), and its inbox ([`Shard::apply`]: events from writers, the cluster
//!   link and other shards);
//! - [`registry`]: local connections, users and room subscriptions;
//! - [`outbox`]: one connection's bounded queue and its recovery cursors;
//! - [`flush`]: direct writes of queued frames to idle connections' sockets,
//!   one flusher wake-up per delivery pass;
//! - [`announce`]: what this shard tells other shards and nodes (joins,
//!   leaves, ephemeral notices), never waiting on them;
//! - [`presence`]: online/offline announcements and `join_ack`'s online
//!   list, with the cluster rule for who announces;
//! - [`presence_batch`]: the per-room presence batching windows;
//! - [`users`]: the bounded cache of users known to exist.
//!
//! The shard does not know what a connection does: [`spawn`] is given the
//! function that serves an accepted socket (`accept::serve`), so `shard`
//! imports neither `accept`, `connection` nor `session`.
//!
//! What a shard shares with other threads: its inbox and the writer
//! queues (bounded crossbeam mailboxes), the counters (atomics, one writer
//! each), and five mutexes off the delivery path (the reply budget's
//! semaphore, once per page of a reply; `presence::Presence`, the
//! database pools, the per-address pending-handshake counts
//! (`pending`), `userlimits` at connection open and close, in cluster
//! mode `cluster::Interest`); see
//! `docs/ARCHITECTURE.md`, "Invariants".

pub mod announce;
pub mod backoff;
pub mod flush;
pub mod outbox;
pub mod presence;
pub mod presence_batch;
pub mod registry;
pub mod users;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::LocalSet;
use tracing::{debug, info, warn};

use crate::budget::ReplyBudget;
use crate::cluster::link::ClusterHandle;
use crate::config::Config;
use crate::credentials::Credentials;
use crate::mesh::Mailbox;
use crate::metrics::{Metrics, ShardMetrics};
use crate::pending::PendingHandshakes;
use crate::presence::Presence;
use crate::router::{ConnId, OwnCopy, Router, Sent, ShardEvent};
use crate::store::writer::Writers;
use crate::store::{Store, StoreError};
use crate::userlimits::UserLimits;
use crate::web::Readiness;
use backoff::AcceptBackoff;
use flush::Flusher;
use outbox::OutboxLimits;
use presence_batch::PresenceBatches;
use registry::Registry;
use users::KnownUsers;

/// Where the server is in its life; shards watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepting and serving.
    Running,
    /// Not accepting, not reading new requests; still delivering.
    Draining,
    /// Deliver what is left, close every connection with 1001, exit.
    Closing,
}

/// Everything a shard's tasks share. Lives in an `Rc` on the shard thread.
pub struct Shard {
    /// This shard's index.
    pub index: usize,
    /// Server settings.
    pub config: Arc<Config>,
    /// Token verification keys and the TLS certificate (reloadable).
    pub credentials: Arc<Credentials>,
    /// This shard's database pool.
    pub store: Store,
    /// Submission side of the writer queues.
    pub writers: Writers,
    /// Fan-out to shards.
    pub router: Router,
    /// Local connections, users and room subscriptions.
    pub registry: RefCell<Registry>,
    /// Counters of every shard and writer; this shard writes only
    /// [`metrics()`](Self::metrics).
    pub all_metrics: Arc<Metrics>,
    /// Who is online on any shard; typing throttle.
    pub presence: Arc<Presence>,
    /// Cluster mode: the node's interest and the notice queue to other nodes.
    pub cluster: Option<ClusterHandle>,
    /// Users known to exist, with the username last upserted from a token.
    pub known_users: RefCell<KnownUsers>,
    /// Bounds of every outbox on this shard.
    pub outbox_limits: OutboxLimits,
    /// Limits per user across all shards (connections, message rate).
    pub user_limits: Arc<UserLimits>,
    /// Handshakes in progress in the whole process and per address.
    pub pending: Arc<PendingHandshakes>,
    /// The server-wide budget of reply bytes in flight (shared by every shard).
    pub reply_budget: Arc<ReplyBudget>,
    /// This shard's presence batching windows, per room (issue 16).
    pub presence_batches: RefCell<PresenceBatches>,
    /// Connections due for a direct write after this pass (issue 16).
    pub flusher: Rc<Flusher>,
    next_conn: Cell<ConnId>,
    draining: Cell<bool>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// What every shard shares with the rest of the server: the parts of a
/// [`Shard`] that are not its own.
#[derive(Clone)]
pub struct Services {
    /// Settings.
    pub config: Arc<Config>,
    /// Token verification keys and the TLS certificate (reloadable).
    pub credentials: Arc<Credentials>,
    /// Fan-out to shards.
    pub router: Router,
    /// Writer queues.
    pub writers: Writers,
    /// Counters of every shard and writer (a shard writes its own block).
    pub metrics: Arc<Metrics>,
    /// Who is online, shared by all shards.
    pub presence: Arc<Presence>,
    /// Cluster mode: the link's handle.
    pub cluster: Option<ClusterHandle>,
    /// Limits per user across all shards (connections, message rate).
    pub user_limits: Arc<UserLimits>,
    /// Handshakes in progress, shared by all shards.
    pub pending: Arc<PendingHandshakes>,
    /// The server-wide budget of reply bytes in flight.
    pub reply_budget: Arc<ReplyBudget>,
}

/// What a shard thread is started with.
pub struct ShardParts {
    /// Index of the shard.
    pub index: usize,
    /// The shard's bound, non-blocking listener.
    pub listener: std::net::TcpListener,
    /// The shard's inbox.
    pub inbox: Mailbox<ShardEvent>,
    /// Server phase.
    pub phase: watch::Receiver<Phase>,
    /// What the shard shares with the rest of the server.
    pub services: Services,
}

impl Shard {
    /// The context of shard `index`. Builds the shard's database pool
    /// (which connects lazily: nothing here touches the network).
    pub fn new(index: usize, services: Services) -> Result<Shard, StoreError> {
        let Services {
            config,
            credentials,
            router,
            writers,
            metrics,
            presence,
            cluster,
            user_limits,
            pending,
            reply_budget,
        } = services;
        let store = Store::with_read_pool(
            &config.database_url,
            config.db_pool_size,
            config.db_read_pool_size,
        )?;
        let outbox_limits = OutboxLimits::from_config(&config);
        let interest = cluster.as_ref().map(|c| c.interest().clone());
        Ok(Shard {
            index,
            store,
            writers,
            router,
            registry: RefCell::new(Registry::new(outbox_limits).with_interest(interest)),
            all_metrics: metrics,
            presence,
            cluster,
            known_users: RefCell::new(KnownUsers::default()),
            outbox_limits,
            user_limits,
            pending,
            reply_budget,
            presence_batches: RefCell::new(PresenceBatches::new(
                config.presence_batch(),
                config.presence_max_members,
            )),
            flusher: Rc::new(Flusher::default()),
            next_conn: Cell::new(0),
            draining: Cell::new(false),
            credentials,
            config,
        })
    }

    /// True once the server stopped taking new requests.
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// The flag behind [`draining`](Self::draining), for a connection to
    /// watch without holding the whole shard.
    pub fn draining_flag(&self) -> &Cell<bool> {
        &self.draining
    }

    /// A fresh id for a connection of this shard.
    pub fn next_conn_id(&self) -> ConnId {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        id
    }

    /// This shard's counters (written by this thread only).
    #[inline]
    pub fn metrics(&self) -> &ShardMetrics {
        self.all_metrics.shard(self.index)
    }

    /// What `/readyz` reports: not draining, every writer connected and
    /// committing, and this shard's pool reaching the database.
    pub async fn readiness(&self) -> Readiness {
        if self.draining.get() {
            Readiness::ShuttingDown
        } else if !self.writers.healthy() {
            Readiness::WritersDown
        } else if self.store.ping(Duration::from_secs(2)).await {
            Readiness::Ready
        } else {
            Readiness::DatabaseDown
        }
    }

    /// The metrics page: every counter, with the queue depths read now.
    pub fn render_metrics(&self) -> String {
        self.all_metrics
            .render(self.router.inbox_depths(), self.writers.queue_depths())
    }

    /// On the sender's shard, records how long the message took from its
    /// arrival to being queued on its sender's (and local recipients')
    /// connections: one clock read per message, on one shard.
    #[inline]
    fn record_delivery_latency(&self, sent: Sent) {
        if sent.shard == self.index {
            self.metrics()
                .delivery_seconds
                .observe_duration(sent.at.elapsed());
        }
    }

    /// The sender's own copy of a message, if its connection is on this shard.
    #[inline]
    fn own_copy<'a>(&self, own: &'a Option<Arc<OwnCopy>>) -> Option<&'a OwnCopy> {
        own.as_deref().filter(|o| o.origin.shard == self.index)
    }

    /// Applies one inbox event to the local indexes.
    pub fn apply(self: &Rc<Self>, event: ShardEvent) {
        if let ShardEvent::Presence {
            room,
            user,
            username,
            online,
        } = event
        {
            self.batch_presence(&room, user, &username, online);
            return;
        }
        let mut registry = self.registry.borrow_mut();
        match event {
            ShardEvent::Room {
                room,
                id,
                frame,
                own,
                sent,
                kick,
            } => {
                registry.deliver_room(&room, id, &frame, self.own_copy(&own));
                self.record_delivery_latency(sent);
                // Issue 14: a kick or ban is ordered in the room's stream:
                // the user's connections here got it as their last frame
                // of the room and follow the room no longer, before this
                // inbox's next event (a higher id) is applied.
                if let Some(user) = kick {
                    if registry.leave(user, &room) {
                        self.presence.left(user, &room);
                    }
                }
            }
            ShardEvent::Users {
                users,
                id,
                frame,
                own,
                sent,
            } => {
                registry.deliver_users(users, id, &frame, self.own_copy(&own));
                self.record_delivery_latency(sent);
            }
            ShardEvent::Conn { conn, frame } => registry.deliver_conn(conn, frame),
            ShardEvent::Joined { user, room } => {
                registry.join(user, room);
            }
            ShardEvent::Left { user, room } => {
                registry.leave(user, &room);
            }
            ShardEvent::Notice {
                room,
                except,
                frame,
            } => registry.deliver_notice(&room, except, &frame),
            ShardEvent::Member {
                room,
                user,
                mute,
                frame,
                audience,
                skip,
            } => {
                let skip = skip.filter(|o| o.shard == self.index).map(|o| o.conn);
                registry.member_event(&room, user, mute, frame.as_ref(), audience, skip);
            }
            ShardEvent::Disconnect { user } => {
                // The next handshake reads the user's row (and its block).
                self.known_users.borrow_mut().forget(user);
                registry.disconnect_user(user);
            }
            // Handled above, before the registry is borrowed.
            ShardEvent::Presence { .. } => {}
        }
    }
}

/// Starts the shard thread; `ready` receives `Ok` once it accepts. Each
/// accepted socket is handed to `serve` in a task of its own.
pub fn spawn<F, Fut>(
    parts: ShardParts,
    serve: F,
    ready: std::sync::mpsc::Sender<Result<usize, String>>,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: Fn(Rc<Shard>, TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    std::thread::Builder::new()
        .name(format!("shard-{}", parts.index))
        .spawn(move || {
            let index = parts.index;
            if parts.services.config.pin_cores {
                pin_to_core(index);
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .event_interval(parts.services.config.event_interval)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(format!("shard {index}: runtime: {e}")));
                    return;
                }
            };
            let local = LocalSet::new();
            local.block_on(&rt, run(parts, serve, ready));
        })
}

async fn run<F, Fut>(
    parts: ShardParts,
    serve: F,
    ready: std::sync::mpsc::Sender<Result<usize, String>>,
) where
    F: Fn(Rc<Shard>, TcpStream) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let ShardParts {
        index,
        listener,
        inbox,
        mut phase,
        services,
    } = parts;
    let setup = TcpListener::from_std(listener)
        .map_err(|e| e.to_string())
        .and_then(|l| Ok((l, Shard::new(index, services).map_err(|e| e.to_string())?)));
    let (listener, shard) = match setup {
        Ok((listener, shard)) => (listener, Rc::new(shard)),
        Err(e) => {
            let _ = ready.send(Err(format!("shard {index}: {e}")));
            return;
        }
    };
    let inbox = Rc::new(inbox);
    let inbox_task = tokio::task::spawn_local(drain_inbox(shard.clone(), inbox.clone()));
    let flusher = shard.clone();
    // Lives as long as the shard's runtime (its list empties when idle).
    tokio::task::spawn_local(async move {
        flusher
            .flusher
            .run(flusher.metrics(), flusher.outbox_limits)
            .await
    });
    let _ = ready.send(Ok(index));
    debug!(shard = index, "shard accepting");

    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    backoff.succeeded();
                    tokio::task::spawn_local(serve(shard.clone(), stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and
                    // log at a bounded rate.
                    shard.metrics().accept_errors.inc();
                    let failure = backoff.failed(std::time::Instant::now());
                    if let Some(suppressed) = failure.log {
                        warn!(shard = index, error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(failure.delay).await;
                }
            },
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() != Phase::Running {
                    break;
                }
            }
        }
    }
    drop(listener);
    shard.draining.set(true);
    for conn in shard.registry.borrow().connections() {
        conn.nudge();
    }
    while *phase.borrow() != Phase::Closing {
        if phase.changed().await.is_err() {
            break;
        }
    }
    // Writers have stopped: whatever they committed is in the inbox.
    inbox_task.abort();
    while let Some(event) = inbox.try_pop() {
        shard.apply(event);
    }
    for conn in shard.registry.borrow().connections() {
        conn.go_away();
    }
    let deadline = tokio::time::Instant::now() + shard.config.shutdown_timeout();
    while shard.registry.borrow().connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    info!(
        shard = index,
        left = shard.registry.borrow().connection_count(),
        "shard stopped"
    );
}

/// Pins the current thread to core `index` (modulo the cores there are).
fn pin_to_core(index: usize) {
    match core_affinity::get_core_ids() {
        Some(cores) if !cores.is_empty() => {
            let core = cores[index % cores.len()];
            if !core_affinity::set_for_current(core) {
                warn!(shard = index, "could not pin shard to core {}", core.id);
            }
        }
        _ => warn!(shard = index, "core ids unavailable; shard not pinned"),
    }
}

/// Applies inbox events as they arrive, yielding now and then so that
/// connections get to write what was queued for them.
async fn drain_inbox(shard: Rc<Shard>, inbox: Rc<Mailbox<ShardEvent>>) {
    // Small enough that a committed batch does not pile up in outboxes
    // before their connections get to write: a reader that keeps up never
    // looks like a slow consumer.
    const BURST: usize = 64;
    loop {
        inbox.rung().await;
        let mut n = 0;
        while let Some(event) = inbox.try_pop() {
            shard.apply(event);
            n += 1;
            if n % BURST == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A real [`Shard`] context for unit tests, without threads, sockets or
    //! a database: its pool never connects unless a test awaits a query.

    use super::*;
    use crate::mesh::mailbox;

    /// A shard context with `config`, its inbox receiver, and the receiver
    /// of the one writer queue.
    pub(crate) fn shard(
        config: Config,
    ) -> (
        Rc<Shard>,
        Mailbox<ShardEvent>,
        Mailbox<crate::store::writer::PersistRequest>,
    ) {
        let (inbox_tx, inbox) = mailbox(1024);
        let (writers, queue) = Writers::for_tests(1024);
        let credentials = Arc::new(Credentials::load(&config).expect("test keys"));
        let metrics = Arc::new(Metrics::new(1, 1));
        let reply_budget = ReplyBudget::new(
            config.reply_budget_bytes,
            Duration::from_millis(config.reply_budget_wait_ms),
            metrics.replies.clone(),
        );
        let services = Services {
            user_limits: Arc::new(UserLimits::new(&config)),
            config: Arc::new(config),
            credentials,
            router: Router::new(vec![inbox_tx]),
            writers,
            metrics,
            presence: Arc::new(Presence::new()),
            cluster: None,
            pending: Arc::new(PendingHandshakes::new(1024, 64)),
            reply_budget,
        };
        let shard = Shard::new(0, services).expect("test shard");
        (Rc::new(shard), inbox, queue)
    }

    /// A configuration for unit tests (no database is contacted).
    pub(crate) fn config() -> Config {
        let mut config = Config::for_tests(
            "postgres://test@127.0.0.1:1/none",
            "unit-test-secret-unit-test-secret",
            "127.0.0.1:0".parse().expect("addr"),
        );
        // What `server::start` would derive from the file limit.
        config.max_connections_per_shard = 10_000;
        config
    }
}
