//! A connection's bounded outbound queue, shared (shard-locally) between the
//! shard, which fills it, and the connection task, which drains it to the
//! socket.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use tokio::sync::Notify;

use crate::protocol::{Frame, UserId};
use crate::router::ConnId;

/// Bounds on one connection's queue; past either, the client is a slow
/// consumer and is disconnected.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Most frames queued.
    pub frames: usize,
    /// Most bytes queued.
    pub bytes: usize,
}

impl OutboxLimits {
    /// The bounds set by `--outbox-frames` and `--outbox-bytes`.
    pub fn from_config(config: &crate::config::Config) -> OutboxLimits {
        OutboxLimits {
            frames: config.outbox_frames,
            bytes: config.outbox_bytes,
        }
    }
}

/// What the connection task should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    /// Deliver frames as they come.
    Open,
    /// The client did not keep up: drop the queue, close with 1008.
    SlowConsumer,
    /// The server is shutting down: write what is queued, close with 1001.
    GoingAway,
}

/// One connection's outbound frames.
#[derive(Debug)]
pub struct Outbox {
    /// The connection, unique within its shard.
    pub id: ConnId,
    /// The connection's user.
    pub user: UserId,
    queue: RefCell<VecDeque<Frame>>,
    bytes: Cell<usize>,
    state: Cell<OutboxState>,
    wake: Notify,
    /// What this connection was sent of its user's DMs.
    pub dms: Cursor,
}

/// What one connection has been sent of one ordered stream (a room's
/// messages, or its user's DMs), so that a replay (`join` with `since`,
/// `dm_sync`) and live delivery neither overlap nor leave a gap.
///
/// Live messages of a stream reach a connection in increasing id order,
/// from the moment it subscribed. So "everything this connection got live"
/// is every id from the first live one on, and a replay must cover exactly
/// the missed ids below it.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Id of the first live message delivered (0: none yet).
    first_live: Cell<i64>,
    /// Live messages up to this id were already replayed: skip them.
    floor: Cell<i64>,
}

impl Cursor {
    /// Called for each live message in id order: false when it was already
    /// sent by a replay and must be skipped.
    #[inline]
    pub fn admit(&self, id: i64) -> bool {
        if id <= self.floor.get() {
            return false;
        }
        if self.first_live.get() == 0 {
            self.first_live.set(id);
        }
        true
    }

    /// Of `missed` (stored messages newer than the client's `since`, oldest
    /// first, read *after* this cursor started tracking), keeps what the
    /// connection has not been sent live: the ids below the first live one.
    /// When nothing came live yet, the ids replayed now may still arrive
    /// live (committed before the read, published after): they are skipped.
    pub fn plan_replay<T>(&self, mut missed: Vec<T>, id: impl Fn(&T) -> i64) -> Vec<T> {
        match self.first_live.get() {
            0 => {
                if let Some(last) = missed.last() {
                    self.floor.set(self.floor.get().max(id(last)));
                }
            }
            first => missed.retain(|m| id(m) < first),
        }
        missed
    }
}

impl Outbox {
    /// An empty, open outbox.
    pub fn new(id: ConnId, user: UserId) -> Outbox {
        Outbox {
            id,
            user,
            queue: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            state: Cell::new(OutboxState::Open),
            wake: Notify::new(),
            dms: Cursor::default(),
        }
    }

    /// Queues a frame and wakes the connection task. Returns false when this
    /// push overflowed the limits: the queue is then dropped and the
    /// connection marked a slow consumer.
    pub fn push(&self, frame: Frame, limits: OutboxLimits) -> bool {
        if self.state.get() == OutboxState::SlowConsumer {
            return true;
        }
        let len = frame.len();
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= limits.frames || self.bytes.get() + len > limits.bytes {
            queue.clear();
            queue.shrink_to_fit();
            self.bytes.set(0);
            self.state.set(OutboxState::SlowConsumer);
            self.wake.notify_one();
            return false;
        }
        queue.push_back(frame);
        self.bytes.set(self.bytes.get() + len);
        if queue.len() == 1 {
            self.wake.notify_one();
        }
        true
    }

    /// Takes every queued frame, in order.
    pub fn take(&self) -> VecDeque<Frame> {
        self.bytes.set(0);
        std::mem::take(&mut *self.queue.borrow_mut())
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Current state.
    pub fn state(&self) -> OutboxState {
        self.state.get()
    }

    /// Asks the connection to close (unless it is already closing as a slow consumer).
    pub fn go_away(&self) {
        if self.state.get() == OutboxState::Open {
            self.state.set(OutboxState::GoingAway);
        }
        self.wake.notify_one();
    }

    /// Wakes the connection task without queuing anything (e.g. to notice draining).
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Waits until something was queued or the state changed since the last wait.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_and_live_neither_overlap_nor_leave_a_gap() {
        // Live first (ids 10, 11), then a replay from since = 3 that read 4..=12.
        let c = Cursor::default();
        assert!(c.admit(10) && c.admit(11));
        let replay = c.plan_replay((4..=12).collect(), |&i| i);
        assert_eq!(
            replay,
            (4..10).collect::<Vec<i64>>(),
            "only what came before live"
        );
        assert!(c.admit(12), "live after the replay keeps flowing");

        // Nothing live yet: the replay covers everything read, and live
        // copies of what it covered are skipped.
        let c = Cursor::default();
        let replay = c.plan_replay(vec![5, 6, 7], |&i| i);
        assert_eq!(replay, vec![5, 6, 7]);
        assert!(!c.admit(6) && !c.admit(7), "already replayed");
        assert!(c.admit(8));
        let again = c.plan_replay(vec![6, 7, 8, 9], |&i| i);
        assert_eq!(
            again,
            vec![6, 7],
            "asked again: sent again, up to the first live"
        );
    }

    const LIMITS: OutboxLimits = OutboxLimits {
        frames: 3,
        bytes: 100,
    };

    #[test]
    fn keeps_order_and_drains() {
        let o = Outbox::new(1, 1);
        assert!(o.push(Frame::from("a"), LIMITS));
        assert!(o.push(Frame::from("b"), LIMITS));
        let got: Vec<_> = o.take().into_iter().collect();
        assert_eq!(got, vec![Frame::from("a"), Frame::from("b")]);
        assert!(o.is_empty());
        assert_eq!(o.state(), OutboxState::Open);
    }

    #[test]
    fn overflow_by_frames_or_bytes_marks_slow_consumer() {
        let o = Outbox::new(1, 1);
        for _ in 0..3 {
            assert!(o.push(Frame::from("x"), LIMITS));
        }
        assert!(!o.push(Frame::from("x"), LIMITS));
        assert_eq!(o.state(), OutboxState::SlowConsumer);
        assert!(o.is_empty(), "queue dropped to bound memory");

        let o = Outbox::new(2, 1);
        assert!(o.push(Frame::from("y".repeat(60)), LIMITS));
        assert!(!o.push(Frame::from("y".repeat(60)), LIMITS));
        assert_eq!(o.state(), OutboxState::SlowConsumer);
        o.go_away();
        assert_eq!(o.state(), OutboxState::SlowConsumer);
    }
}
