//! The cluster link: one thread, its own tokio runtime, the NATS client.
//!
//! It takes committed messages from this node's writers and publishes them
//! to NATS, receives what other nodes publish on the subjects its members
//! need, and delivers both to the local shards through per-stream
//! [`Sequencer`]s, so that local and remote messages of a stream reach the
//! shards in id order with no gap and no duplicate. Gaps are filled from
//! PostgreSQL: after `gap_wait` when a message arrives before its
//! predecessor, at once when the NATS connection comes back, and by a
//! periodic comparison with the stored last ids (a lost *last* message is
//! noticed only that way).

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle as TaskHandle;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use super::sequencer::Sequencer;
use super::wire::{self, Remote};
use super::{Committed, Interest, RemoteMembership, RemoteNotice, Stream};
use crate::protocol::{encode_message, StoredMessage};
use crate::router::{Router, Sent, ShardEvent};
use crate::store::{Store, StoreError, Window};

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

/// What shards use of the link: the node's interest, and a queue for
/// room notices (typing, presence) to the other nodes. Never blocks.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    interest: Arc<Interest>,
    notices: mpsc::Sender<RemoteNotice>,
    memberships: mpsc::Sender<RemoteMembership>,
    /// The NATS client, once the link has created it.
    nats: Arc<std::sync::OnceLock<async_nats::Client>>,
    /// This node's id (breaks ties between simultaneous first connections).
    node_id: Arc<str>,
}

/// What another node answered about a user it has connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elsewhere {
    /// Since when the user has been online there (Unix microseconds).
    pub since: i64,
    /// That node's id.
    pub node: String,
}

/// How long a presence probe gathers the other nodes' answers.
const PROBE_GATHER: Duration = Duration::from_millis(100);

/// The subject every node answers presence probes on (subscribed once at
/// start, so an answer never waits for a per-user subscription).
const PROBE_SUBJECT: &str = "chat.presence.probe";

/// How long `join_ack` waits for the other nodes' online members of a room
/// (every node that has members of the room answers at once; there is no
/// telling how many will, so the wait is always this long).
pub const ONLINE_GATHER: Duration = Duration::from_millis(50);

/// Most answers one online query reads (one per node).
const ONLINE_ANSWERS_MAX: usize = 256;

impl ClusterHandle {
    /// The node's interest set, which shards keep up to date.
    pub fn interest(&self) -> &Arc<Interest> {
        &self.interest
    }

    /// Sends an ephemeral room notice to the other nodes; dropped when the
    /// link is saturated (notices are hints, never stored).
    pub fn notice(&self, notice: RemoteNotice) {
        let _ = self.notices.try_send(notice);
    }

    /// Queues a membership change for the user's connections on other
    /// nodes without waiting; gives it back when the queue is full (the
    /// caller retries from a task with [`send_membership`](Self::send_membership)).
    pub fn try_membership(&self, m: RemoteMembership) -> Result<(), RemoteMembership> {
        self.memberships.try_send(m).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
        })
    }

    /// Where else `user` is online: of the nodes that answer a probe on
    /// [`PROBE_SUBJECT`] within [`PROBE_GATHER`] (every node with a
    /// connection of the user does), the one where it came online first.
    /// Presence uses it so that a user connected to several nodes is
    /// announced online once and offline only when its last connection
    /// anywhere closes. No answer, or NATS away: `None`.
    pub async fn online_elsewhere(&self, user: crate::protocol::UserId) -> Option<Elsewhere> {
        let nats = self.nats.get()?;
        let inbox = nats.new_inbox();
        let mut answers = nats.subscribe(inbox.clone()).await.ok()?;
        nats.publish_with_reply(PROBE_SUBJECT, inbox, wire::encode_probe(user))
            .await
            .ok()?;
        let mut first: Option<Elsewhere> = None;
        let gather = async {
            while let Some(answer) = answers.next().await {
                if let Ok((since, node)) = wire::decode_probe_answer(&answer.payload) {
                    let other = Elsewhere { since, node };
                    if first
                        .as_ref()
                        .is_none_or(|f| (other.since, &other.node) < (f.since, &f.node))
                    {
                        first = Some(other);
                    }
                }
            }
        };
        let _ = tokio::time::timeout(PROBE_GATHER, gather).await;
        let _ = answers.unsubscribe().await;
        first
    }

    /// True when this node, where `user` came online at `since`, is the one
    /// to announce it, given another node's answer: the node where the user
    /// came online first (ties: the smaller node id). Both nodes compare the
    /// same pair, so when two first connections open at once on two nodes,
    /// exactly one announces.
    pub fn announces_online(&self, since: i64, other: &Elsewhere) -> bool {
        (since, &*self.node_id) < (other.since, other.node.as_str())
    }

    /// Adds to `online` (this node's online members of `room`) those online
    /// on other nodes, gathered for [`ONLINE_GATHER`]. Without a NATS
    /// connection, or if the query fails, `online` is returned as it is.
    pub async fn online_in_room(
        &self,
        room: &str,
        online: Vec<crate::protocol::UserId>,
    ) -> Vec<crate::protocol::UserId> {
        let Some(nats) = self.nats.get() else {
            return online;
        };
        let mut all: std::collections::BTreeSet<_> = online.iter().copied().collect();
        let inbox = nats.new_inbox();
        let Ok(mut answers) = nats.subscribe(inbox.clone()).await else {
            return online;
        };
        let subject = Stream::Room(Arc::from(room)).subject();
        if nats
            .publish_with_reply(subject, inbox, wire::encode_online_query(room))
            .await
            .is_err()
        {
            return online;
        }
        let gather = async {
            let mut n = 0;
            while let Some(answer) = answers.next().await {
                if let Ok(users) = wire::decode_user_list(&answer.payload) {
                    all.extend(users);
                }
                n += 1;
                if n >= ONLINE_ANSWERS_MAX {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(ONLINE_GATHER, gather).await;
        let _ = answers.unsubscribe().await;
        all.into_iter().collect()
    }

    /// Queues a membership change, waiting while the queue is full.
    pub async fn send_membership(&self, m: RemoteMembership) {
        let _ = self.memberships.send(m).await;
    }
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
    let nats = Arc::new(std::sync::OnceLock::new());
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
        handle: ClusterHandle {
            interest,
            notices: notice_tx,
            memberships: membership_tx,
            nats,
            node_id,
        },
        committed: committed_tx,
        stop,
        thread,
    })
}

/// A followed stream: its subscription and its order.
struct Followed {
    seq: Sequencer,
    forwarder: TaskHandle<()>,
}

struct Link {
    settings: LinkSettings,
    router: Router,
    store: Store,
    interest: Arc<Interest>,
    /// Where the link puts its NATS client for [`ClusterHandle::online_elsewhere`].
    nats_cell: Arc<std::sync::OnceLock<async_nats::Client>>,
    streams: HashMap<Stream, Followed>,
    /// Streams with held messages, and when their fill is due.
    fill_due: HashMap<Stream, Instant>,
    /// Compare every followed stream with PostgreSQL at the next tick.
    check_due: bool,
    /// Reconcile subscriptions with the interest at the next tick.
    reconcile_due: bool,
}

/// How often the link looks at due fills, checks and reconciliations.
const TICK: Duration = Duration::from_millis(10);

impl Link {
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
        let (publish_tx, publish_rx) = mpsc::channel::<(String, Bytes)>(queue);
        let publisher = tokio::spawn(publish_loop(nats.clone(), publish_rx));
        let prober = match nats.subscribe(PROBE_SUBJECT).await {
            Ok(probes) => Some(tokio::spawn(answer_probes(
                probes,
                nats.clone(),
                self.settings.presence.clone(),
                Arc::from(self.settings.node_id.as_str()),
            ))),
            Err(e) => {
                warn!(error = %e, "cluster link: cannot answer presence probes");
                None
            }
        };
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
                    publish(&publish_tx, &c, &mut dropped_publishes);
                    self.sequence(c, true, &nats, &remote_tx).await;
                    // Take what else is queued before waking the shards once.
                    for _ in 0..256 {
                        match committed.try_recv() {
                            Ok(c) => {
                                publish(&publish_tx, &c, &mut dropped_publishes);
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
                Some(m) = memberships.recv() => {
                    let subject = Stream::User(m.user).subject();
                    if publish_tx.try_send((subject.clone(), wire::encode_membership(&m))).is_err() {
                        // Membership must not be dropped: wait for room in the queue.
                        let _ = publish_tx.send((subject, wire::encode_membership(&m))).await;
                    }
                }
                Some(n) = notices.recv() => {
                    let subject = super::room_subject(&n.room);
                    let _ = publish_tx.try_send((subject, wire::encode_notice(&n)));
                }
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
            publish(&publish_tx, &c, &mut dropped_publishes);
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

    async fn remote(
        &mut self,
        r: Remote,
        nats: &async_nats::Client,
        remote_tx: &mpsc::Sender<Remote>,
    ) {
        match r {
            Remote::Message(c) => self.sequence(c, false, nats, remote_tx).await,
            // Answered by the subscription's forwarder; never queued.
            Remote::Probe(_) | Remote::OnlineQuery(_) => {}
            Remote::Membership(m) => {
                let event = if m.joined {
                    ShardEvent::Joined {
                        user: m.user,
                        room: m.room,
                    }
                } else {
                    ShardEvent::Left {
                        user: m.user,
                        room: m.room,
                    }
                };
                self.router.publish(event).await;
            }
            Remote::Notice(n) => {
                self.router
                    .publish(ShardEvent::Notice {
                        room: n.room,
                        except: n.except,
                        frame: n.frame,
                    })
                    .await;
            }
        }
    }

    /// Puts one committed message (local or remote) through the sequencer
    /// of each followed stream it belongs to.
    async fn sequence(
        &mut self,
        c: Committed,
        local: bool,
        nats: &async_nats::Client,
        remote_tx: &mpsc::Sender<Remote>,
    ) {
        let mut parts: Vec<(Stream, i64, i64, ShardEvent)> = Vec::with_capacity(2);
        match c.event {
            ShardEvent::Room { ref room, id, .. } => {
                let stream = Stream::Room(room.clone());
                parts.push((stream, id, c.prev[0], c.event));
            }
            ShardEvent::Users {
                users,
                id,
                frame,
                own,
                sent,
            } => {
                parts.push((
                    Stream::User(users[0]),
                    id,
                    c.prev[0],
                    ShardEvent::Users {
                        users: [users[0], users[0]],
                        id,
                        frame: frame.clone(),
                        own,
                        sent,
                    },
                ));
                if users[1] != users[0] {
                    parts.push((
                        Stream::User(users[1]),
                        id,
                        c.prev[1],
                        ShardEvent::Users {
                            users: [users[1], users[1]],
                            id,
                            frame,
                            own: None,
                            // Observed once, with the sender's stream.
                            sent: Sent::remote(),
                        },
                    ));
                }
            }
            other => {
                // Never sent to the link; deliver as it is.
                self.router.publish(other).await;
                return;
            }
        }
        for (stream, id, prev, event) in parts {
            if local && !self.streams.contains_key(&stream) && self.interest.contains(&stream) {
                // A member appeared a moment ago: follow it before ordering.
                self.reconcile(nats, remote_tx).await;
            }
            let Some(followed) = self.streams.get_mut(&stream) else {
                continue;
            };
            let ready = followed.seq.offer(id, prev, event);
            let held = followed.seq.held();
            for event in ready {
                self.router.publish(event).await;
            }
            if held == 0 {
                self.fill_due.remove(&stream);
            } else if held >= self.settings.fill_max {
                self.fill_due.insert(stream, Instant::now());
            } else {
                let at = Instant::now() + self.settings.gap_wait;
                self.fill_due.entry(stream).or_insert(at);
            }
        }
    }

    /// Follows what the shards need and stops following the rest.
    async fn reconcile(&mut self, nats: &async_nats::Client, remote_tx: &mpsc::Sender<Remote>) {
        self.reconcile_due = false;
        let wanted = self.interest.take_snapshot();
        let wanted_set: std::collections::HashSet<&Stream> = wanted.iter().map(|w| &w.0).collect();
        let gone: Vec<Stream> = self
            .streams
            .keys()
            .filter(|s| !wanted_set.contains(s))
            .cloned()
            .collect();
        for stream in gone {
            if let Some(f) = self.streams.remove(&stream) {
                // Dropping the subscriber unsubscribes.
                f.forwarder.abort();
                self.fill_due.remove(&stream);
                debug!(subject = %stream.subject(), "unsubscribed");
            }
        }
        for (stream, floor) in wanted {
            if self.streams.contains_key(&stream) {
                continue;
            }
            let last = match floor {
                Some(f) => f,
                None => match self.stored_last(&stream).await {
                    Ok(l) => l,
                    Err(e) => {
                        warn!(error = %e, "cluster link: cannot read a stream's last id; retrying");
                        self.reconcile_due = true;
                        continue;
                    }
                },
            };
            let subject = stream.subject();
            let subscriber = match nats.subscribe(subject.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, %subject, "cluster link: subscribe failed; retrying");
                    self.interest.restore_floor(&stream, floor);
                    self.reconcile_due = true;
                    continue;
                }
            };
            let forwarder = tokio::spawn(forward(
                subscriber,
                remote_tx.clone(),
                nats.clone(),
                self.settings.presence.clone(),
            ));
            debug!(%subject, last, "subscribed");
            self.streams.insert(
                stream,
                Followed {
                    seq: Sequencer::new(last),
                    forwarder,
                },
            );
            // What was published before the subscription took effect is
            // caught by the next comparison with PostgreSQL.
            self.check_due = true;
        }
    }

    async fn stored_last(&self, stream: &Stream) -> Result<i64, StoreError> {
        match stream {
            Stream::Room(r) => Ok(self
                .store
                .room_lasts(&[r])
                .await?
                .first()
                .map_or(0, |x| x.1)),
            Stream::User(u) => Ok(self.store.dm_lasts(&[*u]).await?.first().map_or(0, |x| x.1)),
        }
    }

    /// Compares every followed stream's last delivered id with the stored
    /// one; schedules a fill for those behind (after `gap_wait`, so that a
    /// local message still on its way from a writer arrives with its own copy).
    async fn check(&mut self) {
        self.check_due = false;
        let rooms: Vec<&str> = self
            .streams
            .keys()
            .filter_map(|s| match s {
                Stream::Room(r) => Some(&**r),
                Stream::User(_) => None,
            })
            .collect();
        let users: Vec<i64> = self
            .streams
            .keys()
            .filter_map(|s| match s {
                Stream::User(u) => Some(*u),
                Stream::Room(_) => None,
            })
            .collect();
        let mut behind = Vec::new();
        for chunk in rooms.chunks(self.settings.fill_max.max(1)) {
            match self.store.room_lasts(chunk).await {
                Ok(lasts) => behind.extend(
                    lasts
                        .into_iter()
                        .map(|(r, last)| (Stream::Room(Arc::from(r)), last)),
                ),
                Err(e) => {
                    warn!(error = %e, "cluster link: check failed");
                    self.check_due = true;
                    return;
                }
            }
        }
        for chunk in users.chunks(self.settings.fill_max.max(1)) {
            match self.store.dm_lasts(chunk).await {
                Ok(lasts) => behind.extend(lasts.into_iter().map(|(u, l)| (Stream::User(u), l))),
                Err(e) => {
                    warn!(error = %e, "cluster link: check failed");
                    self.check_due = true;
                    return;
                }
            }
        }
        let at = Instant::now() + self.settings.gap_wait;
        for (stream, stored) in behind {
            if let Some(f) = self.streams.get(&stream) {
                if stored > f.seq.last() {
                    self.fill_due.entry(stream).or_insert(at);
                }
            }
        }
    }

    async fn run_due_fills(&mut self) {
        let now = Instant::now();
        let due: Vec<Stream> = self
            .fill_due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for stream in due {
            self.fill_due.remove(&stream);
            if let Err(e) = self.fill(&stream).await {
                warn!(error = %e, subject = %stream.subject(), "cluster link: fill failed; retrying");
                self.fill_due
                    .insert(stream, Instant::now() + self.settings.gap_wait.max(TICK));
            }
        }
    }

    /// Reads every stored message of the stream after its last delivered
    /// id (in pages of `fill_max`) and delivers them in order.
    async fn fill(&mut self, stream: &Stream) -> Result<(), StoreError> {
        let limit = i64::try_from(self.settings.fill_max.max(1)).unwrap_or(i64::MAX);
        loop {
            let Some(last) = self.streams.get(stream).map(|f| f.seq.last()) else {
                return Ok(());
            };
            let stored: Vec<StoredMessage> = match stream {
                Stream::Room(room) => {
                    self.store
                        .room_history(
                            room,
                            Window {
                                limit,
                                before: None,
                                after: Some(last),
                            },
                        )
                        .await?
                }
                Stream::User(u) => self.store.dm_since(*u, last, limit).await?,
            };
            let full = stored.len() as i64 >= limit;
            let events: Vec<(i64, ShardEvent)> = stored
                .iter()
                .map(|m| (m.id, stored_event(stream, m)))
                .collect();
            let Some(f) = self.streams.get_mut(stream) else {
                return Ok(());
            };
            let n = events.len();
            let ready = f.seq.fill(events);
            let held = f.seq.held();
            debug!(subject = %stream.subject(), read = n, delivered = ready.len(), "filled");
            for event in ready {
                self.router.publish(event).await;
            }
            self.router.flush();
            if !full {
                if held > 0 {
                    // Held messages newer than what is stored cannot be:
                    // they were committed. Look again shortly.
                    self.fill_due
                        .insert(stream.clone(), Instant::now() + self.settings.gap_wait);
                }
                return Ok(());
            }
        }
    }
}

/// The shard event delivering a stored message to one stream's members.
fn stored_event(stream: &Stream, m: &StoredMessage) -> ShardEvent {
    let frame = encode_message(m);
    match stream {
        Stream::Room(room) => ShardEvent::Room {
            room: room.clone(),
            id: m.id,
            frame,
            own: None,
            sent: Sent::remote(),
        },
        Stream::User(u) => ShardEvent::Users {
            users: [*u, *u],
            id: m.id,
            frame,
            own: None,
            sent: Sent::remote(),
        },
    }
}

/// Queues a committed message for NATS: on its room's subject, or on both
/// users' subjects. A full queue drops it (other nodes fill it from
/// PostgreSQL at their next check); the writer is never held up by NATS.
fn publish(queue: &mpsc::Sender<(String, Bytes)>, c: &Committed, dropped: &mut u64) {
    let Some(payload) = wire::encode_committed(c) else {
        return;
    };
    let mut subjects: Vec<String> = Vec::with_capacity(2);
    match &c.event {
        ShardEvent::Room { room, .. } => subjects.push(super::room_subject(room)),
        ShardEvent::Users { users, .. } => {
            subjects.push(Stream::User(users[0]).subject());
            if users[1] != users[0] {
                subjects.push(Stream::User(users[1]).subject());
            }
        }
        _ => {}
    }
    for subject in subjects {
        if queue.try_send((subject, payload.clone())).is_err() {
            *dropped += 1;
        }
    }
}

/// Answers presence probes: since when the user has been online on this
/// node, and its id (nothing when the user has no connection here).
async fn answer_probes(
    mut probes: async_nats::Subscriber,
    nats: async_nats::Client,
    presence: Arc<crate::presence::Presence>,
    node_id: Arc<str>,
) {
    while let Some(message) = probes.next().await {
        let (Ok(Remote::Probe(user)), Some(reply)) = (wire::decode(message.payload), message.reply)
        else {
            continue;
        };
        if let Some(since) = presence.online_since(user) {
            let _ = nats
                .publish(reply, wire::encode_probe_answer(since, &node_id))
                .await;
        }
    }
}

async fn publish_loop(nats: async_nats::Client, mut queue: mpsc::Receiver<(String, Bytes)>) {
    while let Some((subject, payload)) = queue.recv().await {
        if let Err(e) = nats.publish(subject, payload).await {
            debug!(error = %e, "NATS publish failed");
        }
    }
}

/// Decodes what one subscription receives and hands it to the link.
async fn forward(
    mut subscriber: async_nats::Subscriber,
    to: mpsc::Sender<Remote>,
    nats: async_nats::Client,
    presence: Arc<crate::presence::Presence>,
) {
    while let Some(message) = subscriber.next().await {
        match wire::decode(message.payload) {
            Ok(Remote::OnlineQuery(room)) => {
                if let Some(reply) = message.reply {
                    let online = presence.online_in(&room, usize::MAX).unwrap_or_default();
                    if !online.is_empty() {
                        let _ = nats.publish(reply, wire::encode_user_list(&online)).await;
                    }
                }
            }
            Ok(remote) => {
                if to.send(remote).await.is_err() {
                    return;
                }
            }
            Err(e) => warn!(error = %e, subject = %message.subject, "cluster message refused"),
        }
    }
}
