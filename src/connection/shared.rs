//! One connection's WebSocket, shared on its shard's thread between the
//! connection task and the shard's flusher (issue 16: direct writes).
//!
//! Each poll borrows the socket for that poll only, so neither side ever
//! holds it across an await; the flusher writes only while the task is not
//! writing (`Outbox::busy`), so their frames never interleave.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::{Sink, Stream};
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::Transport;
use crate::shard::flush::{Direct, DirectWrite};
use crate::shard::outbox::Outbox;

/// A WebSocket both the connection task and the flusher can write; a
/// `Stream` and a `Sink` like the socket it wraps.
pub struct SharedWs<S>(Rc<RefCell<WebSocketStream<S>>>);

impl<S> Clone for SharedWs<S> {
    fn clone(&self) -> Self {
        SharedWs(self.0.clone())
    }
}

impl<S: Transport> SharedWs<S> {
    /// Wraps the connection's socket.
    pub fn new(ws: WebSocketStream<S>) -> SharedWs<S> {
        SharedWs(Rc::new(RefCell::new(ws)))
    }

    /// One poll of the socket; the borrow ends with the call.
    fn with<T>(&self, f: impl FnOnce(Pin<&mut WebSocketStream<S>>) -> T) -> T {
        f(Pin::new(&mut *self.0.borrow_mut()))
    }
}

impl<S: Transport> Stream for SharedWs<S> {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.with(|ws| ws.poll_next(cx))
    }
}

impl<S: Transport> Sink<Message> for SharedWs<S> {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.with(|ws| ws.poll_ready(cx))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        self.with(|ws| ws.start_send(item))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.with(|ws| ws.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.with(|ws| ws.poll_close(cx))
    }
}

impl<S: Transport> DirectWrite for SharedWs<S> {
    /// Hands every queued frame to tungstenite and flushes, polling with a
    /// waker that wakes no one: whatever cannot finish now (`Pending`) the
    /// connection task redoes with its own waker, which the outbox wakes.
    fn write_direct(&self, outbox: &Outbox) -> Direct {
        let Ok(mut ws) = self.0.try_borrow_mut() else {
            return Direct::Busy;
        };
        let mut ws = Pin::new(&mut *ws);
        let mut cx = Context::from_waker(Waker::noop());
        let mut frames = outbox.take();
        let (mut sent, mut bytes) = (0, 0);
        while let Some(frame) = frames.pop_front() {
            match ws.as_mut().poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Direct::Failed,
                Poll::Pending => {
                    frames.push_front(frame);
                    outbox.requeue_front(frames);
                    return Direct::Pending {
                        frames: sent,
                        bytes,
                    };
                }
            }
            let len = frame.len();
            if ws.as_mut().start_send(Message::Text(frame)).is_err() {
                return Direct::Failed;
            }
            sent += 1;
            bytes += len;
        }
        match ws.as_mut().poll_flush(&mut cx) {
            Poll::Ready(Ok(())) => Direct::Flushed {
                frames: sent,
                bytes,
            },
            Poll::Ready(Err(_)) => Direct::Failed,
            Poll::Pending => Direct::Pending {
                frames: sent,
                bytes,
            },
        }
    }
}
