//! What shards use of the cluster link: [`ClusterHandle`].
//!
//! The handle carries the node's [`Interest`], the queues of room notices
//! and membership changes for the other nodes (never blocking a shard), and
//! the questions a shard asks the other nodes directly over NATS, without
//! going through the link's thread: presence probes
//! ([`ClusterHandle::online_elsewhere`], on `chat.presence.probe`) and online
//! queries ([`ClusterHandle::online_in_room`], on the room's subject), and
//! (issue 15, for the server API) connections queries and disconnect
//! orders ([`ClusterHandle::connections_elsewhere`],
//! [`ClusterHandle::disconnect_elsewhere`], on `chat.presence.probe`). The
//! answers are given by the other nodes' links (`remote`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::wire;
use super::{Interest, RemoteMembership, RemoteNotice, Stream};

/// What shards use of the link: the node's interest, and a queue for
/// room notices (typing, presence) to the other nodes. Never blocks.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    interest: Arc<Interest>,
    notices: mpsc::Sender<RemoteNotice>,
    memberships: mpsc::Sender<RemoteMembership>,
    /// The NATS client, once the link has created it.
    nats: Arc<OnceLock<async_nats::Client>>,
    /// This node's id (breaks ties between simultaneous first connections).
    node_id: Arc<str>,
}

/// What another node answered about a user it has connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elsewhere {
    /// Since when the user has been online there (Unix microseconds).
    pub since: i64,
    /// That node's id.
    pub node: String,
}

/// How long a presence probe gathers the other nodes' answers.
const PROBE_GATHER: Duration = Duration::from_millis(100);

/// The subject every node answers presence probes on (subscribed once at
/// start, so an answer never waits for a per-user subscription).
pub(super) const PROBE_SUBJECT: &str = "chat.presence.probe";

/// How long `join_ack` waits for the other nodes' online members of a room
/// (every node that has members of the room answers at once; there is no
/// telling how many will, so the wait is always this long).
pub const ONLINE_GATHER: Duration = Duration::from_millis(50);

/// Most answers one online query reads (one per node).
const ONLINE_ANSWERS_MAX: usize = 256;

impl ClusterHandle {
    /// The handle of a link being started: its interest, the queues it
    /// reads, the cell it puts its NATS client in, and the node's id.
    pub(super) fn new(
        interest: Arc<Interest>,
        notices: mpsc::Sender<RemoteNotice>,
        memberships: mpsc::Sender<RemoteMembership>,
        nats: Arc<OnceLock<async_nats::Client>>,
        node_id: Arc<str>,
    ) -> ClusterHandle {
        ClusterHandle {
            interest,
            notices,
            memberships,
            nats,
            node_id,
        }
    }

    /// The node's interest set, which shards keep up to date.
    pub fn interest(&self) -> &Arc<Interest> {
        &self.interest
    }

    /// Sends an ephemeral room notice to the other nodes; dropped when the
    /// link is saturated (notices are hints, never stored).
    pub fn notice(&self, notice: RemoteNotice) {
        let _ = self.notices.try_send(notice);
    }

    /// Queues a membership change for the user's connections on other
    /// nodes without waiting; gives it back when the queue is full (the
    /// caller retries from a task with [`send_membership`](Self::send_membership)).
    pub fn try_membership(&self, m: RemoteMembership) -> Result<(), RemoteMembership> {
        self.memberships.try_send(m).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
        })
    }

    /// Where else `user` is online: of the nodes that answer a probe on
    /// `PROBE_SUBJECT` within `PROBE_GATHER` (every node with a
    /// connection of the user does), the one where it came online first.
    /// Presence uses it so that a user connected to several nodes is
    /// announced online once and offline only when its last connection
    /// anywhere closes. No answer, or NATS away: `None`.
    pub async fn online_elsewhere(&self, user: crate::protocol::UserId) -> Option<Elsewhere> {
        let nats = self.nats.get()?;
        let inbox = nats.new_inbox();
        let mut answers = nats.subscribe(inbox.clone()).await.ok()?;
        nats.publish_with_reply(PROBE_SUBJECT, inbox, wire::encode_probe(user))
            .await
            .ok()?;
        let mut first: Option<Elsewhere> = None;
        let gather = async {
            while let Some(answer) = answers.next().await {
                if let Ok((since, node)) = wire::decode_probe_answer(&answer.payload) {
                    let other = Elsewhere { since, node };
                    if first
                        .as_ref()
                        .is_none_or(|f| (other.since, &other.node) < (f.since, &f.node))
                    {
                        first = Some(other);
                    }
                }
            }
        };
        let _ = tokio::time::timeout(PROBE_GATHER, gather).await;
        let _ = answers.unsubscribe().await;
        first
    }

    /// True when this node, where `user` came online at `since`, is the one
    /// to announce it, given another node's answer: the node where the user
    /// came online first (ties: the smaller node id). Both nodes compare the
    /// same pair, so when two first connections open at once on two nodes,
    /// exactly one announces.
    pub fn announces_online(&self, since: i64, other: &Elsewhere) -> bool {
        (since, &*self.node_id) < (other.since, other.node.as_str())
    }

    /// Adds to `online` (this node's online members of `room`) those online
    /// on other nodes, gathered for [`ONLINE_GATHER`]. Without a NATS
    /// connection, or if the query fails, `online` is returned as it is.
    pub async fn online_in_room(
        &self,
        room: &str,
        online: Vec<crate::protocol::UserId>,
    ) -> Vec<crate::protocol::UserId> {
        let Some(nats) = self.nats.get() else {
            return online;
        };
        let mut all: std::collections::BTreeSet<_> = online.iter().copied().collect();
        let inbox = nats.new_inbox();
        let Ok(mut answers) = nats.subscribe(inbox.clone()).await else {
            return online;
        };
        let subject = Stream::Room(Arc::from(room)).subject();
        if nats
            .publish_with_reply(subject, inbox, wire::encode_online_query(room))
            .await
            .is_err()
        {
            return online;
        }
        let gather = async {
            let mut n = 0;
            while let Some(answer) = answers.next().await {
                if let Ok(users) = wire::decode_user_list(&answer.payload) {
                    all.extend(users);
                }
                n += 1;
                if n >= ONLINE_ANSWERS_MAX {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(ONLINE_GATHER, gather).await;
        let _ = answers.unsubscribe().await;
        all.into_iter().collect()
    }

    /// Issue 15: how many connections `user` has on the other nodes: the
    /// sum of the answers (every node with a connection of the user
    /// answers) gathered for at most [`ONLINE_GATHER`] and
    /// `ONLINE_ANSWERS_MAX` answers. Without NATS, or if the query fails: 0.
    pub async fn connections_elsewhere(&self, user: crate::protocol::UserId) -> u64 {
        let Some(nats) = self.nats.get() else {
            return 0;
        };
        let inbox = nats.new_inbox();
        let Ok(mut answers) = nats.subscribe(inbox.clone()).await else {
            return 0;
        };
        if nats
            .publish_with_reply(PROBE_SUBJECT, inbox, wire::encode_connections_query(user))
            .await
            .is_err()
        {
            return 0;
        }
        let mut total = 0u64;
        let gather = async {
            let mut n = 0;
            while let Some(answer) = answers.next().await {
                if let Ok(count) = wire::decode_count(&answer.payload) {
                    total = total.saturating_add(count);
                }
                n += 1;
                if n >= ONLINE_ANSWERS_MAX {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(ONLINE_GATHER, gather).await;
        let _ = answers.unsubscribe().await;
        total
    }

    /// Issue 15: orders every other node to close `user`'s connections
    /// with 4003 (on [`PROBE_SUBJECT`], which every node subscribes to at
    /// start). False when NATS is away (the order did not leave).
    pub async fn disconnect_elsewhere(&self, user: crate::protocol::UserId) -> bool {
        let Some(nats) = self.nats.get() else {
            return false;
        };
        nats.publish(PROBE_SUBJECT, wire::encode_disconnect(user))
            .await
            .is_ok()
            && nats.flush().await.is_ok()
    }

    /// Queues a membership change, waiting while the queue is full.
    pub async fn send_membership(&self, m: RemoteMembership) {
        let _ = self.memberships.send(m).await;
    }
}
