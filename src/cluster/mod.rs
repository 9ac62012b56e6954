//! Cluster mode (issue #8): several nodes serve one chat through NATS.
//!
//! A node persists what its clients send (once, in PostgreSQL), then hands
//! each committed message to its **cluster link** ([`link`]), a thread of
//! its own with the NATS client. The link publishes the encoded frame to
//! NATS and, for every stream (a room, or one user's DMs) that has local
//! members, runs a [`sequencer::Sequencer`] fed by the local writers and by
//! NATS alike: it delivers to the local shards (through the [`Router`]) in
//! the stream's id order, filling any gap from PostgreSQL.
//!
//! Shards tell the link what their members need through [`Interest`]
//! (first local member of a room / connection of a user, last one gone);
//! the link subscribes and unsubscribes the matching NATS subjects.
//!
//! # Layout
//!
//! - this file: [`Stream`] and its subjects, what travels between writers,
//!   shards and the link ([`Committed`], [`RemoteNotice`],
//!   [`RemoteMembership`]), and the node's [`Interest`];
//! - [`handle`]: what shards call ([`ClusterHandle`]): the interest, the
//!   notice and membership queues, presence probes and online queries to
//!   the other nodes;
//! - [`link`]: the link's thread ([`spawn`], [`ClusterLink`]), its settings,
//!   and its main loop, which connects to NATS and dispatches to the next
//!   three;
//! - `follow`: following the streams the interest asks for (subscribing,
//!   starting each sequencer at its floor, unsubscribing) and putting every
//!   message through its streams' sequencers;
//! - `fill`: catching up from PostgreSQL: the periodic check, gap fills;
//! - `remote`: traffic with the other nodes: publishing, forwarding what
//!   the subscriptions receive, answering probes and online queries;
//! - [`sequencer`]: one stream's ordering state (pure);
//! - [`wire`]: the NATS payload (pure).
//!
//! [`Router`]: crate::router::Router

mod fill;
mod follow;
pub mod handle;
pub mod link;
mod remote;
pub mod sequencer;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::protocol::{Frame, UserId};
use crate::router::ShardEvent;

pub use link::{spawn, ClusterHandle, ClusterLink, LinkError, LinkSettings};

/// One ordered stream of stored messages, as delivered to a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// A room's messages.
    Room(Arc<str>),
    /// One user's DMs (sent and received).
    User(UserId),
}

impl Stream {
    /// The NATS subject carrying this stream: `chat.room.<hex name>` (any
    /// room name is a valid subject token this way) or `chat.user.<id>`.
    pub fn subject(&self) -> String {
        match self {
            Stream::Room(name) => room_subject(name),
            Stream::User(id) => format!("chat.user.{id}"),
        }
    }
}

/// The subject of a room: `chat.room.` and the name in lowercase hex.
pub fn room_subject(room: &str) -> String {
    let mut s = String::with_capacity(10 + room.len() * 2);
    s.push_str("chat.room.");
    for b in room.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A committed message on its way from a writer to the cluster link, with
/// what the link needs to order it: its predecessor in each stream.
#[derive(Debug)]
pub struct Committed {
    /// A [`ShardEvent::Room`] or [`ShardEvent::Users`] (users `[from, to]`).
    pub event: ShardEvent,
    /// The previous message id of the room (`[prev, prev]`), or of the
    /// sender's and of the recipient's DMs (`[prev_from, prev_to]`); 0: none.
    pub prev: [i64; 2],
}

/// An ephemeral room notice (typing, presence) for the other nodes.
#[derive(Debug, Clone)]
pub struct RemoteNotice {
    /// Room name.
    pub room: Arc<str>,
    /// The user the notice is about.
    pub except: UserId,
    /// The encoded frame.
    pub frame: Frame,
}

/// A membership change made on one node, for the user's connections on
/// the others (published on the user's subject, which exactly the nodes
/// with a connection of that user follow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMembership {
    /// Who joined or left.
    pub user: UserId,
    /// Which room.
    pub room: Arc<str>,
    /// Joined, left, or (issue 14) a change of the user's mute there.
    pub change: Membership,
}

/// What a [`RemoteMembership`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// The user joined (or was invited into) the room.
    Joined,
    /// The user left the room.
    Left,
    /// The user's cached mute in the room changes (`message` checks it).
    Mute(crate::rooms::MuteChange),
}

#[derive(Debug)]
struct Entry {
    /// Shards with a local member of the stream.
    shards: usize,
    /// Lowest "last message already stored" read by a shard before it
    /// registered a member while the link may not have followed the stream.
    floor: Option<i64>,
}

/// What this node's members need: the union of every shard's local
/// streams. Shards update it at the first/last local member (a short
/// mutex, never per message, never waiting on the link); the link is woken
/// and reconciles its NATS subscriptions with it.
#[derive(Debug, Default)]
pub struct Interest {
    streams: Mutex<HashMap<Stream, Entry>>,
    changed: Notify,
}

impl Interest {
    /// An empty interest set.
    pub fn new() -> Interest {
        Interest::default()
    }

    /// A shard got its first local member of `stream`. `floor`, when
    /// known, is the stream's last stored id read *before* the member was
    /// registered: the link delivers everything after it.
    pub fn add(&self, stream: Stream, floor: Option<i64>) {
        let mut streams = self.lock();
        let entry = streams.entry(stream).or_insert(Entry {
            shards: 0,
            floor: None,
        });
        entry.shards += 1;
        entry.floor = match (entry.floor, floor) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        drop(streams);
        self.changed.notify_one();
    }

    /// A shard lost its last local member of `stream`.
    pub fn remove(&self, stream: &Stream) {
        let mut streams = self.lock();
        if let Some(entry) = streams.get_mut(stream) {
            entry.shards = entry.shards.saturating_sub(1);
            if entry.shards == 0 {
                streams.remove(stream);
            }
        }
        drop(streams);
        self.changed.notify_one();
    }

    /// Gives back a floor the link took but could not use yet (its
    /// subscription failed), unless the stream is no longer wanted.
    pub(crate) fn restore_floor(&self, stream: &Stream, floor: Option<i64>) {
        if let (Some(entry), Some(f)) = (self.lock().get_mut(stream), floor) {
            entry.floor = Some(entry.floor.map_or(f, |e| e.min(f)));
        }
    }

    /// True when some shard has a local member of `stream`.
    pub fn contains(&self, stream: &Stream) -> bool {
        self.lock().contains_key(stream)
    }

    /// Every stream wanted, with its floor (taken: a floor is used once, by
    /// the link when it starts following the stream).
    pub(crate) fn take_snapshot(&self) -> Vec<(Stream, Option<i64>)> {
        self.lock()
            .iter_mut()
            .map(|(s, e)| (s.clone(), e.floor.take()))
            .collect()
    }

    /// Resolves when the set changed since the last call.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Stream, Entry>> {
        // A panic while holding this lock cannot leave the map invalid.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_subjects_are_hex_tokens() {
        assert_eq!(room_subject("a.b c"), "chat.room.612e622063");
        assert_eq!(Stream::User(42).subject(), "chat.user.42");
    }

    #[test]
    fn interest_counts_shards_and_keeps_the_lowest_floor() {
        let i = Interest::new();
        let r = Stream::Room(Arc::from("r"));
        i.add(r.clone(), Some(10));
        i.add(r.clone(), Some(7));
        i.add(r.clone(), None);
        assert_eq!(i.take_snapshot(), vec![(r.clone(), Some(7))]);
        assert_eq!(i.take_snapshot(), vec![(r.clone(), None)], "taken once");
        i.restore_floor(&r, Some(9));
        i.restore_floor(&r, Some(8));
        assert_eq!(i.take_snapshot(), vec![(r.clone(), Some(8))], "given back");
        i.remove(&r);
        i.remove(&r);
        assert!(i.contains(&r));
        i.remove(&r);
        assert!(!i.contains(&r));
        i.remove(&r);
        assert!(i.take_snapshot().is_empty());
    }
}
