//! Presence batching per room, on one shard (issue 16): the first presence
//! change of a room after a quiet window goes out at once; further changes
//! of that room within `--presence-batch-ms` are held and go out together
//! at the window's end (one `presence_batch` frame, or a plain `presence`
//! frame when one change is left). A user who went online then offline in
//! the window (or offline then online) nets out to nothing.
//!
//! Each room has one presence owner shard ([`owner`], a hash of its name):
//! every shard sends its changes of the room there (an inbox event, never
//! waiting), and the owner holds them in its own [`PresenceBatches`]
//! (plain state in a `RefCell`, never shared). A member thus gets at most
//! one frame per window per node, whichever shards its room's members
//! connect to. [`PresenceBatches`] decides; `shard::presence` routes,
//! sends and schedules the window ends.
//!
//! Bounded: a room holds at most `cap` users (then it is flushed early and
//! its window goes on), and a room has an entry only while a window is open
//! (a window that ends with nothing held removes it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::UserId;

/// The shard that batches `room`'s presence changes, of `shards`
/// (FNV-1a of the name: the same on every shard and every run).
pub fn owner(room: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

/// A user's held change: its state before the window and now.
#[derive(Debug, Clone)]
struct Held {
    username: String,
    before: bool,
    now: bool,
}

#[derive(Debug, Default)]
struct Window {
    /// When the window ends (its flush is scheduled for then).
    until: Option<Instant>,
    /// Held changes by user (ascending, so the lists come out sorted).
    held: BTreeMap<UserId, Held>,
}

/// One net presence change of a room, ready to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The user.
    pub user: UserId,
    /// Its username.
    pub username: String,
    /// Online (`true`) or offline.
    pub online: bool,
}

/// What to do with a change offered to [`PresenceBatches::offer`].
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Announce it now, and end the window at `window_end` (schedule
    /// [`PresenceBatches::window_end`] then).
    SendNow {
        /// When the window that this change opens ends.
        window_end: Instant,
    },
    /// No batching: announce it now, nothing to schedule.
    Unbatched,
    /// Held until the window's end.
    Held,
    /// The room's held set reached its cap: announce these now (the
    /// window goes on).
    Flush(Vec<Change>),
}

/// The presence windows of one shard's rooms.
#[derive(Debug)]
pub struct PresenceBatches {
    window: Duration,
    cap: usize,
    rooms: HashMap<Arc<str>, Window>,
}

impl PresenceBatches {
    /// Windows of `window` (zero: no batching), at most `cap` users held
    /// per room.
    pub fn new(window: Duration, cap: usize) -> PresenceBatches {
        PresenceBatches {
            window,
            cap: cap.max(1),
            rooms: HashMap::new(),
        }
    }

    /// Rooms with an open window (for tests and bounds).
    pub fn open_windows(&self) -> usize {
        self.rooms.len()
    }

    /// Offers `user`'s change to `online` in `room` at `now`.
    pub fn offer(
        &mut self,
        room: &Arc<str>,
        user: UserId,
        username: &str,
        online: bool,
        now: Instant,
    ) -> Offer {
        if self.window.is_zero() {
            return Offer::Unbatched;
        }
        let window = self.rooms.entry(room.clone()).or_default();
        let Some(_) = window.until else {
            let window_end = now + self.window;
            window.until = Some(window_end);
            return Offer::SendNow { window_end };
        };
        match window.held.get_mut(&user) {
            Some(held) => held.now = online,
            None => {
                window.held.insert(
                    user,
                    Held {
                        username: username.to_owned(),
                        before: !online,
                        now: online,
                    },
                );
            }
        }
        if window.held.len() >= self.cap {
            return Offer::Flush(net(std::mem::take(&mut window.held)));
        }
        Offer::Held
    }

    /// The window of `room` ends at `now`: the net changes held (empty
    /// when nothing is left), and, when something was held, the end of the
    /// next window (schedule this again then). A window with nothing held
    /// closes: the room's next change goes out at once.
    pub fn window_end(&mut self, room: &str, now: Instant) -> (Vec<Change>, Option<Instant>) {
        let Some(window) = self.rooms.get_mut(room) else {
            return (Vec::new(), None);
        };
        if window.held.is_empty() {
            self.rooms.remove(room);
            return (Vec::new(), None);
        }
        let changes = net(std::mem::take(&mut window.held));
        let next = now + self.window;
        window.until = Some(next);
        (changes, Some(next))
    }
}

/// The changes that remain once each user's first and last state in the
/// window are compared.
fn net(held: BTreeMap<UserId, Held>) -> Vec<Change> {
    held.into_iter()
        .filter(|(_, h)| h.before != h.now)
        .map(|(user, h)| Change {
            user,
            username: h.username,
            online: h.now,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(200);

    fn room() -> Arc<str> {
        Arc::from("r")
    }

    #[test]
    fn first_change_goes_at_once_and_later_ones_are_held_and_netted() {
        let mut b = PresenceBatches::new(W, 100);
        let t = Instant::now();
        assert_eq!(
            b.offer(&room(), 1, "a", true, t),
            Offer::SendNow { window_end: t + W }
        );
        assert_eq!(b.offer(&room(), 2, "b", true, t), Offer::Held);
        assert_eq!(b.offer(&room(), 3, "c", true, t), Offer::Held);
        // 3 came and went: nothing. 4 left and came back: nothing.
        assert_eq!(b.offer(&room(), 3, "c", false, t), Offer::Held);
        assert_eq!(b.offer(&room(), 4, "d", false, t), Offer::Held);
        assert_eq!(b.offer(&room(), 4, "d", true, t), Offer::Held);
        assert_eq!(b.offer(&room(), 5, "e", false, t), Offer::Held);
        let (changes, next) = b.window_end("r", t + W);
        assert_eq!(
            changes,
            vec![
                Change {
                    user: 2,
                    username: "b".into(),
                    online: true
                },
                Change {
                    user: 5,
                    username: "e".into(),
                    online: false
                },
            ]
        );
        assert_eq!(next, Some(t + W + W), "something was sent: a new window");
        let (changes, next) = b.window_end("r", t + W + W);
        assert!(changes.is_empty());
        assert_eq!(next, None, "a quiet window closes");
        assert_eq!(b.open_windows(), 0);
        assert!(matches!(
            b.offer(&room(), 6, "f", true, t + W * 3),
            Offer::SendNow { .. }
        ));
    }

    #[test]
    fn rooms_are_separate_and_a_full_room_flushes_early() {
        let mut b = PresenceBatches::new(W, 2);
        let t = Instant::now();
        let other: Arc<str> = Arc::from("s");
        assert!(matches!(
            b.offer(&room(), 1, "a", true, t),
            Offer::SendNow { .. }
        ));
        assert!(matches!(
            b.offer(&other, 1, "a", true, t),
            Offer::SendNow { .. }
        ));
        assert_eq!(b.offer(&room(), 2, "b", true, t), Offer::Held);
        match b.offer(&room(), 3, "c", true, t) {
            Offer::Flush(c) => assert_eq!(c.len(), 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.offer(&room(), 4, "d", true, t), Offer::Held);
        assert_eq!(b.window_end("r", t + W).0.len(), 1);
        assert_eq!(b.window_end("s", t + W), (Vec::new(), None));
    }

    #[test]
    fn every_room_has_one_owner_among_the_shards() {
        assert_eq!(owner("general", 1), 0);
        let owners: std::collections::HashSet<usize> =
            (0..100).map(|i| owner(&format!("room-{i}"), 4)).collect();
        assert_eq!(owners.len(), 4, "rooms spread over the shards");
        assert_eq!(owner("general", 4), owner("general", 4));
        assert_eq!(owner("x", 0), 0);
    }

    #[test]
    fn zero_window_never_batches() {
        let mut b = PresenceBatches::new(Duration::ZERO, 10);
        let t = Instant::now();
        for user in 0..5 {
            assert_eq!(b.offer(&room(), user, "u", true, t), Offer::Unbatched);
        }
        assert_eq!(b.open_windows(), 0);
    }
}
