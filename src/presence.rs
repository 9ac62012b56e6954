//! Who is online across every shard, and the typing throttle.
//!
//! This is the one piece of state the shards share directly, behind one
//! mutex: it is touched when a connection opens or closes and when a client
//! sends `typing`, never per message, so it stays off the delivery path.
//! Deciding "first connection opened" and "last connection closed" under
//! one lock makes each presence transition happen exactly once, whichever
//! shards the user's connections are on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::UserId;

/// At most one `typing` per user per room in this interval is relayed.
pub const TYPING_INTERVAL: Duration = Duration::from_secs(2);

/// Typing throttle entries kept before stale ones are swept.
const TYPING_ENTRIES_MAX: usize = 100_000;

/// Online users (with their open connection count) and recent typing.
#[derive(Debug, Default)]
pub struct Presence {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    connections: HashMap<UserId, u32>,
    typing: HashMap<(UserId, Box<str>), Instant>,
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

    /// Counts a new connection of `user`; true when it is the user's first
    /// (the user just came online).
    pub fn connected(&self, user: UserId) -> bool {
        let mut inner = self.lock();
        let n = inner.connections.entry(user).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts a closed connection of `user`; true when it was the user's
    /// last (the user just went offline).
    pub fn disconnected(&self, user: UserId) -> bool {
        let mut inner = self.lock();
        match inner.connections.get_mut(&user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                inner.connections.remove(&user);
                true
            }
            None => false,
        }
    }

    /// True when `user` has at least one open connection.
    pub fn is_online(&self, user: UserId) -> bool {
        self.lock().connections.contains_key(&user)
    }

    /// The users of `users` that are online, in the given order.
    pub fn online_among(&self, users: &[UserId]) -> Vec<UserId> {
        let inner = self.lock();
        users
            .iter()
            .copied()
            .filter(|u| inner.connections.contains_key(u))
            .collect()
    }

    /// Number of users online.
    pub fn online_count(&self) -> usize {
        self.lock().connections.len()
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

    #[test]
    fn first_and_last_connection_are_the_transitions() {
        let p = Presence::new();
        assert!(p.connected(1));
        assert!(!p.connected(1));
        assert!(p.connected(2));
        assert_eq!(p.online_among(&[3, 2, 1]), vec![2, 1]);
        assert!(!p.disconnected(1));
        assert!(p.is_online(1));
        assert!(p.disconnected(1));
        assert!(!p.is_online(1));
        assert!(!p.disconnected(1), "never below zero");
        assert_eq!(p.online_count(), 1);
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
