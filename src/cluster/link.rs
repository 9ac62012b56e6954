//! The cluster link: one thread, its own tokio runtime, the NATS client.
//!
//! It takes committed messages from this node's writers and publishes them
//! to NATS, receives what other nodes publish on the subjects its members
//! need, and delivers both to the local shards through per-stream
//! [`Sequencer`](super::sequencer::Sequencer)s, so that local and remote
//! messages of a stream reach the shards in id order with no gap and no
//! duplicate. Gaps are filled from PostgreSQL: after `gap_wait` when a
//! message arrives before its predecessor, at once when the NATS connection
//! comes back, and by a periodic comparison with the stored last ids (a
//! lost *last* message is noticed only that way).
//!
//! This file holds the thread ([`spawn`], [`ClusterLink`]) and the link's
//! state and main loop (`Link::run`), which connects to NATS and hands each
//! thing it waits for to the module that deals with it: following streams
//! and ordering them (`follow`), fills (`fill`), traffic with the other
//! nodes (`remote`). What shards call is in [`handle`](super::handle).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use super::follow::Followed;
use super::remote::{self, Publish};
use super::wire::Remote;
use super::{Committed, Interest, RemoteMembership, RemoteNotice, Stream};
use crate::router::Router;
use crate::store::{Store, StoreError};

pub use super::handle::{ClusterHandle, Elsewhere, ONLINE_GATHER};

/// Cluster link settings (see `Config`).
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// NATS URL.
    pub url: String,
    /// This node's name.
    pub node_id: String,
    /// PostgreSQL, for fills.
    pub database_url: String,
    /// How long a held message waits for its predecessors before a fill.
    pub gap_wait: Duration,
    /// Who is online on this node (answers other nodes' online queries).
    pub presence: Arc<crate::presence::Presence>,
    /// How often followed streams are compared with PostgreSQL.
    pub check_every: Duration,
    /// Capacity of the link's queues (writers, NATS, shards' notices, publishes).
    pub queue: usize,
    /// Most held messages per stream before a fill; rows per fill query.
    pub fill_max: usize,
    /// Issue 15: connections per user on this node (answers other nodes'
    /// connections queries).
    pub user_limits: Arc<crate::userlimits::UserLimits>,
}

/// Why the cluster link could not start.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The thread or its runtime could not be created.
    #[error("cluster link: {0}")]
    Io(#[from] std::io::Error),
    /// The database URL is invalid.
    #[error("cluster link: {0}")]
    Store(#[from] StoreError),
}

/// The running link: its handle for shards, its queue for writers, and
/// the thread.
#[derive(Debug)]
pub struct ClusterLink {
    /// For shards.
    pub handle: ClusterHandle,
    /// For writers: committed messages, in each writer's commit order.
    pub committed: mpsc::Sender<Committed>,
    stop: Arc<Notify>,
    thread: JoinHandle<()>,
}

impl ClusterLink {
    /// Delivers what the writers handed over, then stops the thread.
    /// Call after the writers stopped.
    pub fn stop_and_join(self) {
        let ClusterLink {
            handle,
            committed,
            stop,
            thread,
        } = self;
        drop((handle, committed));
        stop.notify_one();
        let _ = thread.join();
    }
}

/// Starts the link thread.
pub fn spawn(settings: LinkSettings, router: Router) -> Result<ClusterLink, LinkError> {
    let queue = settings.queue.max(1);
    let (committed_tx, committed_rx) = mpsc::channel(queue);
    let (notice_tx, notice_rx) = mpsc::channel(queue);
    let (membership_tx, membership_rx) = mpsc::channel(queue);
    let interest = Arc::new(Interest::new());
    let nats = Arc::new(OnceLock::new());
    let stop = Arc::new(Notify::new());
    let store = Store::new(&settings.database_url, 2)?;
    let node_id: Arc<str> = Arc::from(settings.node_id.as_str());
    let link = Link {
        settings,
        router,
        store,
        interest: interest.clone(),
        nats_cell: nats.clone(),
        streams: HashMap::new(),
        fill_due: HashMap::new(),
        check_due: true,
        reconcile_due: true,
    };
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("cluster-link".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "cluster link: no runtime");
                    return;
                }
            };
            let span = info_span!("cluster", node = %link.settings.node_id);
            rt.block_on(
                link.run(committed_rx, notice_rx, membership_rx, stop2)
                    .instrument(span),
            );
        })?;
    Ok(ClusterLink {
        handle: ClusterHandle::new(interest, notice_tx, membership_tx, nats, node_id),
        committed: committed_tx,
        stop,
        thread,
    })
}

/// The link's state, owned by its thread. Its methods are spread over the
/// modules of its concerns: `follow`, `fill` and `remote`.
pub(super) struct Link {
    pub(super) settings: LinkSettings,
    pub(super) router: Router,
    pub(super) store: Store,
    pub(super) interest: Arc<Interest>,
    /// Where the link puts its NATS client for [`ClusterHandle::online_elsewhere`].
    nats_cell: Arc<OnceLock<async_nats::Client>>,
    /// The followed streams: what the shards' interest asks for.
    pub(super) streams: HashMap<Stream, Followed>,
    /// Streams with held messages, and when their fill is due.
    pub(super) fill_due: HashMap<Stream, Instant>,
    /// Compare every followed stream with PostgreSQL at the next tick.
    pub(super) check_due: bool,
    /// Reconcile subscriptions with the interest at the next tick.
    pub(super) reconcile_due: bool,
}

/// How often the link looks at due fills, checks and reconciliations.
pub(super) const TICK: Duration = Duration::from_millis(10);

impl Link {
    /// Connects to NATS, then serves until `stop`: each thing the link
    /// waits for goes to the module that deals with it. At the end, delivers
    /// and publishes what the writers handed over.
    async fn run(
        mut self,
        mut committed: mpsc::Receiver<Committed>,
        mut notices: mpsc::Receiver<RemoteNotice>,
        mut memberships: mpsc::Receiver<RemoteMembership>,
        stop: Arc<Notify>,
    ) {
        let queue = self.settings.queue.max(1);
        let (events_tx, mut events) = mpsc::channel::<async_nats::Event>(64);
        let options = async_nats::ConnectOptions::new()
            .name(format!("chat_server {}", self.settings.node_id))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .subscription_capacity(queue)
            .event_callback(move |event| {
                let tx = events_tx.clone();
                async move {
                    let _ = tx.try_send(event);
                }
            });
        let nats = match options.connect(self.settings.url.as_str()).await {
            Ok(c) => c,
            Err(e) => {
                // Only a malformed URL gets here (connecting is retried).
                warn!(error = %e, "cluster link: cannot use the NATS URL; running without it");
                return self.run_without_nats(committed, stop).await;
            }
        };
        info!(url = %self.settings.url, "cluster link started");
        let _ = self.nats_cell.set(nats.clone());
        let (remote_tx, mut remote) = mpsc::channel::<Remote>(queue);
        let (publish_tx, publish_rx) = mpsc::channel::<Publish>(queue);
        let publisher = tokio::spawn(remote::publish_loop(nats.clone(), publish_rx));
        let prober = remote::spawn_prober(
            &nats,
            remote::Prober {
                presence: self.settings.presence.clone(),
                node_id: Arc::from(self.settings.node_id.as_str()),
                user_limits: self.settings.user_limits.clone(),
                router: self.router.clone(),
            },
        )
        .await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_check = Instant::now();
        let mut dropped_publishes = 0u64;
        loop {
            // Unbiased: a stream of local commits must not starve NATS.
            tokio::select! {
                () = stop.notified() => break,
                () = self.interest.changed() => self.reconcile(&nats, &remote_tx).await,
                Some(c) = committed.recv() => {
                    remote::publish(&publish_tx, &c, &mut dropped_publishes);
                    self.sequence(c, true, &nats, &remote_tx).await;
                    // Take what else is queued before waking the shards once.
                    for _ in 0..256 {
                        match committed.try_recv() {
                            Ok(c) => {
                                remote::publish(&publish_tx, &c, &mut dropped_publishes);
                                self.sequence(c, true, &nats, &remote_tx).await;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Some(r) = remote.recv() => {
                    self.remote(r, &nats, &remote_tx).await;
                    for _ in 0..256 {
                        match remote.try_recv() {
                            Ok(r) => self.remote(r, &nats, &remote_tx).await,
                            Err(_) => break,
                        }
                    }
                }
                Some(m) = memberships.recv() => remote::publish_membership(&publish_tx, &m).await,
                Some(n) = notices.recv() => remote::publish_notice(&publish_tx, &n),
                Some(event) = events.recv() => {
                    match event {
                        async_nats::Event::Connected => {
                            info!("NATS connected: filling every followed stream");
                            self.check_due = true;
                        }
                        async_nats::Event::Disconnected => warn!("NATS disconnected"),
                        other => debug!(event = %other, "NATS event"),
                    }
                }
                _ = tick.tick() => {
                    if self.reconcile_due {
                        self.reconcile(&nats, &remote_tx).await;
                    }
                    if last_check.elapsed() >= self.settings.check_every {
                        self.check_due = true;
                    }
                    if self.check_due {
                        last_check = Instant::now();
                        self.check().await;
                    }
                    self.run_due_fills().await;
                }
            }
            self.router.flush();
        }
        // Shutdown: the writers have stopped; deliver what they handed over.
        while let Ok(c) = committed.try_recv() {
            remote::publish(&publish_tx, &c, &mut dropped_publishes);
            self.sequence(c, true, &nats, &remote_tx).await;
        }
        self.router.flush();
        drop(publish_tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), publisher).await;
        if let Some(prober) = prober {
            prober.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), nats.flush()).await;
        for (_, f) in self.streams.drain() {
            f.forwarder.abort();
        }
        if dropped_publishes > 0 {
            warn!(
                dropped_publishes,
                "NATS publishes dropped (other nodes filled them from PostgreSQL)"
            );
        }
        info!("cluster link stopped");
    }

    /// A link whose URL was refused: local delivery still goes on.
    async fn run_without_nats(
        mut self,
        mut committed: mpsc::Receiver<Committed>,
        stop: Arc<Notify>,
    ) {
        loop {
            tokio::select! {
                () = stop.notified() => break,
                Some(c) = committed.recv() => {
                    self.router.publish(c.event).await;
                    self.router.flush();
                }
            }
        }
        while let Ok(c) = committed.try_recv() {
            self.router.publish(c.event).await;
        }
        self.router.flush();
        self.streams.clear();
    }
}
