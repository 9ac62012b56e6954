//! What a shard tells the other shards (and, in cluster mode, the other
//! nodes): membership changes and ephemeral room notices. Nothing here
//! waits on another shard: an inbox or cluster queue that is full gets the
//! event from a retrying task.

use std::sync::Arc;

use super::Shard;
use crate::cluster::{Membership, RemoteMembership, RemoteNotice};
use crate::protocol::{Frame, UserId};
use crate::rooms::effects::Audience;
use crate::rooms::MuteChange;
use crate::router::{Origin, ShardEvent};

impl Shard {
    /// Records here that `user` joined `room` (its local connections follow
    /// it from now on) and tells the other shards and nodes. `last` is the
    /// room's last stored id read before the join (for the cluster link).
    ///
    /// The other shards' connections of the user follow the room once their
    /// inbox applies the `Joined` event; the local ones do at once.
    pub fn joined(&self, user: UserId, room: &str, last: Option<i64>) {
        let name: Arc<str> = Arc::from(room);
        self.registry
            .borrow_mut()
            .join_with_floor(user, name.clone(), last);
        self.presence.joined(user, &name);
        self.to_other_nodes(user, name.clone(), Membership::Joined);
        self.to_other_shards(ShardEvent::Joined { user, room: name });
    }

    /// Records here that `user` left `room` (its local connections stop
    /// following it at once) and tells the other shards and nodes.
    pub fn left(&self, user: UserId, room: &str) {
        self.registry.borrow_mut().leave(user, room);
        self.presence.left(user, room);
        let name: Arc<str> = Arc::from(room);
        self.to_other_nodes(user, name.clone(), Membership::Left);
        self.to_other_shards(ShardEvent::Left { user, room: name });
    }

    /// Sends a member event (issue 14) to every shard (this one through its
    /// own inbox, so it follows a `Joined` announced just before): each
    /// updates `user`'s cached mute and writes `frame` to the room's
    /// members and to `user`'s connections. Cluster mode: the frame also
    /// goes to the other nodes' members of the room, as a notice on the
    /// room's subject (dropped if the link's queue is full, like every
    /// notice), and a mute change to the user's connections on other nodes
    /// on the user's subject (never dropped, like joins).
    /// `skip` is the requesting connection (it gets its ack instead).
    ///
    /// Issue 16: with [`Audience::Own`] (a `joined`/`left` in a room over
    /// the cap, `rooms::effects::audience`) only the user's connections on
    /// this node's shards get `frame`: no room notice to the other nodes.
    pub fn member_event(
        &self,
        room: &str,
        user: UserId,
        mute: MuteChange,
        frame: Option<Frame>,
        audience: Audience,
        skip: Option<Origin>,
    ) {
        let room: Arc<str> = Arc::from(room);
        let notice = frame.as_ref().filter(|_| audience == Audience::Room);
        if let (Some(cluster), Some(frame)) = (&self.cluster, notice) {
            // No user has id 0: every member of the room gets it.
            cluster.notice(RemoteNotice {
                room: room.clone(),
                except: 0,
                frame: frame.clone(),
            });
        }
        if mute != MuteChange::Unchanged {
            // The user's connections on other nodes check it too.
            self.to_other_nodes(user, room.clone(), Membership::Mute(mute));
        }
        let event = ShardEvent::Member {
            room,
            user,
            mute,
            frame,
            audience,
            skip,
        };
        let refused = self.router.broadcast(&event);
        self.retry_refused(refused);
    }

    /// Delivers an ephemeral room notice (presence, typing) here and on
    /// every other shard and node, without waiting.
    pub fn notify_room(&self, room: Arc<str>, except: UserId, frame: Frame) {
        if let Some(cluster) = &self.cluster {
            cluster.notice(RemoteNotice {
                room: room.clone(),
                except,
                frame: frame.clone(),
            });
        }
        let event = ShardEvent::Notice {
            room,
            except,
            frame,
        };
        // Through this shard's own inbox too, not applied here at once: a
        // join announced by another shard just before (whose ack the client
        // already saw) is then applied first, and its member gets the notice.
        let refused = self.router.broadcast(&event);
        self.retry_refused(refused);
    }

    /// Cluster mode: tells the user's connections on other nodes about a
    /// membership change (never waits: a full queue is retried from a task).
    fn to_other_nodes(&self, user: UserId, room: Arc<str>, change: Membership) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        if let Err(m) = cluster.try_membership(RemoteMembership { user, room, change }) {
            let cluster = cluster.clone();
            tokio::task::spawn_local(async move { cluster.send_membership(m).await });
        }
    }

    /// Queues `event` for every shard but this one.
    fn to_other_shards(&self, event: ShardEvent) {
        let refused = self.router.broadcast_from(self.index, &event);
        self.retry_refused(refused);
    }

    /// Sends events that found a full inbox from a background task.
    fn retry_refused(&self, refused: Vec<(usize, ShardEvent)>) {
        for (target, event) in refused {
            let router = self.router.clone();
            tokio::task::spawn_local(async move {
                router.send_to(target, event).await;
                router.flush();
            });
        }
    }
}
