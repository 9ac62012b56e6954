//! Routing within one process: the shard inboxes, and what they carry.
//!
//! [`Router`] fans events out to this process's shard inboxes: committed
//! messages from the writers (single node) or from the cluster link
//! (cluster mode), membership changes and notices from shards, replies for
//! one connection. It does not decide *which node* an event reaches: in
//! cluster mode the writers hand committed messages to the cluster link
//! (`cluster::link`), which publishes them to other nodes and feeds local
//! and remote ones, in order, back through this router; shards send
//! membership changes and notices to other nodes through their
//! `ClusterHandle` (`shard::announce`).

use std::sync::Arc;
use std::time::Duration;

use crate::mesh::{MailboxSender, PushError};
use crate::protocol::{Frame, UserId};

/// Identifies a connection within its shard.
pub type ConnId = u64;

/// Where a reply for one connection must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Index of the shard owning the connection.
    pub shard: usize,
    /// The connection, within that shard.
    pub conn: ConnId,
}

/// The sender's own copy of a message, when it differs from everyone
/// else's (it carries the request's `ref`, or answers a retried
/// `client_id`). Only the origin shard uses it.
#[derive(Debug)]
pub struct OwnCopy {
    /// The sending connection.
    pub origin: Origin,
    /// The frame it gets instead of the shared one.
    pub frame: Frame,
}

/// Where and when a message entered the server: its origin shard observes
/// the end-to-end delivery latency when it hands the message to the
/// sender's connection (`chat_delivery_latency_seconds`).
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// The shard of the sending connection.
    pub shard: usize,
    /// When the sender's shard queued the message for its writer.
    pub at: std::time::Instant,
}

impl Sent {
    /// A message from another node (cluster mode) or read back from
    /// PostgreSQL: no local sender, so no shard observes its latency.
    pub fn remote() -> Sent {
        Sent {
            shard: usize::MAX,
            at: std::time::Instant::now(),
        }
    }
}

/// What a shard's inbox carries.
#[derive(Debug, Clone)]
pub enum ShardEvent {
    /// A committed room message: write `frame` to every local member connection.
    Room {
        /// Room name.
        room: Arc<str>,
        /// Message id (delivery skips connections that already replayed it).
        id: i64,
        /// The encoded `message` frame, shared.
        frame: Frame,
        /// The sending connection's own copy, if it has one.
        own: Option<Arc<OwnCopy>>,
        /// Origin shard and enqueue time, for the delivery latency metric.
        sent: Sent,
        /// Issue 14: the event is a kick or ban of this user: after
        /// delivering `frame` (the user's last frame of the room), the
        /// shard drops the user's subscriptions to the room, before it
        /// applies any later event of its inbox (so no higher id reaches
        /// the user).
        kick: Option<UserId>,
    },
    /// A committed DM: write `frame` to every local connection of both users.
    Users {
        /// Sender and recipient (may be equal).
        users: [UserId; 2],
        /// Message id.
        id: i64,
        /// The encoded `dm` frame, shared.
        frame: Frame,
        /// The sending connection's own copy, if it has one.
        own: Option<Arc<OwnCopy>>,
        /// Origin shard and enqueue time, for the delivery latency metric.
        sent: Sent,
    },
    /// A frame for one connection (e.g. "message not stored").
    Conn {
        /// The target connection on the receiving shard.
        conn: ConnId,
        /// The frame.
        frame: Frame,
    },
    /// A user joined a room on another shard: subscribe the user's local connections.
    Joined {
        /// Who joined.
        user: UserId,
        /// Which room.
        room: Arc<str>,
    },
    /// An ephemeral room notice (presence, typing): write `frame` to the
    /// room's local member connections except `except`'s own. Not stored,
    /// no id, never replayed.
    Notice {
        /// Room name.
        room: Arc<str>,
        /// The user the notice is about (not told about itself).
        except: UserId,
        /// The encoded frame, shared.
        frame: Frame,
    },
    /// Issue 16: a presence change of a room this shard batches (it is the
    /// room's presence owner, `shard::presence_batch::owner`): held in the
    /// room's window here, then announced to every shard as a `Notice`.
    Presence {
        /// Room name.
        room: Arc<str>,
        /// Whose state changed.
        user: UserId,
        /// Its username.
        username: Arc<str>,
        /// Online (`true`) or offline.
        online: bool,
    },
    /// A user left a room on another shard: unsubscribe the user's local connections.
    Left {
        /// Who left.
        user: UserId,
        /// Which room.
        room: Arc<str>,
    },
    /// A member event (issue 14): update `user`'s cached mute in `room`,
    /// then write `frame` (if any) to the room's local member connections
    /// (unless `audience` is the user's own) and to `user`'s local
    /// connections. Not stored, no id.
    Member {
        /// Room name.
        room: Arc<str>,
        /// The affected user.
        user: UserId,
        /// What it does to the user's cached mute.
        mute: crate::rooms::MuteChange,
        /// The encoded `member` frame, shared (`None`: a cache update only).
        frame: Option<Frame>,
        /// Who gets `frame`: the room's members and the user's connections,
        /// or (issue 16, a `joined`/`left` over the cap) the user's only.
        audience: crate::rooms::effects::Audience,
        /// The connection whose request caused it: it gets its ack instead.
        skip: Option<Origin>,
    },
    /// Issue 15: an operator disconnected `user` (the server API): close
    /// each of its local connections with 4003.
    Disconnect {
        /// The user.
        user: UserId,
    },
}

/// Fans events out to shard inboxes. Cloned into every writer and shard.
#[derive(Debug, Clone)]
pub struct Router {
    shards: Arc<[MailboxSender<ShardEvent>]>,
}

/// How long a producer waits before retrying a full inbox.
const FULL_INBOX_BACKOFF: Duration = Duration::from_micros(200);

impl Router {
    /// A router over the inboxes of shards `0..n`, in shard order.
    pub fn new(shards: Vec<MailboxSender<ShardEvent>>) -> Router {
        Router {
            shards: shards.into(),
        }
    }

    /// Queues a committed message for every shard (each delivers to its
    /// local recipients). Waits, without blocking the thread, while an
    /// inbox is full: only writers, the cluster link and the server API
    /// (none of them a shard) call this, and a shard drains its inbox
    /// independently of them. Call [`flush`](Self::flush) after a batch.
    pub async fn publish(&self, event: ShardEvent) {
        let (last, rest) = self.shards.split_last().expect("at least one shard");
        for shard in rest {
            // Each copy is a reference-count bump of the shared frame.
            push_waiting(shard, event.clone()).await;
        }
        push_waiting(last, event).await;
    }

    /// Queues an event for one shard (waiting while its inbox is full).
    pub async fn send_to(&self, shard: usize, event: ShardEvent) {
        if let Some(s) = self.shards.get(shard) {
            push_waiting(s, event).await;
        }
    }

    /// Queues an event for every shard but `from`, without waiting: a shard
    /// never blocks on another. Returns the events that found a full inbox,
    /// with their target, for the caller to retry later.
    pub fn broadcast_from(&self, from: usize, event: &ShardEvent) -> Vec<(usize, ShardEvent)> {
        self.broadcast_except(Some(from), event)
    }

    /// Like [`broadcast_from`](Self::broadcast_from), to every shard, the
    /// caller's own included: its inbox keeps the event in order behind
    /// what other shards sent it before (e.g. a join announcement).
    pub fn broadcast(&self, event: &ShardEvent) -> Vec<(usize, ShardEvent)> {
        self.broadcast_except(None, event)
    }

    fn broadcast_except(
        &self,
        from: Option<usize>,
        event: &ShardEvent,
    ) -> Vec<(usize, ShardEvent)> {
        let mut refused = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            if Some(i) == from {
                continue;
            }
            match shard.send(event.clone()) {
                Ok(()) => {}
                Err(PushError::Full(ev)) => refused.push((i, ev)),
                Err(PushError::Closed(_)) => {}
            }
        }
        refused
    }

    /// Queues an event for one shard without waiting (and rings it); the
    /// event back when that inbox is full.
    pub fn try_send_to(&self, shard: usize, event: ShardEvent) -> Result<(), ShardEvent> {
        match self.shards.get(shard).map(|s| s.send(event)) {
            Some(Err(PushError::Full(ev))) => Err(ev),
            _ => Ok(()),
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Wakes every shard that was sent something since its last wake-up.
    pub fn flush(&self) {
        for shard in self.shards.iter() {
            shard.ring();
        }
    }

    /// Events waiting in each shard's inbox, in shard order.
    pub fn inbox_depths(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.len()).collect()
    }
}

async fn push_waiting(shard: &MailboxSender<ShardEvent>, mut event: ShardEvent) {
    loop {
        match shard.push(event) {
            Ok(()) => return,
            Err(PushError::Closed(_)) => return,
            Err(PushError::Full(ev)) => {
                event = ev;
                shard.ring();
                tokio::time::sleep(FULL_INBOX_BACKOFF).await;
            }
        }
    }
}
