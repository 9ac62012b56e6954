//! A shard: one OS thread running one single-threaded tokio runtime that
//! owns a listening socket (`SO_REUSEPORT`), every connection it accepts,
//! and the local indexes used to deliver to them.
//!
//! Nothing here is shared with another thread except through the shard's
//! inbox (events from writers and other shards) and the writer queues.

pub mod outbox;
pub mod registry;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::LocalSet;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, debug_span, info, warn, Instrument};

use crate::cluster::link::ClusterHandle;
use crate::cluster::{RemoteMembership, RemoteNotice};
use crate::config::Config;
use crate::connection;
use crate::credentials::Credentials;
use crate::handshake::{
    read_upgrade, refuse, switching_protocols, HandshakeError, PlainRequest, Probe,
};
use crate::mesh::Mailbox;
use crate::metrics::{Metrics, Refusal, ShardMetrics};
use crate::presence::Presence;
use crate::protocol::{encode_presence, Frame, UserId};
use crate::router::{ConnId, Origin, Router, Sent, ShardEvent};
use crate::session::Session;
use crate::store::writer::Writers;
use crate::store::{Store, StoreError};
use crate::web;
use outbox::{Outbox, OutboxLimits};
use registry::Registry;

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

/// Most entries in a shard's cache of known users before it is reset.
const USER_CACHE_MAX: usize = 100_000;

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
    /// Users known to exist, with the username last upserted from a token
    /// (`None`: known only to exist). Bounded by [`USER_CACHE_MAX`].
    known_users: RefCell<HashMap<UserId, Option<Box<str>>>>,
    next_conn: Cell<ConnId>,
    draining: Cell<bool>,
    ws_config: WebSocketConfig,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// What a shard thread is started with.
pub struct ShardParts {
    /// Index of the shard.
    pub index: usize,
    /// Settings.
    pub config: Arc<Config>,
    /// Token verification keys and the TLS certificate (reloadable).
    pub credentials: Arc<Credentials>,
    /// The shard's bound, non-blocking listener.
    pub listener: std::net::TcpListener,
    /// The shard's inbox.
    pub inbox: Mailbox<ShardEvent>,
    /// Fan-out to shards.
    pub router: Router,
    /// Writer queues.
    pub writers: Writers,
    /// Server phase.
    pub phase: watch::Receiver<Phase>,
    /// Counters of every shard and writer (this shard writes its own block).
    pub metrics: Arc<Metrics>,
    /// Who is online, shared by all shards.
    pub presence: Arc<Presence>,
    /// Cluster mode: the link's handle.
    pub cluster: Option<ClusterHandle>,
}

/// Starts the shard thread; `ready` receives `Ok` once it accepts.
pub fn spawn(
    parts: ShardParts,
    ready: std::sync::mpsc::Sender<Result<usize, String>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("shard-{}", parts.index))
        .spawn(move || {
            let index = parts.index;
            if parts.config.pin_cores {
                pin_to_core(index);
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .event_interval(parts.config.event_interval)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(format!("shard {index}: runtime: {e}")));
                    return;
                }
            };
            let local = LocalSet::new();
            local.block_on(&rt, run(parts, ready));
        })
}

async fn run(parts: ShardParts, ready: std::sync::mpsc::Sender<Result<usize, String>>) {
    let ShardParts {
        index,
        config,
        credentials,
        listener,
        inbox,
        router,
        writers,
        mut phase,
        metrics,
        presence,
        cluster,
    } = parts;
    let setup = (|| {
        let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        let store =
            Store::new(&config.database_url, config.db_pool_size).map_err(|e| e.to_string())?;
        Ok::<_, String>((listener, store))
    })();
    let (listener, store) = match setup {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(format!("shard {index}: {e}")));
            return;
        }
    };
    let limits = OutboxLimits {
        frames: config.outbox_frames,
        bytes: config.outbox_bytes,
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.ws_read_buffer)
        .write_buffer_size(config.ws_write_buffer)
        .max_write_buffer_size(
            config.ws_write_buffer + config.max_message_bytes * 2 + config.outbox_bytes,
        )
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    let shard = Rc::new(Shard {
        index,
        config,
        credentials,
        store,
        writers,
        router,
        registry: RefCell::new(
            Registry::new(limits).with_interest(cluster.as_ref().map(|c| c.interest().clone())),
        ),
        all_metrics: metrics,
        presence,
        cluster,
        known_users: RefCell::new(HashMap::new()),
        next_conn: Cell::new(0),
        draining: Cell::new(false),
        ws_config,
    });
    let inbox = Rc::new(inbox);
    let inbox_task = tokio::task::spawn_local(drain_inbox(shard.clone(), inbox.clone()));
    let _ = ready.send(Ok(index));
    debug!(shard = index, "shard accepting");

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::task::spawn_local(accept(shard.clone(), stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(shard = index, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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

/// Takes one TCP connection through the TLS handshake (when TLS is on)
/// and the HTTP handshake and, if it is accepted, serves it until it closes.
async fn accept(shard: Rc<Shard>, stream: TcpStream) {
    if shard.config.tcp_nodelay {
        let _ = stream.set_nodelay(true);
    }
    // One deadline for the TLS handshake and the upgrade request together.
    let deadline = tokio::time::Instant::now() + shard.config.handshake_timeout();
    match shard.credentials.tls_acceptor() {
        None => serve_http(shard, stream, deadline).await,
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => serve_http(shard, tls, deadline).await,
            Ok(Err(e)) => debug!(shard = shard.index, error = %e, "tls handshake failed"),
            Err(_) => debug!(shard = shard.index, "tls handshake timed out"),
        },
    }
}

/// The HTTP side of [`accept`], over a plain or a TLS stream: the upgrade
/// (or probe), the checks, the token, the session, `101`, then the WebSocket.
async fn serve_http<S>(shard: Rc<Shard>, mut stream: S, deadline: tokio::time::Instant)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = &shard.config;
    let (request, rest) = match read_upgrade(
        &mut stream,
        cfg.max_handshake_bytes,
        deadline.saturating_duration_since(tokio::time::Instant::now()),
    )
    .await
    {
        Ok(r) => r,
        Err(HandshakeError::Probe(probe)) => {
            let (status, body) = shard.answer_probe(probe).await;
            refuse(&mut stream, status, body).await;
            return;
        }
        Err(HandshakeError::Plain(request)) => {
            shard.answer_plain(&request).write(&mut stream).await;
            return;
        }
        Err(e) => {
            debug!(shard = shard.index, error = %e, "handshake failed");
            if let Some(reason) = refusal_reason(&e) {
                shard.metrics().refused(reason);
            }
            if let Some(status) = e.status() {
                refuse(&mut stream, status, &e.to_string()).await;
            }
            return;
        }
    };
    if shard.draining.get() {
        shard.metrics().refused(Refusal::ShuttingDown);
        refuse(&mut stream, 503, "server shutting down").await;
        return;
    }
    if shard.registry.borrow().connection_count() >= cfg.max_connections_per_shard {
        warn!(shard = shard.index, "connection limit reached");
        shard.metrics().refused(Refusal::ServerFull);
        refuse(&mut stream, 503, "server full").await;
        return;
    }
    if !cfg.origin_allowed(request.origin.as_deref()) {
        info!(shard = shard.index, origin = ?request.origin, "handshake refused: origin");
        shard.metrics().refused(Refusal::Origin);
        refuse(&mut stream, 403, "origin not allowed").await;
        return;
    }
    let Some(token) = request.token else {
        info!(
            shard = shard.index,
            reason = "missing token",
            "handshake refused"
        );
        shard.metrics().refused(Refusal::MissingToken);
        refuse(&mut stream, 401, "missing token").await;
        return;
    };
    if token.len() > cfg.max_token_bytes {
        info!(
            shard = shard.index,
            reason = "token too large",
            "handshake refused"
        );
        shard.metrics().refused(Refusal::TokenTooLarge);
        refuse(&mut stream, 401, "token too large").await;
        return;
    }
    let identity = match shard.credentials.verify(&token) {
        Ok(identity) => identity,
        Err(e) => {
            info!(shard = shard.index, reason = %e, "handshake refused");
            shard.metrics().refused(match e {
                crate::auth::AuthError::Expired => Refusal::ExpiredToken,
                _ => Refusal::InvalidToken,
            });
            refuse(&mut stream, 401, &e.to_string()).await;
            return;
        }
    };
    let rooms = match shard.open_session(&identity).await {
        Ok(rooms) => rooms,
        Err(StoreError::UsernameTaken) => {
            info!(
                shard = shard.index,
                user = identity.user_id,
                "username taken"
            );
            shard.metrics().refused(Refusal::UsernameTaken);
            refuse(&mut stream, 409, "username already taken by another user").await;
            return;
        }
        Err(e) => {
            warn!(shard = shard.index, error = %e, "handshake: database error");
            shard.metrics().refused(Refusal::Database);
            shard.metrics().db_errors.inc();
            refuse(&mut stream, 503, "database unavailable").await;
            return;
        }
    };
    // Cluster mode: the last stored ids of the user's streams, read before
    // registering, tell the cluster link where this node's delivery of
    // them must start (unless this shard already follows the user).
    let floors = match &shard.cluster {
        Some(_) if !shard.registry.borrow().has_user(identity.user_id) => {
            match shard
                .store
                .session_floors(identity.user_id, cfg.max_rooms_per_user)
                .await
            {
                Ok(f) => f,
                Err(e) => {
                    warn!(shard = shard.index, error = %e, "handshake: database error");
                    refuse(&mut stream, 503, "database unavailable").await;
                    return;
                }
            }
        }
        _ => registry::Floors::default(),
    };
    let id = shard.next_conn.get();
    shard.next_conn.set(id + 1);
    let outbox = Rc::new(Outbox::new(id, identity.user_id));
    // Registered before the client can see the socket open: nothing sent
    // to this user from now on is missed.
    shard.registry.borrow_mut().register_with_floors(
        outbox.clone(),
        rooms.into_iter().map(Arc::from),
        &floors,
    );
    shard.metrics().handshakes_accepted.inc();
    shard.metrics().connections.inc();
    let username: Arc<str> = Arc::from(identity.username.as_str());
    let rooms = shard.registry.borrow().rooms_of(identity.user_id);
    if shard.presence.connected(identity.user_id, &rooms) {
        shard.announce_presence(identity.user_id, &username, true, &rooms);
    }
    let span = debug_span!("conn", shard = shard.index, id, user = identity.user_id);
    let response = switching_protocols(&request.key, shard.index);
    // The flush matters over TLS (a no-op on a plain socket).
    let written = match stream.write_all(response.as_bytes()).await {
        Ok(()) => stream.flush().await,
        Err(e) => Err(e),
    };
    if written.is_ok() {
        let ws =
            WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(shard.ws_config))
                .await;
        let session = Session::new(
            shard.clone(),
            Origin {
                shard: shard.index,
                conn: id,
            },
            &identity,
        );
        connection::serve(shard.clone(), ws, outbox, session)
            .instrument(span)
            .await;
    }
    shard.registry.borrow_mut().unregister(id);
    shard.metrics().connections.dec();
    if let Some(rooms) = shard.presence.disconnected(identity.user_id) {
        shard.announce_presence(identity.user_id, &username, false, &rooms);
    }
}

/// The `reason` label of a handshake the parser refused.
fn refusal_reason(e: &HandshakeError) -> Option<Refusal> {
    match e {
        HandshakeError::BadRequest(_) => Some(Refusal::BadRequest),
        HandshakeError::NotFound => Some(Refusal::NotFound),
        HandshakeError::TooLarge => Some(Refusal::TooLarge),
        HandshakeError::Timeout => Some(Refusal::Timeout),
        HandshakeError::Io(_) | HandshakeError::Probe(_) | HandshakeError::Plain(_) => None,
    }
}

impl Shard {
    /// True once the server stopped taking new requests.
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// `/healthz`: alive. `/readyz`: 200 only when not shutting down, the
    /// database answers and every writer is connected and committing.
    async fn answer_probe(&self, probe: Probe) -> (u16, &'static str) {
        match probe {
            Probe::Health => (200, "ok"),
            Probe::Ready if self.draining.get() => (503, "shutting down"),
            Probe::Ready if !self.writers.healthy() => (503, "writers cannot reach the database"),
            Probe::Ready => {
                if self.store.ping(Duration::from_secs(2)).await {
                    (200, "ready")
                } else {
                    (503, "database unavailable")
                }
            }
        }
    }

    /// This shard's counters (written by this thread only).
    #[inline]
    pub fn metrics(&self) -> &ShardMetrics {
        self.all_metrics.shard(self.index)
    }

    /// A plain `GET`: the web page and its assets, `/metrics`, `/dev/token`.
    fn answer_plain(&self, request: &PlainRequest) -> web::Response {
        debug!(shard = self.index, path = %request.path, "plain HTTP request");
        match request.path.as_str() {
            "/metrics" => web::Response {
                status: 200,
                content_type: crate::metrics::CONTENT_TYPE,
                cache_control: "no-store",
                body: self
                    .all_metrics
                    .render(self.router.inbox_depths(), self.writers.queue_depths())
                    .into_bytes()
                    .into(),
            },
            "/dev/token" => web::dev_token(&self.config, request.query.as_deref()),
            "/dev/enabled" => web::dev_enabled(&self.config),
            path => web::asset(path),
        }
    }

    /// Bounds of every outbox on this shard.
    pub fn outbox_limits(&self) -> OutboxLimits {
        OutboxLimits {
            frames: self.config.outbox_frames,
            bytes: self.config.outbox_bytes,
        }
    }

    /// On the sender's shard, records how long the message took from its
    /// arrival to being queued on its sender's (and local recipients')
    /// connections: one clock read per message, on one shard.
    #[inline]
    fn delivered(&self, sent: Sent) {
        if sent.shard == self.index {
            self.metrics()
                .delivery_seconds
                .observe_duration(sent.at.elapsed());
        }
    }

    /// Applies one inbox event to the local indexes.
    pub fn apply(&self, event: ShardEvent) {
        let mut registry = self.registry.borrow_mut();
        match event {
            ShardEvent::Room {
                room,
                id,
                frame,
                own,
                sent,
            } => {
                let own = own.as_deref().filter(|o| o.origin.shard == self.index);
                registry.deliver_room(&room, id, &frame, own);
                self.delivered(sent);
            }
            ShardEvent::Users {
                users,
                id,
                frame,
                own,
                sent,
            } => {
                let own = own.as_deref().filter(|o| o.origin.shard == self.index);
                registry.deliver_users(users, id, &frame, own);
                self.delivered(sent);
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
        }
    }

    /// The handshake's database work: check (or upsert) the user row and
    /// load its rooms, unless this shard already did for this username and
    /// the user is connected here (its rooms are then known).
    async fn open_session(
        &self,
        identity: &crate::auth::Identity,
    ) -> Result<Vec<String>, StoreError> {
        let known = matches!(
            self.known_users.borrow().get(&identity.user_id),
            Some(Some(name)) if **name == *identity.username
        );
        if known && self.registry.borrow().has_user(identity.user_id) {
            return Ok(Vec::new());
        }
        let rooms = self
            .store
            .open_session(identity, self.config.max_rooms_per_user)
            .await?;
        self.remember_user(identity.user_id, Some(&identity.username));
        Ok(rooms)
    }

    /// True when the user is known to exist without asking the database.
    pub fn user_known(&self, user: UserId) -> bool {
        self.known_users.borrow().contains_key(&user)
    }

    /// Records that a user exists (with the username upserted, if any).
    pub fn remember_user(&self, user: UserId, username: Option<&str>) {
        let mut known = self.known_users.borrow_mut();
        if known.len() >= USER_CACHE_MAX && !known.contains_key(&user) {
            known.clear();
        }
        match username {
            Some(name) => {
                known.insert(user, Some(name.into()));
            }
            None => {
                known.entry(user).or_insert(None);
            }
        }
    }

    /// Records here that `user` joined `room` (its local connections follow
    /// it from now on) and tells the other shards. `last` is the room's last
    /// stored id read before the join (for the cluster link).
    pub fn joined(&self, user: UserId, room: &str, last: Option<i64>) {
        let name: Arc<str> = Arc::from(room);
        self.registry
            .borrow_mut()
            .join_with_floor(user, name.clone(), last);
        self.presence.joined(user, &name);
        self.announce_join(user, name);
    }

    /// Tells the other shards that `user` joined `room`, without waiting on
    /// them: an inbox that is full gets the event from a retrying task.
    pub fn announce_join(&self, user: UserId, room: Arc<str>) {
        self.to_other_nodes(user, room.clone(), true);
        self.announce(ShardEvent::Joined { user, room });
    }

    /// Cluster mode: tells the user's connections on other nodes about a
    /// membership change (never waits: a full queue is retried from a task).
    fn to_other_nodes(&self, user: UserId, room: Arc<str>, joined: bool) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        if let Err(m) = cluster.try_membership(RemoteMembership { user, room, joined }) {
            let cluster = cluster.clone();
            tokio::task::spawn_local(async move { cluster.send_membership(m).await });
        }
    }

    /// Tells the other shards that `user` left `room` (as [`announce_join`](Self::announce_join)).
    pub fn announce_leave(&self, user: UserId, room: Arc<str>) {
        self.to_other_nodes(user, room.clone(), false);
        self.announce(ShardEvent::Left { user, room });
    }

    /// Delivers an ephemeral room notice (presence, typing) here and on
    /// every other shard, without waiting.
    pub fn notify_room(&self, room: Arc<str>, except: UserId, frame: Frame) {
        if let Some(cluster) = &self.cluster {
            cluster.notice(RemoteNotice {
                room: room.clone(),
                except,
                frame: frame.clone(),
            });
        }
        let event = ShardEvent::Notice {
            room,
            except,
            frame,
        };
        // Through this shard's own inbox too, not applied here at once: a
        // join announced by another shard just before (whose ack the client
        // already saw) is then applied first, and its member gets the notice.
        let refused = self.router.broadcast(&event);
        self.retry_refused(refused);
    }

    /// Tells the other online members of `rooms` that `user` came online or
    /// went offline (rooms with more than `--presence-max-members` members
    /// online are skipped). Single node: all in memory, at once. Cluster
    /// mode: first asks the other nodes whether the user is connected there
    /// (then it was announced online there and is not offline yet), and
    /// drops the announcement if the user's state changed meanwhile.
    pub fn announce_presence(
        self: &Rc<Self>,
        user: UserId,
        username: &str,
        online: bool,
        rooms: &[Arc<str>],
    ) {
        let max = self.config.presence_max_members;
        let rooms: Vec<Arc<str>> = rooms
            .iter()
            // Count the user itself, whether it just entered or just left.
            .filter(|room| self.presence.online_count(room) + usize::from(!online) <= max)
            .cloned()
            .collect();
        if rooms.is_empty() {
            return;
        }
        let Some(cluster) = self.cluster.clone() else {
            self.notify_presence(user, username, online, &rooms);
            return;
        };
        let shard = self.clone();
        let username: Arc<str> = Arc::from(username);
        tokio::task::spawn_local(async move {
            let elsewhere = cluster.online_elsewhere(user).await;
            if shard.presence.is_online(user) != online {
                return; // superseded: that change announces itself
            }
            if let Some(other) = elsewhere {
                // Online elsewhere: never "offline"; "online" only from the
                // node where the user came online first.
                let first_here = shard
                    .presence
                    .online_since(user)
                    .is_some_and(|since| cluster.announces_online(since, &other));
                if !online || !first_here {
                    return;
                }
            }
            shard.notify_presence(user, &username, online, &rooms);
        });
    }

    /// The room's online members for `join_ack`, ascending (`None`: more
    /// than `--presence-max-members`). Cluster mode adds the other nodes'
    /// (gathered for `cluster::link::ONLINE_GATHER`).
    pub async fn online_members(&self, room: &str) -> Option<Vec<UserId>> {
        let max = self.config.presence_max_members;
        let local = self.presence.online_in(room, max)?;
        let Some(cluster) = &self.cluster else {
            return Some(local);
        };
        let all = cluster.online_in_room(room, local).await;
        (all.len() <= max).then_some(all)
    }

    fn notify_presence(&self, user: UserId, username: &str, online: bool, rooms: &[Arc<str>]) {
        for room in rooms {
            let frame = encode_presence(room, user, username, online);
            self.notify_room(room.clone(), user, frame);
        }
    }

    fn announce(&self, event: ShardEvent) {
        let refused = self.router.broadcast_from(self.index, &event);
        self.retry_refused(refused);
    }

    /// Sends events that found a full inbox from a background task.
    fn retry_refused(&self, refused: Vec<(usize, ShardEvent)>) {
        for (target, event) in refused {
            let router = self.router.clone();
            tokio::task::spawn_local(async move {
                router.send_to(target, event).await;
                router.flush();
            });
        }
    }
}
