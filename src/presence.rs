//! Who is online across every shard, in which rooms, and the typing throttle.
//!
//! This is the one piece of state every shard shares directly (cluster
//! mode adds `cluster::Interest`), behind one mutex: it is touched when a connection opens or closes, on join and
//! leave, and when a client sends `typing`, never per message, so it stays
//! off the delivery path. Deciding "first connection opened" and "last
//! connection closed" under one lock makes each presence transition happen
//! exactly once, whichever shards the user's connections are on. It also
//! keeps, per room, the set of members online, so `join_ack`'s `online`
//! list and the presence fan-out need no database round trip.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocol::UserId;

/// At most one `typing` per user per room in this interval is relayed.
pub const TYPING_INTERVAL: Duration = Duration::from_secs(2);

/// Typing throttle entries kept before stale ones are swept.
const TYPING_ENTRIES_MAX: usize = 100_000;

/// Online users (with their open connections and rooms), each room's online
/// members, and recent typing.
#[derive(Debug, Default)]
pub struct Presence {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Online {
    connections: u32,
    rooms: HashSet<Arc<str>>,
    /// When the first of these connections opened (Unix microseconds).
    since: i64,
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<UserId, Online>,
    rooms: HashMap<Arc<str>, HashSet<UserId>>,
    typing: HashMap<(UserId, Box<str>), Instant>,
}

impl Inner {
    fn enter(&mut self, user: UserId, room: Arc<str>) {
        if let Some(online) = self.users.get_mut(&user) {
            if online.rooms.insert(room.clone()) {
                self.rooms.entry(room).or_default().insert(user);
            }
        }
    }

    fn exit(&mut self, user: UserId, room: &str) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&user);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
}

impl Presence {
    /// An empty presence table.
    pub fn new() -> Presence {
        Presence::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps torn
        // (each update is one insert or remove): keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection of `user`, a member of `rooms`; true when it
    /// is the user's first (the user just came online in those rooms).
    pub fn connected(&self, user: UserId, rooms: &[Arc<str>]) -> bool {
        let mut inner = self.lock();
        let online = inner.users.entry(user).or_default();
        online.connections += 1;
        let first = online.connections == 1;
        if first {
            online.since = chrono::Utc::now().timestamp_micros();
        }
        for room in rooms {
            inner.enter(user, room.clone());
        }
        first
    }

    /// Counts a closed connection of `user`. When it was the user's last,
    /// the user goes offline and the rooms it was online in are returned.
    pub fn disconnected(&self, user: UserId) -> Option<Vec<Arc<str>>> {
        let mut inner = self.lock();
        let online = inner.users.get_mut(&user)?;
        if online.connections > 1 {
            online.connections -= 1;
            return None;
        }
        let online = inner.users.remove(&user)?;
        let rooms: Vec<Arc<str>> = online.rooms.into_iter().collect();
        for room in &rooms {
            inner.exit(user, room);
        }
        Some(rooms)
    }

    /// Records that an online `user` joined `room`.
    pub fn joined(&self, user: UserId, room: &Arc<str>) {
        self.lock().enter(user, room.clone());
    }

    /// Records that `user` left `room`.
    pub fn left(&self, user: UserId, room: &str) {
        let mut inner = self.lock();
        if let Some(online) = inner.users.get_mut(&user) {
            online.rooms.remove(room);
        }
        inner.exit(user, room);
    }

    /// Since when `user` has been online here (Unix microseconds), if it is.
    pub fn online_since(&self, user: UserId) -> Option<i64> {
        self.lock().users.get(&user).map(|o| o.since)
    }

    /// True when `user` has at least one open connection.
    pub fn is_online(&self, user: UserId) -> bool {
        self.lock().users.contains_key(&user)
    }

    /// The room's online members, ascending, unless there are more than `max`.
    pub fn online_in(&self, room: &str, max: usize) -> Option<Vec<UserId>> {
        let inner = self.lock();
        let members = match inner.rooms.get(room) {
            Some(m) if m.len() > max => return None,
            Some(m) => m,
            None => return Some(Vec::new()),
        };
        let mut ids: Vec<UserId> = members.iter().copied().collect();
        ids.sort_unstable();
        Some(ids)
    }

    /// How many members of `room` are online.
    pub fn online_count(&self, room: &str) -> usize {
        self.lock().rooms.get(room).map_or(0, HashSet::len)
    }

    /// How many members of `room` are online, counting `user` whether it
    /// is online in the room or not (issue 16: the count a member's own
    /// join or leave is capped by, `rooms::effects::audience`).
    pub fn online_count_with(&self, room: &str, user: UserId) -> usize {
        let inner = self.lock();
        match inner.rooms.get(room) {
            Some(m) => m.len() + usize::from(!m.contains(&user)),
            None => 1,
        }
    }

    /// True when `user` may signal typing in `room` now (then records it):
    /// at most once per [`TYPING_INTERVAL`].
    pub fn allow_typing(&self, user: UserId, room: &str, now: Instant) -> bool {
        let mut inner = self.lock();
        let key = (user, Box::<str>::from(room));
        if let Some(last) = inner.typing.get(&key) {
            if now.saturating_duration_since(*last) < TYPING_INTERVAL {
                return false;
            }
        }
        if inner.typing.len() >= TYPING_ENTRIES_MAX {
            inner
                .typing
                .retain(|_, at| now.saturating_duration_since(*at) < TYPING_INTERVAL);
        }
        inner.typing.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn first_and_last_connection_are_the_transitions() {
        let p = Presence::new();
        assert!(p.connected(1, &rooms(&["r"])));
        assert!(!p.connected(1, &rooms(&["r"])));
        assert!(p.connected(2, &rooms(&["r", "s"])));
        assert_eq!(p.online_in("r", 10), Some(vec![1, 2]));
        assert_eq!(p.online_in("r", 1), None, "over the limit");
        assert_eq!(p.disconnected(1), None, "one connection left");
        assert!(p.is_online(1));
        assert_eq!(p.disconnected(1), Some(rooms(&["r"])));
        assert!(!p.is_online(1));
        assert_eq!(p.disconnected(1), None, "never below zero");
        assert_eq!(p.online_in("r", 10), Some(vec![2]));
        assert!(p.is_online(2));
    }

    #[test]
    fn joins_and_leaves_move_online_members() {
        let p = Presence::new();
        p.joined(9, &Arc::from("r"));
        assert_eq!(
            p.online_count("r"),
            0,
            "offline users are not online anywhere"
        );
        p.connected(1, &[]);
        p.joined(1, &Arc::from("r"));
        assert_eq!(p.online_in("r", 10), Some(vec![1]));
        p.left(1, "r");
        assert_eq!(p.online_count("r"), 0);
        p.joined(1, &Arc::from("s"));
        let mut gone = p.disconnected(1).unwrap();
        gone.sort();
        assert_eq!(gone, rooms(&["s"]));
        assert_eq!(p.online_count("s"), 0);
    }
    #[test]
    fn typing_is_throttled_per_user_and_room() {
        let p = Presence::new();
        let t0 = Instant::now();
        assert!(p.allow_typing(1, "r", t0));
        assert!(!p.allow_typing(1, "r", t0 + Duration::from_millis(1999)));
        assert!(p.allow_typing(1, "other", t0));
        assert!(p.allow_typing(2, "r", t0));
        assert!(p.allow_typing(1, "r", t0 + TYPING_INTERVAL));
    }
}
