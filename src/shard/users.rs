//! The shard's cache of users known to exist, so that a reconnecting user's
//! handshake and a DM to a known user skip a database round trip.

use std::collections::HashMap;

use crate::protocol::UserId;

/// Most entries before the cache is reset.
pub const USER_CACHE_MAX: usize = 100_000;

/// Users known to exist, with the username last upserted from one of their
/// tokens (`None`: known only to exist). Bounded by [`USER_CACHE_MAX`]: a
/// new entry past it clears the cache (it only saves round trips).
#[derive(Debug, Default)]
pub struct KnownUsers {
    users: HashMap<UserId, Option<Box<str>>>,
}

impl KnownUsers {
    /// True when `user` is known to exist.
    pub fn contains(&self, user: UserId) -> bool {
        self.users.contains_key(&user)
    }

    /// True when `user`'s row was upserted with exactly `username`.
    pub fn has_username(&self, user: UserId, username: &str) -> bool {
        matches!(self.users.get(&user), Some(Some(name)) if **name == *username)
    }

    /// Records that `user` exists; with a username when its row was upserted
    /// with it (a username already known is kept otherwise).
    pub fn remember(&mut self, user: UserId, username: Option<&str>) {
        if self.users.len() >= USER_CACHE_MAX && !self.users.contains_key(&user) {
            self.users.clear();
        }
        match username {
            Some(name) => {
                self.users.insert(user, Some(name.into()));
            }
            None => {
                self.users.entry(user).or_insert(None);
            }
        }
    }

    /// Forgets `user` (issue 15: after an operator's disconnect, its next
    /// handshake reads its row, and so its block, again).
    pub fn forget(&mut self, user: UserId) {
        self.users.remove(&user);
    }

    /// Entries held (for the bound's test).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_kept_and_existence_does_not_erase_them() {
        let mut k = KnownUsers::default();
        assert!(!k.contains(1));
        k.remember(1, None);
        assert!(k.contains(1));
        assert!(!k.has_username(1, "alice"));
        k.remember(1, Some("alice"));
        k.remember(1, None);
        assert!(k.has_username(1, "alice"), "a DM check keeps the name");
        assert!(!k.has_username(1, "bob"));
        k.remember(1, Some("bob"));
        assert!(k.has_username(1, "bob"));
    }

    #[test]
    fn bounded() {
        let mut k = KnownUsers::default();
        for u in 0..USER_CACHE_MAX as i64 {
            k.remember(u, None);
        }
        assert_eq!(k.len(), USER_CACHE_MAX);
        k.remember(0, Some("known"));
        assert_eq!(k.len(), USER_CACHE_MAX, "an existing entry does not reset");
        k.remember(-1, None);
        assert_eq!(k.len(), 1, "a new entry past the bound resets");
        assert!(k.contains(-1));
    }
}
