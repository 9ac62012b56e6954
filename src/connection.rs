//! The transport of one WebSocket connection: reads frames and hands them
//! to its [`Session`], and writes whatever its [`Outbox`] holds — feeding
//! every queued frame, then flushing once.
//!
//! A connection's error ends that connection and nothing else.

use std::rc::Rc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::protocol::encode_error;
use crate::session::{Deferred, Outcome, Session};
use crate::shard::outbox::{Outbox, OutboxState};
use crate::shard::Shard;

type Ws = WebSocketStream<TcpStream>;

/// Serves one registered connection until the client leaves, the
/// connection fails, or the server closes it.
pub async fn serve(shard: Rc<Shard>, mut ws: Ws, outbox: Rc<Outbox>, session: Session) {
    debug!("connection opened");
    let limits = shard.outbox_limits();
    let write_timeout = shard.config.write_timeout();
    let mut pending: Option<Deferred> = None;
    let reason = loop {
        let reading = pending.is_none() && !shard.draining();
        tokio::select! {
            _ = outbox.changed() => match outbox.state() {
                OutboxState::Open => {
                    if let Err(e) = write_queued(&mut ws, &outbox, write_timeout).await {
                        break e;
                    }
                }
                OutboxState::SlowConsumer => {
                    close(&mut ws, CloseCode::Policy, "slow consumer").await;
                    break "slow consumer";
                }
                OutboxState::GoingAway => {
                    let _ = write_queued(&mut ws, &outbox, write_timeout).await;
                    close(&mut ws, CloseCode::Away, "going away").await;
                    break "server shutting down";
                }
            },
            reply = async { pending.as_mut().expect("guarded by is_some").await }, if pending.is_some() => {
                pending = None;
                if let Some(frame) = reply {
                    outbox.push(frame, limits);
                }
            }
            incoming = ws.next(), if reading => match incoming {
                None => break "closed by client",
                Some(Ok(Message::Text(text))) => match session.handle(text.as_str()) {
                    Outcome::Reply(frame) => {
                        outbox.push(frame, limits);
                    }
                    Outcome::Queued => {}
                    Outcome::Later(deferred) => pending = Some(deferred),
                },
                Some(Ok(Message::Binary(_))) => {
                    outbox.push(encode_error("binary frames are not supported; send JSON text frames"), limits);
                }
                // tungstenite answers pings and close frames itself.
                Some(Ok(_)) => {}
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
    debug!(reason, "connection closed");
}

/// Feeds every queued frame, then flushes once; gives up after `timeout`.
async fn write_queued(ws: &mut Ws, outbox: &Outbox, timeout: Duration) -> Result<(), &'static str> {
    let frames = outbox.take();
    if frames.is_empty() {
        return Ok(());
    }
    let write = async {
        for frame in frames {
            ws.feed(Message::Text(frame)).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("write failed"),
        Err(_) => Err("write timed out"),
    }
}

/// Sends a close frame, briefly waiting for it to go out.
async fn close(ws: &mut Ws, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
}
