//! The transport of one WebSocket connection: reads frames and hands them
//! to its [`Session`], and writes whatever its [`Outbox`] holds — feeding
//! every queued frame, then flushing once.
//!
//! A connection's error ends that connection and nothing else.

use std::rc::Rc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::protocol::{encode_error, Frame};
use crate::ratelimit::{RateLimiter, Verdict};
use crate::session::{Deferred, Outcome, Session};
use crate::shard::outbox::{Outbox, OutboxState};
use crate::shard::Shard;

/// A byte stream a WebSocket runs over: a plain `TcpStream` or a TLS stream.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {}
impl<S: AsyncRead + AsyncWrite + Unpin> Transport for S {}

/// Serves one registered connection until the client leaves, the
/// connection fails, or the server closes it.
pub async fn serve<S: Transport>(
    shard: Rc<Shard>,
    mut ws: WebSocketStream<S>,
    outbox: Rc<Outbox>,
    session: Session,
) {
    debug!("connection opened");
    let config = &shard.config;
    let limits = shard.outbox_limits();
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
        let reading = pending.is_none() && !shard.draining();
        tokio::select! {
            () = &mut ticker => {
                match clock.tick(Instant::now()) {
                    Tick::Wait => {}
                    Tick::Ping => {
                        let ping = ws.send(Message::Ping(Default::default()));
                        if tokio::time::timeout(write_timeout, ping).await.is_err() {
                            break "write timed out";
                        }
                    }
                    Tick::Idle => {
                        close(&mut ws, CloseCode::Away, "idle timeout").await;
                        break "idle timeout";
                    }
                    Tick::Expired => {
                        close(&mut ws, CloseCode::from(TOKEN_EXPIRED), "token expired").await;
                        break "token expired";
                    }
                }
                ticker.as_mut().reset(clock.next_deadline());
            }
            _ = outbox.changed() => match outbox.state() {
                OutboxState::Open => match write_queued(&mut ws, &outbox, write_timeout, &shard).await {
                    Ok(()) => {}
                    Err(WriteError::SlowConsumer) => {
                        close(&mut ws, CloseCode::Policy, "slow consumer").await;
                        break "slow consumer";
                    }
                    Err(WriteError::Failed) => break "write failed",
                    Err(WriteError::TimedOut) => break "write timed out",
                },
                OutboxState::SlowConsumer => {
                    close(&mut ws, CloseCode::Policy, "slow consumer").await;
                    break "slow consumer";
                }
                OutboxState::GoingAway => {
                    let _ = write_queued(&mut ws, &outbox, write_timeout, &shard).await;
                    close(&mut ws, CloseCode::Away, "going away").await;
                    break "server shutting down";
                }
            },
            reply = async { pending.as_mut().expect("guarded by is_some").await }, if pending.is_some() => {
                pending = None;
                if reply.len() <= 1 {
                    for frame in reply {
                        outbox.push(frame, limits);
                    }
                } else {
                    // A replay (bounded by --recovery-max) goes straight to
                    // the socket: the outbox bounds are for live traffic.
                    match write_direct(&mut ws, reply, write_timeout).await {
                        Ok(()) => {}
                        Err(WriteError::TimedOut) => break "write timed out",
                        Err(_) => break "write failed",
                    }
                }
            }
            incoming = ws.next(), if reading => match incoming {
                None => break "closed by client",
                Some(Ok(message)) => {
                    let now = Instant::now();
                    clock.heard_from_client(now);
                    if !matches!(message, Message::Text(_) | Message::Binary(_)) {
                        // tungstenite answers pings and close frames itself.
                        continue;
                    }
                    shard.metrics().frames_in.inc();
                    match limiter.check(now) {
                        Verdict::Allow => {}
                        Verdict::Refuse => {
                            shard.metrics().rate_limited.inc();
                            outbox.push(encode_error("rate limited"), limits);
                            continue;
                        }
                        Verdict::Disconnect => {
                            close(&mut ws, CloseCode::Policy, "rate limit exceeded").await;
                            break "rate limit exceeded";
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
                                let _ = write_queued(&mut ws, &outbox, write_timeout, &shard).await;
                                close(&mut ws, CloseCode::from(TOKEN_EXPIRED), "token user mismatch").await;
                                break "refresh with another user's token";
                            }
                        },
                        _ => {
                            outbox.push(encode_error("binary frames are not supported; send JSON text frames"), limits);
                        }
                    }
                }
                Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)))
                | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_))) => {
                    break "closed by client without a close frame";
                }
                Some(Err(e)) => {
                    let (code, reason) = match &e {
                        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                            (CloseCode::Size, "message too big")
                        }
                        WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8"),
                        WsError::Protocol(_) => (CloseCode::Protocol, "protocol error"),
                        _ => break "connection error",
                    };
                    debug!(error = %e, "closing on bad input");
                    close(&mut ws, code, reason).await;
                    break reason;
                }
            },
        }
    };
    match reason {
        "slow consumer" => shard.metrics().slow_consumers.inc(),
        "rate limit exceeded" => shard.metrics().flood_disconnects.inc(),
        _ => {}
    }
    debug!(reason, "connection closed");
}

/// Close code sent when the client's token expires.
pub const TOKEN_EXPIRED: u16 = 4001;

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
fn expiry_instant(exp_unix: i64, leeway_secs: i64, now: Instant) -> Instant {
    let left = exp_unix + leeway_secs - chrono::Utc::now().timestamp();
    now + Duration::from_secs(left.max(0) as u64)
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

/// Feeds every queued frame, then flushes once. Gives up after `timeout`,
/// or as soon as the shard marks the connection a slow consumer (the
/// socket is then typically full, so waiting for it would be pointless).
async fn write_queued<S: Transport>(
    ws: &mut WebSocketStream<S>,
    outbox: &Outbox,
    timeout: Duration,
    shard: &Shard,
) -> Result<(), WriteError> {
    let frames = outbox.take();
    if frames.is_empty() {
        return Ok(());
    }
    shard.metrics().frames_out.add(frames.len() as u64);
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
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteError::Failed),
        Err(_) => Err(WriteError::TimedOut),
    }
}

/// Writes `frames` in order and flushes, within `timeout`.
async fn write_direct<S: Transport>(
    ws: &mut WebSocketStream<S>,
    frames: Vec<Frame>,
    timeout: Duration,
) -> Result<(), WriteError> {
    let write = async {
        for frame in frames {
            ws.feed(Message::Text(frame)).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteError::Failed),
        Err(_) => Err(WriteError::TimedOut),
    }
}

/// Sends a close frame, briefly waiting for it to go out.
async fn close<S: Transport>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> crate::config::Config {
        let mut c =
            crate::config::Config::for_tests("postgres://x", "s", "127.0.0.1:0".parse().unwrap());
        c.ping_interval_secs = 10;
        c.idle_timeout_secs = 25;
        c
    }

    #[test]
    fn heartbeat_pings_then_times_out_idle_clients() {
        let now = Instant::now();
        let exp = chrono::Utc::now().timestamp() + 3600;
        let mut h = Heartbeat::new(&config(), exp, now);
        assert_eq!(h.next_deadline(), now + Duration::from_secs(10));
        assert_eq!(h.tick(now + Duration::from_secs(5)), Tick::Wait);
        assert_eq!(h.tick(now + Duration::from_secs(10)), Tick::Ping);
        assert_eq!(h.next_deadline(), now + Duration::from_secs(20));
        h.heard_from_client(now + Duration::from_secs(12));
        assert_eq!(h.tick(now + Duration::from_secs(20)), Tick::Ping);
        assert_eq!(
            h.tick(now + Duration::from_secs(37)),
            Tick::Idle,
            "25 s after the last frame"
        );
    }

    #[test]
    fn heartbeat_closes_at_token_expiry() {
        let now = Instant::now();
        let exp = chrono::Utc::now().timestamp() + 4;
        let h = Heartbeat::new(&config(), exp, now);
        assert!(h.next_deadline() <= now + Duration::from_secs(4));
        let mut h = h;
        assert_eq!(h.tick(now + Duration::from_secs(5)), Tick::Expired);
        let past = Heartbeat::new(&config(), exp - 100, now);
        assert_eq!(past.next_deadline(), now);
    }

    #[test]
    fn refresh_moves_the_expiry() {
        let now = Instant::now();
        let exp = chrono::Utc::now().timestamp() + 4;
        let mut h = Heartbeat::new(&config(), exp, now);
        h.refresh(exp + 3600, now);
        assert_eq!(h.tick(now + Duration::from_secs(5)), Tick::Wait);
        assert!(
            h.next_deadline() <= now + Duration::from_secs(10),
            "pings go on"
        );
    }
}
