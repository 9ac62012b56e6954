//! A connection's bounded outbound queue, shared (shard-locally) between the
//! shard, which fills it, and whoever drains it to the socket: the shard's
//! [`Flusher`] writes it directly when the connection is idle (issue 16),
//! the connection task otherwise (a full socket, a reply under way, closing).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::flush::{Direct, DirectWrite, Flusher};
use crate::protocol::{Frame, UserId};
use crate::router::ConnId;

/// Bounds on one connection's queue of live traffic. A client is judged by
/// what it fails to read over time: past the soft bounds (`frames`,
/// `bytes`) for longer than `grace`, or past twice them at any moment, it
/// is a slow consumer and is disconnected. Bytes count what is queued and
/// what the connection task took and is still writing.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Most frames queued (soft bound).
    pub frames: usize,
    /// Most bytes queued or being written (soft bound).
    pub bytes: usize,
    /// How long the queue may stay above a soft bound.
    pub grace: Duration,
}

/// The hard bounds are this many times the soft ones. With bytes in the
/// middle of being written counted, 2 keeps the memory one stalled
/// connection can hold where it was before the grace existed (one outbox
/// queued plus one being written).
pub const HARD_FACTOR: usize = 2;

impl OutboxLimits {
    /// The bounds set by `--outbox-frames`, `--outbox-bytes` and
    /// `--slow-consumer-grace-ms`.
    pub fn from_config(config: &crate::config::Config) -> OutboxLimits {
        OutboxLimits {
            frames: config.outbox_frames,
            bytes: config.outbox_bytes,
            grace: Duration::from_millis(config.slow_consumer_grace_ms),
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
    /// Issue 15: an operator disconnected the user (the server API): drop
    /// the queue, close with 4003.
    Disconnected,
}

/// One connection's outbound frames.
#[derive(Debug)]
pub struct Outbox {
    /// The connection, unique within its shard.
    pub id: ConnId,
    /// The connection's user.
    pub user: UserId,
    queue: RefCell<VecDeque<Frame>>,
    /// Bytes queued plus bytes taken and not yet written.
    bytes: Cell<usize>,
    /// Since when the queue is above a soft bound (None: it is not).
    over_since: Cell<Option<Instant>>,
    /// A reply to the client's own request is being written: live traffic
    /// waits behind it, so the time above the soft bounds does not count.
    replying: Cell<bool>,
    state: Cell<OutboxState>,
    wake: Notify,
    /// What this connection was sent of its user's DMs.
    pub dms: Cursor,
    /// The connection's socket and its shard's flusher, while the
    /// connection may be written directly (see [`Flusher`]).
    direct: RefCell<Option<Attached>>,
    /// Waiting in the flusher's list (at most once).
    scheduled: Cell<bool>,
    /// The connection task is writing (a batch, a reply, a ping): the
    /// flusher leaves the socket to it.
    busy: Cell<bool>,
    /// Bytes a direct write handed to the socket's buffer that did not all
    /// reach the socket: the connection task finishes the flush.
    unflushed: Cell<usize>,
    /// A direct write failed: the connection task ends the connection.
    failed: Cell<bool>,
}

/// What a direct write needs, attached by the connection task.
struct Attached {
    writer: Rc<dyn DirectWrite>,
    flusher: Rc<Flusher>,
    me: Weak<Outbox>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attached")
    }
}

/// Marks the connection task as writing until dropped (then restores what
/// was there before, so guards nest).
#[derive(Debug)]
pub struct Busy<'a> {
    outbox: &'a Outbox,
    was: bool,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.outbox.busy.set(self.was);
    }
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

    /// The client says it has every id up to `since` (a `join` with
    /// `since`, a `dm_sync`): live messages up to it are skipped from now
    /// on. Live delivery is in id order, so only a node behind the one the
    /// client left (cluster mode) can still have such messages to send.
    pub fn seen_through(&self, since: i64) {
        self.floor.set(self.floor.get().max(since));
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
            over_since: Cell::new(None),
            replying: Cell::new(false),
            state: Cell::new(OutboxState::Open),
            wake: Notify::new(),
            dms: Cursor::default(),
            direct: RefCell::new(None),
            scheduled: Cell::new(false),
            busy: Cell::new(false),
            unflushed: Cell::new(0),
            failed: Cell::new(false),
        }
    }

    /// Lets the shard's `flusher` write this connection's frames straight
    /// to `writer` (its socket) while the connection task is idle.
    pub fn attach(self: &Rc<Self>, writer: Rc<dyn DirectWrite>, flusher: Rc<Flusher>) {
        *self.direct.borrow_mut() = Some(Attached {
            writer,
            flusher,
            me: Rc::downgrade(self),
        });
    }

    /// From now on only the connection task writes (it is closing); drops
    /// the outbox's handle on the socket.
    pub fn detach(&self) {
        self.direct.borrow_mut().take();
    }

    /// The connection task writes until the guard is dropped.
    pub fn busy(&self) -> Busy<'_> {
        Busy {
            outbox: self,
            was: self.busy.replace(true),
        }
    }

    /// Something was queued into an empty outbox: schedules a direct write
    /// when the connection can take one, else wakes the connection task.
    fn kick(&self) {
        if self.idle_and_open() {
            if let Some(attached) = &*self.direct.borrow() {
                if self.scheduled.get() {
                    return;
                }
                if let Some(me) = attached.me.upgrade() {
                    self.scheduled.set(true);
                    attached.flusher.schedule(me);
                    return;
                }
            }
        }
        self.wake.notify_one();
    }

    /// The flusher's turn: writes what is queued straight to the socket
    /// (no task wake-up) when the connection is idle; hands over to the
    /// connection task when it is not, when the socket is full, or when the
    /// write failed. Returns the frames written and whether the connection
    /// task was handed the rest.
    pub fn write_direct(&self, limits: OutboxLimits) -> (usize, bool) {
        self.scheduled.set(false);
        if self.queue.borrow().is_empty() {
            // The connection task took it meanwhile.
            return (0, false);
        }
        let writer = match &*self.direct.borrow() {
            Some(a) if self.idle_and_open() => a.writer.clone(),
            _ => {
                self.wake.notify_one();
                return (0, true);
            }
        };
        match writer.write_direct(self) {
            Direct::Flushed { frames, bytes } => {
                self.written(bytes + self.unflushed.replace(0), limits);
                (frames, false)
            }
            Direct::Pending { frames, bytes } => {
                self.unflushed.set(self.unflushed.get() + bytes);
                self.wake.notify_one();
                (frames, true)
            }
            Direct::Busy => {
                self.wake.notify_one();
                (0, true)
            }
            Direct::Failed => {
                self.failed.set(true);
                self.wake.notify_one();
                (0, true)
            }
        }
    }

    /// The flusher may write now: the connection task is not writing and
    /// the connection is not closing.
    fn idle_and_open(&self) -> bool {
        !self.busy.get() && self.state.get() == OutboxState::Open
    }

    /// Puts frames a direct write could not hand to the socket back at the
    /// front of the queue, in order.
    pub fn requeue_front(&self, mut frames: VecDeque<Frame>) {
        let mut queue = self.queue.borrow_mut();
        frames.append(&mut queue);
        *queue = frames;
    }

    /// Bytes a direct write left for the connection task to flush (they
    /// still count in [`bytes`](Self::bytes)); resets it.
    pub fn take_unflushed(&self) -> usize {
        self.unflushed.replace(0)
    }

    /// True once a direct write failed (the socket is gone).
    pub fn failed(&self) -> bool {
        self.failed.get()
    }

    /// Queues a frame; into an empty queue, has it written (by the shard's
    /// flusher when the connection is idle, else by the connection task).
    /// Returns false when this push made the connection a slow consumer:
    /// the queue is then dropped.
    pub fn push(&self, frame: Frame, limits: OutboxLimits) -> bool {
        self.push_at(frame, limits, Instant::now)
    }

    /// [`push`](Self::push) with the clock given: `now` is read only when
    /// the queue is above a soft bound (never on the common path).
    pub fn push_at(
        &self,
        frame: Frame,
        limits: OutboxLimits,
        now: impl FnOnce() -> Instant,
    ) -> bool {
        if matches!(
            self.state.get(),
            OutboxState::SlowConsumer | OutboxState::Disconnected
        ) {
            return true;
        }
        let len = frame.len();
        let mut queue = self.queue.borrow_mut();
        let frames = queue.len() + 1;
        let bytes = self.bytes.get() + len;
        let hard = frames > limits.frames.saturating_mul(HARD_FACTOR)
            || bytes > limits.bytes.saturating_mul(HARD_FACTOR);
        let slow = hard
            || (frames > limits.frames || bytes > limits.bytes) && self.over_for(limits.grace, now);
        if slow {
            queue.clear();
            queue.shrink_to_fit();
            self.bytes.set(0);
            self.state.set(OutboxState::SlowConsumer);
            self.wake.notify_one();
            return false;
        }
        queue.push_back(frame);
        self.bytes.set(bytes);
        if queue.len() == 1 {
            drop(queue);
            self.kick();
        }
        true
    }

    /// The queue is above a soft bound now: true once it has been for
    /// longer than `grace` (time spent writing a reply does not count).
    fn over_for(&self, grace: Duration, now: impl FnOnce() -> Instant) -> bool {
        if self.replying.get() {
            return false;
        }
        let now = now();
        match self.over_since.get() {
            None => {
                self.over_since.set(Some(now));
                grace.is_zero()
            }
            Some(since) => now.saturating_duration_since(since) > grace,
        }
    }

    /// Takes every queued frame, in order. Their bytes still count until
    /// [`written`](Self::written) says they reached the socket.
    pub fn take(&self) -> VecDeque<Frame> {
        std::mem::take(&mut *self.queue.borrow_mut())
    }

    /// `bytes` taken by [`take`](Self::take) were written: they no longer
    /// count; below the soft bounds again, the grace clock stops.
    pub fn written(&self, bytes: usize, limits: OutboxLimits) {
        let left = self.bytes.get().saturating_sub(bytes);
        self.bytes.set(left);
        if left <= limits.bytes && self.queue.borrow().len() <= limits.frames {
            self.over_since.set(None);
        }
    }

    /// Marks the start (true) or the end (false) of a reply written to the
    /// socket ahead of the queue. At its end, a queue still above a soft
    /// bound starts its grace afresh.
    pub fn set_replying(&self, replying: bool) {
        self.replying.set(replying);
        if !replying && self.over_since.get().is_some() {
            self.over_since.set(Some(Instant::now()));
        }
    }

    /// Bytes queued or being written now.
    pub fn bytes(&self) -> usize {
        self.bytes.get()
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

    /// Issue 15: asks the connection to close with 4003 (an operator
    /// disconnected its user); nothing more is queued or written before.
    pub fn disconnect(&self) {
        if self.state.get() != OutboxState::SlowConsumer {
            self.state.set(OutboxState::Disconnected);
            self.queue.borrow_mut().clear();
            self.bytes.set(0);
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
        grace: Duration::from_secs(5),
    };

    #[test]
    fn keeps_order_and_drains() {
        let o = Outbox::new(1, 1);
        assert!(o.push(Frame::from("a"), LIMITS));
        assert!(o.push(Frame::from("b"), LIMITS));
        let got: Vec<_> = o.take().into_iter().collect();
        assert_eq!(got, vec![Frame::from("a"), Frame::from("b")]);
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 2, "taken, not yet written");
        o.written(2, LIMITS);
        assert_eq!(o.bytes(), 0);
        assert_eq!(o.state(), OutboxState::Open);
    }

    #[test]
    fn past_twice_the_bounds_a_client_is_slow_at_once() {
        let t0 = Instant::now();
        let o = Outbox::new(1, 1);
        for _ in 0..6 {
            assert!(o.push_at(Frame::from("x"), LIMITS, || t0));
        }
        assert_eq!(
            o.state(),
            OutboxState::Open,
            "above the soft bound, in grace"
        );
        assert!(!o.push_at(Frame::from("x"), LIMITS, || t0));
        assert_eq!(o.state(), OutboxState::SlowConsumer);
        assert!(o.is_empty(), "queue dropped to bound memory");

        let o = Outbox::new(2, 1);
        assert!(o.push_at(Frame::from("y".repeat(150)), LIMITS, || t0));
        assert!(!o.push_at(Frame::from("y".repeat(60)), LIMITS, || t0));
        assert_eq!(o.state(), OutboxState::SlowConsumer);
        o.go_away();
        assert_eq!(o.state(), OutboxState::SlowConsumer);
    }

    #[test]
    fn a_client_is_judged_by_what_it_leaves_unread_over_time() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // One large frame above the soft bound, read within the grace: fine.
        let o = Outbox::new(1, 1);
        assert!(o.push_at(Frame::from("z".repeat(150)), LIMITS, || at(0)));
        let taken: usize = o.take().iter().map(|f| f.len()).sum();
        assert!(o.push_at(Frame::from("a"), LIMITS, || at(4_000)));
        o.written(taken, LIMITS);
        assert!(o.push_at(Frame::from("b"), LIMITS, || at(9_000)));
        assert_eq!(o.state(), OutboxState::Open);

        // Above the soft bound for longer than the grace: slow.
        let o = Outbox::new(2, 1);
        assert!(o.push_at(Frame::from("z".repeat(150)), LIMITS, || at(0)));
        assert!(o.push_at(Frame::from("a"), LIMITS, || at(4_000)));
        assert!(!o.push_at(Frame::from("b"), LIMITS, || at(5_001)));
        assert_eq!(o.state(), OutboxState::SlowConsumer);

        // While a reply to the client's own request is written, the clock
        // does not run.
        let o = Outbox::new(3, 1);
        o.set_replying(true);
        assert!(o.push_at(Frame::from("z".repeat(150)), LIMITS, || at(0)));
        assert!(o.push_at(Frame::from("a"), LIMITS, || at(60_000)));
        assert_eq!(o.state(), OutboxState::Open);
    }
}
