//! How the server API tells connections what it changed (issue 15): the
//! same [`ShardEvent`]s and cluster messages a shard sends for a
//! WebSocket request (`shard::announce`), sent through the [`Router`]
//! (the API thread is not a shard: it may wait on a full inbox) and the
//! node's [`ClusterHandle`](crate::cluster::ClusterHandle).

use std::sync::Arc;

use super::ApiState;
use crate::cluster::{Membership, RemoteMembership, RemoteNotice};
use crate::protocol::UserId;
use crate::rooms::effects::{Audience, Effects};
use crate::rooms::MuteChange;
use crate::router::ShardEvent;

/// Makes a committed room access change take effect on every shard and
/// node, as `session::rooms` does for a WebSocket request: an invitee's
/// connections follow the room (before the member frame, in each inbox's
/// order), its cached mute changes, and the `member` frame reaches the
/// room's members and the target's connections (there is no requester to
/// skip). `fx.audience` says whether the room hears it (issue 16: a
/// `joined`/`left` built with `rooms::effects::audience` over the cap
/// reaches the target's own connections only, as from a WebSocket).
pub async fn member_effects(state: &ApiState, room: &str, target: UserId, fx: Effects) {
    let room: Arc<str> = Arc::from(room);
    if fx.joined.is_some() {
        state.presence.joined(target, &room);
        if let Some(cluster) = &state.cluster {
            cluster
                .send_membership(RemoteMembership {
                    user: target,
                    room: room.clone(),
                    change: Membership::Joined,
                })
                .await;
        }
        state
            .router
            .publish(ShardEvent::Joined {
                user: target,
                room: room.clone(),
            })
            .await;
    }
    if !fx.tells() {
        state.router.flush();
        return;
    }
    if let Some(cluster) = &state.cluster {
        // Issue 16: a frame for the target's own connections only (a
        // `joined`/`left` over the cap) is no notice for the room.
        if let Some(frame) = fx.frame.as_ref().filter(|_| fx.audience == Audience::Room) {
            // No user has id 0: every member of the room gets it.
            cluster.notice(RemoteNotice {
                room: room.clone(),
                except: 0,
                frame: frame.clone(),
            });
        }
        if fx.mute != MuteChange::Unchanged {
            cluster
                .send_membership(RemoteMembership {
                    user: target,
                    room: room.clone(),
                    change: Membership::Mute(fx.mute),
                })
                .await;
        }
    }
    state
        .router
        .publish(ShardEvent::Member {
            room,
            user: target,
            mute: fx.mute,
            frame: fx.frame,
            audience: fx.audience,
            skip: None,
        })
        .await;
    state.router.flush();
}

/// Closes every connection of `user` with 4003: on each shard of this
/// node, and (cluster mode) on every other node. False when the order
/// could not reach the other nodes (NATS away).
pub async fn disconnect(state: &ApiState, user: UserId) -> bool {
    state.router.publish(ShardEvent::Disconnect { user }).await;
    state.router.flush();
    match &state.cluster {
        Some(cluster) => cluster.disconnect_elsewhere(user).await,
        None => true,
    }
}

/// How many connections `user` has: on this node, plus (cluster mode) the
/// other nodes' answers, gathered for a bounded time.
pub async fn connections(state: &ApiState, user: UserId) -> u64 {
    let here = state.user_limits.connections(user) as u64;
    match &state.cluster {
        Some(cluster) => here.saturating_add(cluster.connections_elsewhere(user).await),
        None => here,
    }
}
