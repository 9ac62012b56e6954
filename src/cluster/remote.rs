//! The link's traffic with the other nodes over NATS, in both directions.
//!
//! Out: committed messages ([`publish`]: on the room's subject, or on both
//! users' subjects), membership changes and room notices go through one
//! bounded queue to a task that publishes them ([`publish_loop`]).
//!
//! In: one task per subscription ([`forward`]) decodes what it receives and
//! hands it to the link, which applies it ([`Link::remote`]: a message to
//! the sequencers, a membership change or a notice to the shards). The
//! other nodes' questions are answered by those tasks at once, never
//! queued: online queries by the room's forwarder, presence probes by one
//! task subscribed at start ([`answer_probes`]).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle as TaskHandle;
use tracing::{debug, warn};

use super::handle::PROBE_SUBJECT;
use super::link::Link;
use super::wire::{self, Remote};
use super::{Committed, Membership, RemoteMembership, RemoteNotice, Stream};
use crate::presence::Presence;
use crate::rooms::effects::Audience;
use crate::router::{Router, ShardEvent};
use crate::userlimits::UserLimits;

/// What the publishing task takes: a subject and its payload.
pub(super) type Publish = (String, Bytes);

impl Link {
    /// Applies what a subscription forwarded.
    pub(super) async fn remote(
        &mut self,
        r: Remote,
        nats: &async_nats::Client,
        remote_tx: &mpsc::Sender<Remote>,
    ) {
        match r {
            Remote::Message(c) => self.sequence(c, false, nats, remote_tx).await,
            // Answered by the subscription's forwarder; never queued.
            Remote::Probe(_)
            | Remote::OnlineQuery(_)
            | Remote::Connections(_)
            | Remote::Disconnect(_) => {}
            Remote::Membership(m) => {
                let event = match m.change {
                    Membership::Joined => ShardEvent::Joined {
                        user: m.user,
                        room: m.room,
                    },
                    Membership::Left => ShardEvent::Left {
                        user: m.user,
                        room: m.room,
                    },
                    // A cache update only: the frame came on the room's subject.
                    Membership::Mute(mute) => ShardEvent::Member {
                        room: m.room,
                        user: m.user,
                        mute,
                        frame: None,
                        audience: Audience::Room,
                        skip: None,
                    },
                };
                self.router.publish(event).await;
            }
            Remote::Notice(n) => {
                self.router
                    .publish(ShardEvent::Notice {
                        room: n.room,
                        except: n.except,
                        frame: n.frame,
                    })
                    .await;
            }
        }
    }
}

/// Queues a committed message for NATS: on its room's subject, or on both
/// users' subjects. A full queue drops it (other nodes fill it from
/// PostgreSQL at their next check); the writer is never held up by NATS.
pub(super) fn publish(queue: &mpsc::Sender<Publish>, c: &Committed, dropped: &mut u64) {
    let Some(payload) = wire::encode_committed(c) else {
        return;
    };
    let mut subjects: Vec<String> = Vec::with_capacity(2);
    match &c.event {
        ShardEvent::Room { room, .. } => subjects.push(super::room_subject(room)),
        ShardEvent::Users { users, .. } => {
            subjects.push(Stream::User(users[0]).subject());
            if users[1] != users[0] {
                subjects.push(Stream::User(users[1]).subject());
            }
        }
        _ => {}
    }
    for subject in subjects {
        if queue.try_send((subject, payload.clone())).is_err() {
            *dropped += 1;
        }
    }
}

/// Queues a membership change on the user's subject. Never dropped: waits
/// for room in the queue when it is full.
pub(super) async fn publish_membership(queue: &mpsc::Sender<Publish>, m: &RemoteMembership) {
    let subject = Stream::User(m.user).subject();
    if queue
        .try_send((subject.clone(), wire::encode_membership(m)))
        .is_err()
    {
        // Membership must not be dropped: wait for room in the queue.
        let _ = queue.send((subject, wire::encode_membership(m))).await;
    }
}

/// Queues a room notice on the room's subject; dropped when the queue is
/// full (notices are hints).
pub(super) fn publish_notice(queue: &mpsc::Sender<Publish>, n: &RemoteNotice) {
    let subject = super::room_subject(&n.room);
    let _ = queue.try_send((subject, wire::encode_notice(n)));
}

/// Publishes what the link queued, in order, until the queue closes.
pub(super) async fn publish_loop(nats: async_nats::Client, mut queue: mpsc::Receiver<Publish>) {
    while let Some((subject, payload)) = queue.recv().await {
        if let Err(e) = nats.publish(subject, payload).await {
            debug!(error = %e, "NATS publish failed");
        }
    }
}

/// What the task on [`PROBE_SUBJECT`] answers from (or acts on).
pub(super) struct Prober {
    /// Who is online here (presence probes).
    pub presence: Arc<Presence>,
    /// This node's id.
    pub node_id: Arc<str>,
    /// Issue 15: connections per user here (connections queries).
    pub user_limits: Arc<UserLimits>,
    /// Issue 15: this node's shards (disconnect orders).
    pub router: Router,
}

/// Subscribes to [`PROBE_SUBJECT`] and starts the task answering presence
/// probes and (issue 15) connections queries, and carrying out disconnect
/// orders; `None` (logged) when the subscription fails.
pub(super) async fn spawn_prober(
    nats: &async_nats::Client,
    prober: Prober,
) -> Option<TaskHandle<()>> {
    match nats.subscribe(PROBE_SUBJECT).await {
        Ok(probes) => Some(tokio::spawn(answer_probes(probes, nats.clone(), prober))),
        Err(e) => {
            warn!(error = %e, "cluster link: cannot answer presence probes");
            None
        }
    }
}

/// Answers presence probes (since when the user has been online on this
/// node, and its id; nothing when the user has no connection here) and
/// connections queries (the user's connections here, when any), and
/// carries out disconnect orders (every shard closes the user's
/// connections with 4003).
async fn answer_probes(mut probes: async_nats::Subscriber, nats: async_nats::Client, p: Prober) {
    while let Some(message) = probes.next().await {
        match (wire::decode(message.payload), message.reply) {
            (Ok(Remote::Probe(user)), Some(reply)) => {
                if let Some(since) = p.presence.online_since(user) {
                    let _ = nats
                        .publish(reply, wire::encode_probe_answer(since, &p.node_id))
                        .await;
                }
            }
            (Ok(Remote::Connections(user)), Some(reply)) => {
                let n = p.user_limits.connections(user) as u64;
                if n > 0 {
                    let _ = nats.publish(reply, wire::encode_count(n)).await;
                }
            }
            (Ok(Remote::Disconnect(user)), _) => {
                p.router.publish(ShardEvent::Disconnect { user }).await;
                p.router.flush();
            }
            _ => {}
        }
    }
}

/// Decodes what one subscription receives and hands it to the link;
/// answers online queries at once (this node's online members of the room).
pub(super) async fn forward(
    mut subscriber: async_nats::Subscriber,
    to: mpsc::Sender<Remote>,
    nats: async_nats::Client,
    presence: Arc<Presence>,
) {
    while let Some(message) = subscriber.next().await {
        match wire::decode(message.payload) {
            Ok(Remote::OnlineQuery(room)) => {
                if let Some(reply) = message.reply {
                    let online = presence.online_in(&room, usize::MAX).unwrap_or_default();
                    if !online.is_empty() {
                        let _ = nats.publish(reply, wire::encode_user_list(&online)).await;
                    }
                }
            }
            Ok(remote) => {
                if to.send(remote).await.is_err() {
                    return;
                }
            }
            Err(e) => warn!(error = %e, subject = %message.subject, "cluster message refused"),
        }
    }
}
