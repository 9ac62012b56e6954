//! The accept path of one socket, on the shard that accepted it: TLS (when
//! on), the HTTP request, admission (every check, in order), registration,
//! `101`, then the WebSocket until it closes.
//!
//! A request that is not an upgrade is answered by [`crate::web`] (page,
//! assets, `/metrics`, probes); a refused upgrade goes through one path,
//! [`Refused`], whose [`Refusal`] kind decides the status, the body and the
//! metric. Statuses and paths live in `handshake` and `web`, not here.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, debug_span, info, warn, Instrument};

use crate::auth::{AuthError, Identity};
use crate::connection::{self, Host};
use crate::handshake::{
    read_upgrade, refusal, refuse, switching_protocols, HandshakeError, Refusal, UpgradeRequest,
};
use crate::pending::{PendingGuard, PendingRefusal};
use crate::rooms::MuteChange;
use crate::router::Origin;
use crate::session::Session;
use crate::shard::outbox::Outbox;
use crate::shard::Shard;
use crate::store::{Floors, Mutes, StoreError};
use crate::userlimits::ConnectionSlot;
use crate::web;

/// Takes one TCP connection through the TLS handshake (when TLS is on)
/// and the HTTP handshake and, if it is admitted, serves it until it closes.
///
/// First it must find a place among the pending handshakes (in all and for
/// its address: else it is answered at once, unread, and closed), then
/// send its first byte within `--handshake-first-byte-ms` (else 408).
pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let ip = stream
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let pending = match shard.pending.try_enter(ip) {
        Ok(guard) => guard,
        Err(refusal) => {
            let kind = match refusal {
                PendingRefusal::Total => Refusal::PendingTotal,
                PendingRefusal::PerIp => Refusal::PendingPerIp,
            };
            return refuse_at_once(&shard, stream, kind);
        }
    };
    if shard.config.tcp_nodelay {
        let _ = stream.set_nodelay(true);
    }
    // One deadline for the TLS handshake and the upgrade request together.
    let deadline = Instant::now() + shard.config.handshake_timeout();
    // `peek`, not `readable`: readiness may be reported before any byte.
    let mut first = [0u8; 1];
    match tokio::time::timeout(shard.config.handshake_first_byte(), stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return, // closed or failed before a byte

        Err(_) => return refuse_at_once(&shard, stream, Refusal::Timeout),
    }
    match shard.credentials.tls_acceptor() {
        None => serve_http(shard, stream, deadline, pending).await,
        // Boxed: a TLS connection's states (rustls, the TLS stream) would
        // otherwise size every plain connection's task too.
        Some(acceptor) => Box::pin(serve_tls(shard, acceptor, stream, deadline, pending)).await,
    }
}

/// [`serve`] over TLS: the TLS handshake within `deadline`, then
/// [`serve_http`] over the TLS stream.
async fn serve_tls(
    shard: Rc<Shard>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    deadline: Instant,
    pending: PendingGuard,
) {
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_http(shard, tls, deadline, pending).await,
        Ok(Err(e)) => debug!(shard = shard.index, error = %e, "tls handshake failed"),
        Err(_) => debug!(shard = shard.index, "tls handshake timed out"),
    }
}

/// Refuses a socket without waiting on it: counts `kind`, and on a plain
/// socket writes the refusal if the kernel takes it at once (whatever the
/// client already sent is read first, so that closing sends no reset),
/// then closes. Never logged per socket: these come in floods.
fn refuse_at_once(shard: &Shard, stream: TcpStream, kind: Refusal) {
    shard.metrics().refused(kind);
    if shard.credentials.tls_acceptor().is_none() {
        let mut sink = [0u8; 4096];
        let _ = stream.try_read(&mut sink);
        let _ = stream.try_write(refusal(kind.status(), kind.message()).as_bytes());
    }
    debug!(
        shard = shard.index,
        reason = kind.label(),
        pending = shard.pending.total(),
        "socket refused at once"
    );
}

/// A refused upgrade: its kind, the body to send, and what to log.
#[derive(Debug)]
pub struct Refused {
    /// Why: decides the status and the metric.
    pub kind: Refusal,
    /// The body (the kind's own message unless something more precise is known).
    pub body: Cow<'static, str>,
    /// A cause for the log that the client is not told (a database error).
    pub cause: Option<String>,
}

impl From<Refusal> for Refused {
    fn from(kind: Refusal) -> Refused {
        Refused {
            kind,
            body: Cow::Borrowed(kind.message()),
            cause: None,
        }
    }
}

impl Refused {
    fn with_body(kind: Refusal, body: String) -> Refused {
        Refused {
            kind,
            body: Cow::Owned(body),
            cause: None,
        }
    }

    /// The database failed during admission: the client hears only that.
    fn database(e: &StoreError) -> Refused {
        Refused {
            cause: Some(e.to_string()),
            ..Refusal::Database.into()
        }
    }

    /// Counts it, logs it and answers it.
    async fn answer<S: AsyncWrite + Unpin>(self, shard: &Shard, stream: &mut S) {
        let kind = self.kind;
        shard.metrics().refused(kind);
        match kind {
            Refusal::Database => {
                shard.metrics().db_errors.inc();
                let error = self.cause.as_deref().unwrap_or_default();
                warn!(shard = shard.index, error, "handshake: database error");
            }
            Refusal::ServerFull => warn!(shard = shard.index, "connection limit reached"),
            // A user over its connection limit may retry in a loop: the
            // metric counts it, the log does not repeat it.
            Refusal::BadRequest
            | Refusal::NotFound
            | Refusal::TooLarge
            | Refusal::Timeout
            | Refusal::TooManyConnections => {
                debug!(shard = shard.index, reason = %self.body, "handshake refused")
            }
            _ => info!(shard = shard.index, reason = %self.body, "handshake refused"),
        }
        refuse(stream, kind.status(), &self.body).await;
    }
}

/// What admission gives a connection: who it is and what it follows.
struct Admitted {
    identity: Identity,
    /// The connection's place in its user's connection count, released
    /// when this is dropped (whichever way the connection ends).
    slot: ConnectionSlot,
    /// The user's stored rooms (empty when this shard already follows them).
    rooms: Vec<String>,
    /// The user's mutes that hold, by room (loaded with the rooms).
    mutes: Mutes,
    /// Cluster mode: where the link's delivery of the user's streams starts.
    floors: Floors,
}

/// The HTTP side of [`serve`], over a plain or a TLS stream: the upgrade
/// (or probe, or page), admission, registration, `101`, then the WebSocket.
async fn serve_http<S>(shard: Rc<Shard>, mut stream: S, deadline: Instant, pending: PendingGuard)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let max = shard.config.max_handshake_bytes;
    let left = deadline.saturating_duration_since(Instant::now());
    // The handshake's states (request buffer, admission queries) are boxed
    // and freed once it ends: a connection's task keeps only what serving
    // the WebSocket needs (issue 16: memory per connection).
    let (request, rest) = match Box::pin(read_upgrade(&mut stream, max, left)).await {
        Ok(r) => r,
        Err(e) => return Box::pin(not_upgraded(&shard, &mut stream, e)).await,
    };
    let admitted = match Box::pin(admit(&shard, &request)).await {
        Ok(a) => a,
        Err(refused) => return Box::pin(refused.answer(&shard, &mut stream)).await,
    };
    // From here it counts as a connection of the shard, no longer as pending.
    drop(pending);
    // Only the key outlives the handshake (the token and headers do not).
    let UpgradeRequest { key, .. } = request;
    open(shard, stream, key, rest, admitted).await;
}

/// What a request that is not a WebSocket upgrade gets: a probe or a page
/// is answered, a bad upgrade refused.
async fn not_upgraded<S>(shard: &Shard, stream: &mut S, e: HandshakeError)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match e {
        HandshakeError::Probe(probe) => {
            let readiness = match probe {
                crate::handshake::Probe::Health => None,
                crate::handshake::Probe::Ready => Some(shard.readiness().await),
            };
            web::probe(readiness).write(stream).await;
        }
        HandshakeError::Plain(request) => {
            debug!(shard = shard.index, path = %request.path, "plain HTTP request");
            web::answer(&request, &shard.config, || shard.render_metrics())
                .write(stream)
                .await;
        }
        e => match e.refusal() {
            Some(kind) => {
                Refused::with_body(kind, e.to_string())
                    .answer(shard, stream)
                    .await
            }
            None => debug!(shard = shard.index, error = %e, "handshake failed"),
        },
    }
}

/// Every check a WebSocket upgrade passes, in order: the server is not
/// draining and has room, the origin is allowed, the token is there, small
/// and valid, the user holds fewer than `--max-connections-per-user`
/// connections, and the user's row and rooms are loaded.
async fn admit(shard: &Shard, request: &UpgradeRequest) -> Result<Admitted, Refused> {
    let cfg = &shard.config;
    if shard.draining() {
        return Err(Refusal::ShuttingDown.into());
    }
    if shard.registry.borrow().connection_count() >= cfg.max_connections_per_shard {
        return Err(Refusal::ServerFull.into());
    }
    if !cfg.origin_allowed(request.origin.as_deref()) {
        return Err(Refusal::Origin.into());
    }
    let token = request.token.as_deref().ok_or(Refusal::MissingToken)?;
    if token.len() > cfg.max_token_bytes {
        return Err(Refusal::TokenTooLarge.into());
    }
    let identity = shard.credentials.verify(token).map_err(|e| {
        let kind = match e {
            AuthError::Expired => Refusal::ExpiredToken,
            _ => Refusal::InvalidToken,
        };
        Refused::with_body(kind, e.to_string())
    })?;
    // Counted before any database work; released when `slot` drops, also
    // when a later check fails.
    let slot = shard
        .user_limits
        .open(identity.user_id)
        .map_err(|_| Refused::from(Refusal::TooManyConnections))?;
    let (rooms, mutes) = open_session(shard, &identity).await.map_err(|e| match e {
        StoreError::UsernameTaken => Refused::from(Refusal::UsernameTaken),
        e @ StoreError::Blocked(_) => Refused::with_body(Refusal::Blocked, e.to_string()),
        e => Refused::database(&e),
    })?;
    // Cluster mode: the last stored ids of the user's streams, read before
    // registering, tell the cluster link where this node's delivery of
    // them must start (unless this shard already follows the user).
    let floors = match &shard.cluster {
        Some(_) if !shard.registry.borrow().has_user(identity.user_id) => shard
            .store
            .session_floors(identity.user_id, cfg.max_rooms_per_user)
            .await
            .map_err(|e| Refused::database(&e))?,
        _ => Floors::default(),
    };
    Ok(Admitted {
        identity,
        slot,
        rooms,
        mutes,
        floors,
    })
}

/// The handshake's database work: check (or upsert) the user row and
/// load its rooms, unless this shard already did for this username and
/// the user is connected here (its rooms are then known).
async fn open_session(
    shard: &Shard,
    identity: &Identity,
) -> Result<(Vec<String>, Mutes), StoreError> {
    let known = shard
        .known_users
        .borrow()
        .has_username(identity.user_id, &identity.username);
    if known && shard.registry.borrow().has_user(identity.user_id) {
        return Ok((Vec::new(), Vec::new()));
    }
    let rooms = shard
        .store
        .open_session(identity, shard.config.max_rooms_per_user)
        .await?;
    shard
        .known_users
        .borrow_mut()
        .remember(identity.user_id, Some(&identity.username));
    Ok(rooms)
}

/// Registers an admitted connection, writes `101`, and hands the
/// connection to a task of its own ([`Life::serve`]), which serves the
/// WebSocket and unregisters it when it ends.
async fn open<S>(shard: Rc<Shard>, mut stream: S, key: String, rest: Vec<u8>, admitted: Admitted)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let Admitted {
        identity,
        slot,
        rooms,
        mutes,
        floors,
    } = admitted;
    let user = identity.user_id;
    let id = shard.next_conn_id();
    let outbox = Rc::new(Outbox::new(id, user));
    // Registered before the client can see the socket open: nothing sent
    // to this user from now on is missed.
    shard.registry.borrow_mut().register_with_floors(
        outbox.clone(),
        rooms.into_iter().map(Arc::from),
        &floors,
    );
    drop(floors);
    for (room, mute) in &mutes {
        shard
            .registry
            .borrow_mut()
            .set_mute(user, room, MuteChange::Muted(*mute));
    }
    drop(mutes);
    shard.metrics().handshakes_accepted.inc();
    shard.metrics().connections.inc();
    let username: Arc<str> = Arc::from(identity.username.as_str());
    let rooms = shard.registry.borrow().rooms_of(user);
    if shard.presence.connected(user, &rooms) {
        shard.announce_presence(user, &username, true, &rooms);
    }
    drop(rooms);
    let span = debug_span!("conn", shard = shard.index, id, user);
    let response = switching_protocols(&key, shard.index);
    drop(key);
    // The flush matters over TLS (a no-op on a plain socket).
    let written = match stream.write_all(response.as_bytes()).await {
        Ok(()) => stream.flush().await,
        Err(e) => Err(e),
    };
    // What lives as long as the connection is only what serves it.
    drop(response);
    if written.is_ok() {
        let origin = Origin {
            shard: shard.index,
            conn: id,
        };
        let session = Session::new(shard.clone(), origin, &identity, slot.budget());
        // The connection gets a task of its own, sized for serving it: this
        // one (the handshake's states, however large) ends here.
        let life = Life {
            shard,
            outbox,
            username,
            slot,
        };
        tokio::task::spawn_local(life.serve(stream, rest, session).instrument(span));
        return;
    }
    Life {
        shard,
        outbox,
        username,
        slot,
    }
    .end();
}

/// What a registered connection holds until it ends: its shard, its
/// outbox, its user's name (for the offline announcement) and its slot
/// among the user's connections.
struct Life {
    shard: Rc<Shard>,
    outbox: Rc<Outbox>,
    username: Arc<str>,
    slot: ConnectionSlot,
}

impl Life {
    /// Serves the WebSocket over `stream` (`rest`: what was read past the
    /// HTTP request) until it closes, then ends the connection.
    ///
    /// The WebSocket is built here, not passed in: an argument would keep
    /// its own slot in this future beside the one in `connection::serve`.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin + 'static>(
        self,
        stream: S,
        rest: Vec<u8>,
        session: Session,
    ) {
        let shard = &self.shard;
        // Shared with the shard's flusher (issue 16), and built in place:
        // only a handle lives in the task.
        let ws = connection::SharedWs::new(
            WebSocketStream::from_partially_read(
                stream,
                rest,
                Role::Server,
                Some(connection::ws_config(&shard.config)),
            )
            .await,
        );
        let host = Host {
            config: &shard.config,
            metrics: shard.metrics(),
            draining: shard.draining_flag(),
            outbox_limits: shard.outbox_limits,
            flusher: &shard.flusher,
        };
        connection::serve(host, ws, self.outbox.clone(), session).await;
        self.end();
    }

    /// Unregisters the connection; the last one of its user announces it offline.
    fn end(self) {
        let Life {
            shard,
            outbox,
            username,
            slot,
        } = self;
        shard.registry.borrow_mut().unregister(outbox.id);
        shard.metrics().connections.dec();
        if let Some(rooms) = shard.presence.disconnected(outbox.user) {
            shard.announce_presence(outbox.user, &username, false, &rooms);
        }
        drop(slot);
    }
}

/// Test probe: bytes of a plain connection's task future while it serves.
#[cfg(test)]
pub(crate) fn connection_task_size() -> usize {
    fn size<A, F: std::future::Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    size(|(life, stream, session): (Life, TcpStream, Session)| {
        life.serve(stream, Vec::new(), session)
            .instrument(tracing::Span::none())
    })
}

#[cfg(test)]
mod tests {
    //! Admission on a real shard context: every refusal that needs no
    //! database, in the order the checks run.
    use super::*;
    use crate::config::Config;
    use crate::shard::testing;

    fn upgrade(token: Option<String>, origin: Option<&str>) -> UpgradeRequest {
        UpgradeRequest {
            path: "/ws".into(),
            key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
            token,
            origin: origin.map(str::to_owned),
        }
    }

    fn token(config: &Config, ttl: i64) -> String {
        let secret = config.jwt_secret.as_deref().expect("secret");
        crate::auth::sign_hs256(secret.as_bytes(), 7, "alice", ttl)
    }

    async fn refusal(shard: &Shard, request: &UpgradeRequest) -> (Refusal, u16, String) {
        match admit(shard, request).await {
            Ok(_) => panic!("admitted"),
            Err(r) => (r.kind, r.kind.status(), r.body.into_owned()),
        }
    }

    #[tokio::test]
    async fn each_check_refuses_with_its_status_and_body() {
        let mut config = testing::config();
        config.allowed_origins = vec!["https://chat.example".into()];
        config.max_token_bytes = 512;
        config.jwt_leeway_secs = 0;
        let good = token(&config, 600);
        let expired = token(&config, -600);
        let (shard, ..) = testing::shard(config);

        let r = refusal(&shard, &upgrade(None, None)).await;
        assert_eq!(r, (Refusal::MissingToken, 401, "missing token".into()));
        let r = refusal(&shard, &upgrade(Some("x".repeat(513)), None)).await;
        assert_eq!(r, (Refusal::TokenTooLarge, 401, "token too large".into()));
        let r = refusal(&shard, &upgrade(Some("not.a.token".into()), None)).await;
        assert_eq!((r.0, r.1), (Refusal::InvalidToken, 401));
        let r = refusal(&shard, &upgrade(Some(expired), None)).await;
        assert_eq!((r.0, r.1), (Refusal::ExpiredToken, 401));
        assert!(r.2.contains("expired"), "{}", r.2);
        let r = refusal(
            &shard,
            &upgrade(Some(good.clone()), Some("https://evil.example")),
        )
        .await;
        assert_eq!(r, (Refusal::Origin, 403, "origin not allowed".into()));

        // Earlier checks win: a full shard refuses before looking at the token.
        let mut full = testing::config();
        full.max_connections_per_shard = 1;
        let (shard, ..) = testing::shard(full);
        shard
            .registry
            .borrow_mut()
            .register(std::rc::Rc::new(Outbox::new(0, 1)), []);
        let r = refusal(&shard, &upgrade(None, None)).await;
        assert_eq!(r, (Refusal::ServerFull, 503, "server full".into()));
        shard.draining_flag().set(true);
        let r = refusal(&shard, &upgrade(Some(good), None)).await;
        assert_eq!(
            r,
            (Refusal::ShuttingDown, 503, "server shutting down".into())
        );
    }

    #[tokio::test]
    async fn a_user_at_its_connection_limit_is_refused_with_429_before_the_database() {
        let mut config = testing::config();
        config.max_connections_per_user = 1;
        let good = token(&config, 600);
        let (shard, ..) = testing::shard(config);
        let held = shard.user_limits.open(7).expect("first slot");
        // The database is unreachable here: refused before it is asked.
        let r = refusal(&shard, &upgrade(Some(good), None)).await;
        assert_eq!(
            r,
            (
                Refusal::TooManyConnections,
                429,
                "too many connections for this user".into()
            )
        );
        assert_eq!(
            shard.user_limits.connections(7),
            1,
            "the refusal took no slot"
        );
        drop(held);
        assert_eq!(shard.user_limits.connections(7), 0);
    }

    #[test]
    fn every_refusal_has_a_distinct_label_and_an_error_status() {
        let mut labels: Vec<&str> = Refusal::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Refusal::ALL.len());
        for r in Refusal::ALL {
            assert!((400..600).contains(&r.status()), "{r:?}");
            assert!(!r.message().is_empty());
            assert_eq!(Refusal::ALL[r as usize], r, "ALL is in declaration order");
        }
    }
}
