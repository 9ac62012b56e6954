//! The transport of one WebSocket connection: reads frames and hands them
//! to its [`Session`], and writes whatever its [`Outbox`] holds — feeding
//! every queued frame, then flushing once — when the shard's flusher could
//! not write it directly (issue 16: [`shared`], `shard::flush`).
//!
//! A connection's error ends that connection and nothing else.

use std::cell::Cell;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use crate::config::Config;
use crate::metrics::ShardMetrics;
use crate::protocol::encode_error;
use crate::ratelimit::{RateLimiter, Verdict};
use crate::session::{Deferred, Outcome, Reply, ReplyStream, Session};
use crate::shard::flush::Flusher;
use crate::shard::outbox::{Outbox, OutboxLimits, OutboxState};

pub mod shared;
pub use shared::SharedWs;

/// A byte stream a WebSocket runs over: a plain `TcpStream` or a TLS stream.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {}
impl<S: AsyncRead + AsyncWrite + Unpin> Transport for S {}

/// What a connection needs from the shard that owns it, and nothing more:
/// its settings, its counters and whether the server is draining.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// Timeouts, rate limits, heartbeat.
    pub config: &'a Config,
    /// The owning shard's counters.
    pub metrics: &'a ShardMetrics,
    /// Set once the server stops taking requests: the connection stops reading.
    pub draining: &'a Cell<bool>,
    /// Bounds of the connection's outbox.
    pub outbox_limits: OutboxLimits,
    /// The shard's direct writer, which the connection's outbox uses while
    /// the connection task is not writing.
    pub flusher: &'a Rc<Flusher>,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client sent a close frame or ended the stream.
    ByClient,
    /// The client went away without a close frame.
    Vanished,
    /// The socket failed.
    WriteFailed,
    /// The socket took nothing for the write timeout.
    WriteTimedOut,
    /// The outbox overflowed: closed with 1008.
    SlowConsumer,
    /// A paged reply already under way could not read its next page:
    /// closed with 1011 (the client recovers with `since` on reconnect).
    ReplyFailed,
    /// Flooding past the rate limit: closed with 1008.
    Flood,
    /// Nothing heard for the idle timeout: closed with 1001.
    Idle,
    /// The token expired: closed with 4001.
    TokenExpired,
    /// A `refresh` with another user's token: closed with 4001.
    TokenUserMismatch,
    /// An operator disconnected the user (issue 15): closed with 4003.
    Disconnected,
    /// The server is shutting down: closed with 1001.
    ShuttingDown,
    /// Bad input (oversized message, invalid UTF-8, protocol error): closed
    /// with the matching code.
    BadInput(&'static str),
    /// Any other WebSocket error.
    Error,
}

impl Closed {
    /// The reason as logged (`connection closed reason=...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::ByClient => "closed by client",
            Closed::Vanished => "closed by client without a close frame",
            Closed::WriteFailed => "write failed",
            Closed::WriteTimedOut => "write timed out",
            Closed::SlowConsumer => "slow consumer",
            Closed::ReplyFailed => "reply failed: database unavailable",
            Closed::Flood => "rate limit exceeded",
            Closed::Idle => "idle timeout",
            Closed::TokenExpired => "token expired",
            Closed::TokenUserMismatch => "refresh with another user's token",
            Closed::ShuttingDown => "server shutting down",
            Closed::Disconnected => "disconnected by the operator",
            Closed::BadInput(reason) => reason,
            Closed::Error => "connection error",
        }
    }

    /// Counts the close in the owning shard's metrics, when it has a counter.
    fn count(self, metrics: &ShardMetrics) {
        match self {
            Closed::SlowConsumer => metrics.slow_consumers.inc(),
            Closed::Flood => metrics.flood_disconnects.inc(),
            _ => {}
        }
    }
}

/// Serves one registered connection until the client leaves, the
/// connection fails, or the server closes it.
pub async fn serve<S: Transport + 'static>(
    host: Host<'_>,
    mut ws: SharedWs<S>,
    outbox: Rc<Outbox>,
    session: Session,
) -> Closed {
    debug!("connection opened");
    outbox.attach(Rc::new(ws.clone()), host.flusher.clone());
    let config = host.config;
    let metrics = host.metrics;
    let limits = host.outbox_limits;
    let write_timeout = config.write_timeout();
    let mut pending: Option<Deferred> = None;
    let now = Instant::now();
    let mut limiter = RateLimiter::new(
        config.rate_limit,
        config.rate_burst,
        Duration::from_secs(config.flood_close_secs),
        now,
    );
    let mut clock = Heartbeat::new(config, session.expires_at(), now);
    let ticker = tokio::time::sleep_until(clock.next_deadline());
    tokio::pin!(ticker);
    let reason = loop {
        let reading = pending.is_none() && !host.draining.get();
        tokio::select! {
            () = &mut ticker => {
                match clock.tick(Instant::now()) {
                    Tick::Wait => {}
                    Tick::Ping => {
                        let _busy = outbox.busy();
                        let ping = ws.send(Message::Ping(Default::default()));
                        if Box::pin(tokio::time::timeout(write_timeout, ping)).await.is_err() {
                            break Closed::WriteTimedOut;
                        }
                    }
                    Tick::Idle => {
                        close(&mut ws, &outbox, CloseCode::Away, "idle timeout").await;
                        break Closed::Idle;
                    }
                    Tick::Expired => {
                        close(&mut ws, &outbox, CloseCode::from(TOKEN_EXPIRED), "token expired").await;
                        break Closed::TokenExpired;
                    }
                }
                ticker.as_mut().reset(clock.next_deadline());
            }
            _ = outbox.changed() => match outbox.state() {
                // Boxed, here and below: inline, a write's states would size
                // every connection's task for its whole life (issue 16); one
                // small allocation per write batch is the price.
                OutboxState::Open => match Box::pin(write_queued(&mut ws, &outbox, write_timeout, metrics, limits)).await {
                    Ok(()) => {}
                    Err(WriteError::SlowConsumer) => {
                        close(&mut ws, &outbox, CloseCode::Policy, "slow consumer").await;
                        break Closed::SlowConsumer;
                    }
                    Err(e) => break e.into(),
                },
                OutboxState::SlowConsumer => {
                    close(&mut ws, &outbox, CloseCode::Policy, "slow consumer").await;
                    break Closed::SlowConsumer;
                }
                OutboxState::GoingAway => {
                    let _ = Box::pin(write_queued(&mut ws, &outbox, write_timeout, metrics, limits)).await;
                    close(&mut ws, &outbox, CloseCode::Away, "going away").await;
                    break Closed::ShuttingDown;
                }
                OutboxState::Disconnected => {
                    close(&mut ws, &outbox, CloseCode::from(DISCONNECTED), "disconnected by the operator").await;
                    break Closed::Disconnected;
                }
            },
            reply = async { pending.as_mut().expect("guarded by is_some").await }, if pending.is_some() => {
                pending = None;
                match reply {
                    Reply::Frames(frames) => {
                        for frame in frames {
                            outbox.push(frame, limits);
                        }
                    }
                    // Replays and histories go straight to the socket, page
                    // by page: the outbox bounds are for live traffic.
                    Reply::Stream(stream) => {
                        // Boxed: a rare state, it would otherwise size every
                        // connection's task (issue 16: memory per connection).
                        let written = Box::pin(write_stream(&mut ws, &outbox, stream, write_timeout, metrics, limits)).await;
                        match written {
                            // The client read the whole reply: that is hearing from it
                            // (its pongs waited unread meanwhile).
                            Ok(()) => clock.heard_from_client(Instant::now()),
                            Err(StreamError::Write(WriteError::SlowConsumer)) => {
                                close(&mut ws, &outbox, CloseCode::Policy, "slow consumer").await;
                                break Closed::SlowConsumer;
                            }
                            Err(StreamError::Write(e)) => break e.into(),
                            Err(StreamError::Database) => {
                                close(&mut ws, &outbox, CloseCode::Error, "database unavailable").await;
                                break Closed::ReplyFailed;
                            }
                        }
                    }
                }
            }
            incoming = ws.next(), if reading => match incoming {
                None => break Closed::ByClient,
                Some(Ok(message)) => {
                    let now = Instant::now();
                    clock.heard_from_client(now);
                    // Every frame the client sends counts against the limit,
                    // control frames too: a ping flood is a flood. (A close
                    // ends the connection anyway; tungstenite answers pings
                    // and close frames itself.)
                    let data = matches!(message, Message::Text(_) | Message::Binary(_));
                    if !data && !matches!(message, Message::Ping(_) | Message::Pong(_)) {
                        continue;
                    }
                    if data {
                        metrics.frames_in.inc();
                    }
                    match limiter.check(now) {
                        Verdict::Allow => {}
                        Verdict::Refuse => {
                            metrics.rate_limited.inc();
                            // A refused ping or pong gets no answer, only no credit.
                            if data {
                                outbox.push(encode_error("rate limited"), limits);
                            }
                            continue;
                        }
                        Verdict::RefuseQuietly => {
                            metrics.rate_limited.inc();
                            continue;
                        }
                        Verdict::Disconnect => {
                            close(&mut ws, &outbox, CloseCode::Policy, "rate limit exceeded").await;
                            break Closed::Flood;
                        }
                    }
                    match message {
                        Message::Text(text) => match session.handle(text.as_str()) {
                            Outcome::Reply(frame) => {
                                outbox.push(frame, limits);
                            }
                            Outcome::Refreshed { frame, expires_at } => {
                                outbox.push(frame, limits);
                                clock.refresh(expires_at, Instant::now());
                                ticker.as_mut().reset(clock.next_deadline());
                            }
                            Outcome::Queued => {}
                            Outcome::Later(deferred) => pending = Some(deferred),
                            Outcome::CloseUnauthorized(frame) => {
                                outbox.push(frame, limits);
                                let _ = Box::pin(write_queued(&mut ws, &outbox, write_timeout, metrics, limits)).await;
                                close(&mut ws, &outbox, CloseCode::from(TOKEN_EXPIRED), "token user mismatch").await;
                                break Closed::TokenUserMismatch;
                            }
                        },
                        Message::Binary(_) => {
                            outbox.push(encode_error("binary frames are not supported; send JSON text frames"), limits);
                        }
                        _ => {}
                    }
                }
                Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)))
                | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_))) => {
                    break Closed::Vanished;
                }
                Some(Err(e)) => {
                    let (code, reason) = match &e {
                        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                            (CloseCode::Size, "message too big")
                        }
                        WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8"),
                        WsError::Protocol(_) => (CloseCode::Protocol, "protocol error"),
                        _ => break Closed::Error,
                    };
                    debug!(error = %e, "closing on bad input");
                    close(&mut ws, &outbox, code, reason).await;
                    break Closed::BadInput(reason);
                }
            },
        }
    };
    // The outbox may outlive the connection in the registry for a moment:
    // it must not keep the socket open.
    outbox.detach();
    reason.count(metrics);
    debug!(reason = reason.as_str(), "connection closed");
    reason
}

/// The WebSocket settings of every connection: buffer sizes and the largest
/// message, from the configuration. The write buffer may hold one outbox's
/// worth plus two largest messages before the socket pushes back.
pub fn ws_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.ws_read_buffer)
        .write_buffer_size(config.ws_write_buffer)
        .max_write_buffer_size(
            config.ws_write_buffer + config.max_message_bytes * 2 + config.outbox_bytes,
        )
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes))
}

/// Close code sent when the client's token expires.
pub const TOKEN_EXPIRED: u16 = 4001;

/// Issue 15: close code sent when an operator disconnects the user
/// (`POST /v1/users/{id}/disconnect`).
pub const DISCONNECTED: u16 = 4003;

/// What the connection's timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    /// Nothing due yet.
    Wait,
    /// Send a ping.
    Ping,
    /// The client sent nothing for the idle timeout.
    Idle,
    /// The token expired.
    Expired,
}

/// Pings, idle detection and token expiry of one connection, on one timer.
#[derive(Debug)]
struct Heartbeat {
    leeway_secs: i64,
    ping_interval: Duration,
    idle_timeout: Duration,
    expires: Instant,
    last_heard: Instant,
    next_ping: Instant,
}

impl Heartbeat {
    fn new(config: &crate::config::Config, exp_unix: i64, now: Instant) -> Heartbeat {
        let leeway_secs = config.jwt_leeway_secs as i64;
        Heartbeat {
            leeway_secs,
            expires: expiry_instant(exp_unix, leeway_secs, now),
            ping_interval: config.ping_interval(),
            idle_timeout: config.idle_timeout(),
            last_heard: now,
            next_ping: now + config.ping_interval(),
        }
    }

    /// A `refresh` replaced the token: the connection now ends at `exp_unix`.
    fn refresh(&mut self, exp_unix: i64, now: Instant) {
        self.expires = expiry_instant(exp_unix, self.leeway_secs, now);
    }

    fn heard_from_client(&mut self, now: Instant) {
        self.last_heard = now;
    }

    fn next_deadline(&self) -> Instant {
        self.expires
            .min(self.next_ping)
            .min(self.last_heard + self.idle_timeout)
    }

    fn tick(&mut self, now: Instant) -> Tick {
        if now >= self.expires {
            Tick::Expired
        } else if now >= self.last_heard + self.idle_timeout {
            Tick::Idle
        } else if now >= self.next_ping {
            self.next_ping = now + self.ping_interval;
            Tick::Ping
        } else {
            Tick::Wait
        }
    }
}

/// The instant a token expiring at `exp_unix` (plus leeway) runs out.
/// Saturating: an `exp` near `i64::MAX` means "not within a century".
fn expiry_instant(exp_unix: i64, leeway_secs: i64, now: Instant) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let left = exp_unix
        .saturating_add(leeway_secs)
        .saturating_sub(chrono::Utc::now().timestamp());
    let left = Duration::from_secs(left.max(0).unsigned_abs()).min(CENTURY);
    now.checked_add(left).unwrap_or(now + CENTURY)
}

/// Why writing to the socket stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteError {
    /// The outbox overflowed while the socket was full.
    SlowConsumer,
    /// The socket failed.
    Failed,
    /// The socket took no bytes for the write timeout.
    TimedOut,
}

impl From<WriteError> for Closed {
    fn from(e: WriteError) -> Closed {
        match e {
            WriteError::SlowConsumer => Closed::SlowConsumer,
            WriteError::Failed => Closed::WriteFailed,
            WriteError::TimedOut => Closed::WriteTimedOut,
        }
    }
}

/// Feeds every queued frame, then flushes once. Gives up after `timeout`,
/// or as soon as the shard marks the connection a slow consumer (the
/// socket is then typically full, so waiting for it would be pointless).
async fn write_queued<S: Transport>(
    ws: &mut SharedWs<S>,
    outbox: &Outbox,
    timeout: Duration,
    metrics: &ShardMetrics,
    limits: OutboxLimits,
) -> Result<(), WriteError> {
    let _busy = outbox.busy();
    if outbox.failed() {
        return Err(WriteError::Failed);
    }
    let frames = outbox.take();
    // What a direct write left in the socket's buffer is flushed here too.
    let unflushed = outbox.take_unflushed();
    if frames.is_empty() && unflushed == 0 {
        return Ok(());
    }
    metrics.frames_out.add(frames.len() as u64);
    let bytes: usize = frames.iter().map(|f| f.len()).sum::<usize>() + unflushed;
    let write = async {
        for frame in frames {
            ws.feed(Message::Text(frame)).await?;
        }
        ws.flush().await
    };
    let write = tokio::time::timeout(timeout, write);
    tokio::pin!(write);
    let result = loop {
        tokio::select! {
            r = &mut write => break r,
            () = outbox.changed() => {
                if outbox.state() == OutboxState::SlowConsumer {
                    return Err(WriteError::SlowConsumer);
                }
            }
        }
    };
    // Wake-ups consumed above meant "more queued": keep them for the caller.
    if !outbox.is_empty() || outbox.state() != OutboxState::Open {
        outbox.nudge();
    }
    match result {
        Ok(Ok(())) => {
            outbox.written(bytes, limits);
            Ok(())
        }
        Ok(Err(_)) => Err(WriteError::Failed),
        Err(_) => Err(WriteError::TimedOut),
    }
}

/// Why a paged reply stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamError {
    /// Writing to the socket failed.
    Write(WriteError),
    /// A page could not be read: the reply cannot be completed.
    Database,
}

/// Writes a paged reply: first what the outbox held (it was queued before
/// this reply), then the reply's head and its pages, each page fed frame by
/// frame (each feed waits for the socket once its buffer is full) and
/// flushed within `timeout` before the next page is read. Live traffic
/// queues in the outbox meanwhile; the reply's time does not count against
/// the client. Stops early when the outbox is marked slow or going away
/// (the caller sees it next).
async fn write_stream<S: Transport>(
    ws: &mut SharedWs<S>,
    outbox: &Outbox,
    mut stream: ReplyStream,
    timeout: Duration,
    metrics: &ShardMetrics,
    limits: OutboxLimits,
) -> Result<(), StreamError> {
    if outbox.state() != OutboxState::Open {
        // Closing anyway: the caller sees why next.
        return Ok(());
    }
    // Live frames wait behind the reply: no direct write until it ends.
    let _busy = outbox.busy();
    write_queued(ws, outbox, timeout, metrics, limits)
        .await
        .map_err(StreamError::Write)?;
    outbox.set_replying(true);
    let result = async {
        if let Some(head) = stream.take_head() {
            write_all(ws, std::iter::once(Message::Text(head)), timeout, metrics).await?;
        }
        while outbox.state() == OutboxState::Open {
            // Waiting for budget or for the database, the connection still
            // notices at once that it is closing (slow, or shutting down).
            let next = tokio::select! {
                next = stream.next_page() => next,
                () = closing(outbox) => break,
            };
            match next {
                None => break,
                Some(Ok(page)) => write_all(ws, page, timeout, metrics).await?,
                Some(Err(e)) => {
                    debug!(error = %e, "reply page not read");
                    metrics.db_errors.inc();
                    return Err(StreamError::Database);
                }
            }
        }
        Ok(())
    }
    .await;
    outbox.set_replying(false);
    // Wake-ups consumed while waiting meant "more queued" or "closing":
    // keep them for the caller.
    if !outbox.is_empty() || outbox.state() != OutboxState::Open {
        outbox.nudge();
    }
    result
}

/// Resolves once the outbox is no longer open.
async fn closing(outbox: &Outbox) {
    while outbox.state() == OutboxState::Open {
        outbox.changed().await;
    }
}

/// Feeds `messages` in order (encoded as they are taken) and flushes,
/// within `timeout`.
async fn write_all<S: Transport>(
    ws: &mut SharedWs<S>,
    messages: impl Iterator<Item = Message>,
    timeout: Duration,
    metrics: &ShardMetrics,
) -> Result<(), StreamError> {
    let write = async {
        for message in messages {
            metrics.frames_out.inc();
            ws.feed(message).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(StreamError::Write(WriteError::Failed)),
        Err(_) => Err(StreamError::Write(WriteError::TimedOut)),
    }
}

/// How long a connection that sent its close frame keeps reading (and
/// discarding) what the client still sends, waiting for the client's own
/// close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Sends a close frame, briefly waiting for it to go out, then reads and
/// discards the client's input until its close frame (or [`CLOSE_LINGER`]).
/// Closing a socket with unread input makes the kernel reset it, and a reset
/// can destroy the close frame before the client reads it: a client cut off
/// mid-stream (flooding, shutdown) would see 1006 instead of the code.
async fn close<S: Transport>(
    ws: &mut SharedWs<S>,
    outbox: &Outbox,
    code: CloseCode,
    reason: &'static str,
) {
    // Nothing may follow the close frame: the flusher stops writing here.
    outbox.detach();
    // Boxed: it runs once, at the end; inline it would size every
    // connection's task for its whole life.
    Box::pin(close_now(ws, code, reason)).await;
}

/// [`close`], unboxed.
async fn close_now<S: Transport>(ws: &mut SharedWs<S>, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    // Queues the close frame; while the client's window is full this may
    // not finish, and the frame stays queued for the drain below to flush.
    let _ =
        tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame)))).await;
    // Read and discard, and keep flushing what is queued (the close frame),
    // until the client answers the close or goes, or the linger ends.
    let mut flushed = false;
    let drain = std::future::poll_fn(|cx| {
        if !flushed {
            match ws.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => flushed = true,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => {}
            }
        }
        // A bounded number of frames per poll: other connections get a turn.
        for _ in 0..64 {
            match ws.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    });
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod serve_tests;
