//! Presence announcements: telling a user's rooms that it came online or
//! went offline, and the online list of `join_ack`. The counting itself
//! (who is online on which rooms, across shards) is `crate::presence`;
//! this module decides *whether* and *where* to announce.
//!
//! Single node: `Presence` makes each online/offline transition happen
//! once, whichever shards the user is on, so the announcement is made at
//! once, through the room's batching window (`presence_batch`: sent now
//! when the room was quiet, else held until the window's end). Cluster mode: the other nodes are asked first ([`announce_after_probe`]
//! holds the rule).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::presence_batch::{owner, Change, Offer};
use super::Shard;
use crate::protocol::{encode_presence, encode_presence_batch, PresenceEntry, UserId};
use crate::router::ShardEvent;

impl Shard {
    /// Tells the other online members of `rooms` that `user` came online or
    /// went offline (rooms with more than `--presence-max-members` members
    /// online are skipped). Single node: all in memory, at once. Cluster
    /// mode: first asks the other nodes whether the user is connected there
    /// and applies [`announce_after_probe`].
    pub fn announce_presence(
        self: &Rc<Self>,
        user: UserId,
        username: &str,
        online: bool,
        rooms: &[Arc<str>],
    ) {
        let max = self.config.presence_max_members;
        let rooms: Vec<Arc<str>> = rooms
            .iter()
            // Count the user itself, whether it just entered or just left.
            .filter(|room| self.presence.online_count(room) + usize::from(!online) <= max)
            .cloned()
            .collect();
        if rooms.is_empty() {
            return;
        }
        let Some(cluster) = self.cluster.clone() else {
            self.notify_presence(user, username, online, &rooms);
            return;
        };
        let shard = self.clone();
        let username: Arc<str> = Arc::from(username);
        tokio::task::spawn_local(async move {
            let elsewhere = cluster.online_elsewhere(user).await;
            let first_here = elsewhere.as_ref().is_some_and(|other| {
                shard
                    .presence
                    .online_since(user)
                    .is_some_and(|since| cluster.announces_online(since, other))
            });
            let probe = Probe {
                online,
                still: shard.presence.is_online(user) == online,
                elsewhere: elsewhere.is_some(),
                first_here,
            };
            if announce_after_probe(probe) {
                shard.notify_presence(user, &username, online, &rooms);
            }
        });
    }

    /// The room's online members for `join_ack`, ascending (`None`: more
    /// than `--presence-max-members`). Cluster mode adds the other nodes'
    /// (gathered for `cluster::link::ONLINE_GATHER`).
    pub async fn online_members(&self, room: &str) -> Option<Vec<UserId>> {
        let max = self.config.presence_max_members;
        let local = self.presence.online_in(room, max)?;
        let Some(cluster) = &self.cluster else {
            return Some(local);
        };
        let all = cluster.online_in_room(room, local).await;
        (all.len() <= max).then_some(all)
    }

    /// Announces `user`'s change in each of `rooms`, through the room's
    /// batching window on its presence owner shard
    /// ([`super::presence_batch::owner`]): this shard's own rooms at once,
    /// the others' through their inboxes (never waiting: a full inbox gets
    /// the change from a task).
    fn notify_presence(
        self: &Rc<Self>,
        user: UserId,
        username: &str,
        online: bool,
        rooms: &[Arc<str>],
    ) {
        let shards = self.router.shard_count();
        let name: Arc<str> = Arc::from(username);
        for room in rooms {
            let owner = owner(room, shards);
            if owner == self.index {
                self.batch_presence(room, user, username, online);
                continue;
            }
            let event = ShardEvent::Presence {
                room: room.clone(),
                user,
                username: name.clone(),
                online,
            };
            if let Err(event) = self.router.try_send_to(owner, event) {
                let router = self.router.clone();
                tokio::task::spawn_local(async move {
                    router.send_to(owner, event).await;
                    router.flush();
                });
            }
        }
    }

    /// Offers one change of `room` (owned by this shard) to its batching
    /// window: announced at once when the window was quiet, else held.
    pub fn batch_presence(
        self: &Rc<Self>,
        room: &Arc<str>,
        user: UserId,
        username: &str,
        online: bool,
    ) {
        let offer =
            self.presence_batches
                .borrow_mut()
                .offer(room, user, username, online, Instant::now());
        match offer {
            Offer::Unbatched => {
                self.notify_room(
                    room.clone(),
                    user,
                    encode_presence(room, user, username, online),
                );
            }
            Offer::SendNow { window_end } => {
                self.notify_room(
                    room.clone(),
                    user,
                    encode_presence(room, user, username, online),
                );
                self.schedule_window_end(room.clone(), window_end);
            }
            Offer::Held => {}
            Offer::Flush(changes) => self.send_changes(room, changes),
        }
    }

    /// Ends `room`'s batching window at `at`: sends what was held, and
    /// keeps the window going while changes keep coming.
    fn schedule_window_end(self: &Rc<Self>, room: Arc<str>, at: Instant) {
        let shard = self.clone();
        tokio::task::spawn_local(async move {
            let mut at = at;
            loop {
                tokio::time::sleep_until(at.into()).await;
                let (changes, next) = shard
                    .presence_batches
                    .borrow_mut()
                    .window_end(&room, Instant::now());
                shard.send_changes(&room, changes);
                match next {
                    Some(next) => at = next,
                    None => break,
                }
            }
        });
    }

    /// Sends a room's held changes: nothing, one `presence` frame, or one
    /// `presence_batch`. A change no longer true here (the user came back
    /// or left again on another shard, which announced that itself) is
    /// dropped.
    fn send_changes(&self, room: &Arc<str>, changes: Vec<Change>) {
        let mut changes = changes;
        changes.retain(|c| self.presence.is_online(c.user) == c.online);
        match changes.as_slice() {
            [] => {}
            [c] => {
                let frame = encode_presence(room, c.user, &c.username, c.online);
                self.notify_room(room.clone(), c.user, frame);
            }
            _ => {
                let (on, off): (Vec<Change>, Vec<Change>) =
                    changes.into_iter().partition(|c| c.online);
                let entry = |c: Change| PresenceEntry {
                    user: c.user,
                    username: c.username,
                };
                let on: Vec<PresenceEntry> = on.into_iter().map(entry).collect();
                let off: Vec<PresenceEntry> = off.into_iter().map(entry).collect();
                // No user has id 0: every online member gets the batch
                // (it may list the member itself).
                self.notify_room(room.clone(), 0, encode_presence_batch(room, &on, &off));
            }
        }
    }
}

/// What a cluster node knows when the other nodes have answered its probe
/// about a user whose state changed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The change to announce: online (`true`) or offline.
    pub online: bool,
    /// The user is still in that state here (not superseded meanwhile).
    pub still: bool,
    /// Another node answered: the user has a connection there.
    pub elsewhere: bool,
    /// The user came online here before it did on the node that answered
    /// (ties: the smaller node id).
    pub first_here: bool,
}

/// The cluster rule: announce unless the change was superseded (the new
/// change announces itself); with the user connected elsewhere, never
/// "offline", and "online" only from the node where it came online first.
pub fn announce_after_probe(p: Probe) -> bool {
    p.still && (!p.elsewhere || (p.online && p.first_here))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(online: bool, still: bool, elsewhere: bool, first_here: bool) -> Probe {
        Probe {
            online,
            still,
            elsewhere,
            first_here,
        }
    }

    #[test]
    fn alone_in_the_cluster_every_change_is_announced() {
        assert!(announce_after_probe(probe(true, true, false, false)));
        assert!(announce_after_probe(probe(false, true, false, false)));
    }

    #[test]
    fn a_superseded_change_is_never_announced() {
        for elsewhere in [false, true] {
            for online in [false, true] {
                assert!(!announce_after_probe(probe(online, false, elsewhere, true)));
            }
        }
    }

    #[test]
    fn connected_elsewhere_only_the_first_node_says_online_and_nobody_offline() {
        assert!(announce_after_probe(probe(true, true, true, true)));
        assert!(!announce_after_probe(probe(true, true, true, false)));
        assert!(!announce_after_probe(probe(false, true, true, true)));
        assert!(!announce_after_probe(probe(false, true, true, false)));
    }
}
