//! Direct writes (issue 16): the shard writes a connection's queued frames
//! straight to its socket, without waking the connection's task.
//!
//! A delivery pass pushes a frame into each member's [`Outbox`]; an outbox
//! that was empty puts itself, once, on its shard's [`Flusher`] list. When
//! the pass is over the flusher's task runs (one task wake-up per pass, not
//! one per member) and, for each listed connection, hands every queued
//! frame to the socket and flushes: one `write(2)` per connection per pass.
//!
//! The connection task keeps every case a direct write cannot finish at
//! once: a full socket (the flush would have to wait), a reply under way
//! (live frames wait behind it), closing. The outbox then wakes it, as
//! before direct writes existed. The two never write at the same time:
//! both run on the shard's one thread, the flusher only while the task is
//! not writing ([`Outbox::busy`]), and neither holds the socket across an
//! await.
//!
//! Bounded: the list holds each connection of the shard at most once.

use std::cell::RefCell;
use std::rc::Rc;

use tokio::sync::Notify;

use super::outbox::{Outbox, OutboxLimits};
use crate::metrics::ShardMetrics;

/// What a direct write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// Every frame taken reached the socket.
    Flushed {
        /// Frames written.
        frames: usize,
        /// Their bytes.
        bytes: usize,
    },
    /// The frames were handed to the socket's buffer, but the socket is full:
    /// the connection task must finish the flush (`bytes` are its to count).
    Pending {
        /// Frames handed over.
        frames: usize,
        /// Their bytes.
        bytes: usize,
    },
    /// The socket is in use (cannot happen on one thread; handled anyway).
    Busy,
    /// The socket failed: the connection task ends the connection.
    Failed,
}

/// A connection's socket as the flusher sees it: takes the outbox's queued
/// frames and writes them without waiting (frames it cannot hand over are
/// put back with [`Outbox::requeue_front`]).
pub trait DirectWrite {
    /// Writes `outbox`'s queued frames and flushes, never waiting.
    fn write_direct(&self, outbox: &Outbox) -> Direct;
}

/// Most connections written in one go before the flusher yields to the
/// shard's other tasks.
pub const FLUSH_BURST: usize = 1024;

/// One shard's list of connections due for a direct write, and the wake-up
/// of the task that writes them.
#[derive(Debug, Default)]
pub struct Flusher {
    due: RefCell<Vec<Rc<Outbox>>>,
    wake: Notify,
}

impl Flusher {
    /// Lists `outbox` for the next pass (the outbox lists itself once).
    pub fn schedule(&self, outbox: Rc<Outbox>) {
        let mut due = self.due.borrow_mut();
        due.push(outbox);
        if due.len() == 1 {
            self.wake.notify_one();
        }
    }

    /// The flusher's task: after each delivery pass, writes every listed
    /// connection directly. Runs for the shard's life.
    ///
    /// Outside tokio's cooperative budget: within it, every socket write
    /// spends one unit, and past 128 of them in one poll each write would
    /// answer `Pending` (a hot room of thousands of members would hand
    /// nearly every connection to its task). It yields instead after every
    /// [`FLUSH_BURST`] connections, so that reads and accepts get a turn.
    pub async fn run(&self, metrics: &ShardMetrics, limits: OutboxLimits) {
        tokio::task::unconstrained(async {
            let mut due = Vec::new();
            loop {
                self.wake.notified().await;
                std::mem::swap(&mut due, &mut *self.due.borrow_mut());
                let (mut frames, mut handoffs) = (0, 0);
                for (i, outbox) in due.drain(..).enumerate() {
                    if i > 0 && i % FLUSH_BURST == 0 {
                        tokio::task::yield_now().await;
                    }
                    let (written, handed) = outbox.write_direct(limits);
                    frames += written;
                    handoffs += usize::from(handed);
                }
                metrics.frames_out.add(frames as u64);
                metrics.frames_out_direct.add(frames as u64);
                metrics.direct_handoffs.add(handoffs as u64);
            }
        })
        .await
    }
}
