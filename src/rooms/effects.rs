//! What a committed room access change does to connections, shared by
//! both doors (the WebSocket `session::rooms` and the server API's
//! `api::tell`): the `member` frame the room's members and the target's
//! connections get, the target's cached mute, and whether the target now
//! follows the room. Each door applies [`Effects`] its own way (a shard
//! at once and through its announcements, the API through the router and
//! the cluster link), so the frames are the same whichever door acted.
//!
//! It also holds the one rule for *who* hears a member's own `joined` or
//! `left` (issue 16, [`audience`]): both doors call it, so a hot room's
//! membership churn costs the same bounded fan-out whichever door acted.

use chrono::{DateTime, Utc};

use super::MuteChange;
use crate::presence::Presence;
use crate::protocol::{encode_member, Frame, MemberEvent, UserId};
use crate::store::{Applied, Change};

/// What connections must be told of one committed change.
#[derive(Debug, Clone)]
pub struct Effects {
    /// The target became a member: its connections follow the room from
    /// now on (the room's last stored id, read with the change).
    pub joined: Option<i64>,
    /// What it does to the target's cached mute.
    pub mute: MuteChange,
    /// The `member` frame for the room's members and the target's
    /// connections (`None`: nothing changed, nobody is told).
    pub frame: Option<Frame>,
    /// A mute's end (the ack's `until`).
    pub until: Option<DateTime<Utc>>,
    /// Who gets `frame` (issue 16: [`Audience::Room`] but for a `joined`
    /// or `left` in a room over the cap, see [`audience`]).
    pub audience: Audience,
}

/// Who gets a `member` frame (issue 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Audience {
    /// The room's members (every shard and, in cluster mode, every node)
    /// and the target's own connections, members of the room or not.
    #[default]
    Room,
    /// Only the target's own connections on this node (every shard):
    /// a `joined` or `left` in a room with more members online than
    /// `--presence-max-members` ([`audience`]).
    Own,
}

/// Issue 16, the one rule both doors apply to a member's own `joined` and
/// `left` (every other action reaches the room, see [`of`]): when `room`
/// has more than `max` (`--presence-max-members`) members online on this
/// node, counting `user` itself (so a join counts after it and a leave
/// before it, as presence does), only `user`'s own connections are told;
/// else the room is. Without the cap, `n` members joining a room cost
/// n²/2 frames (each join tells everyone already there).
pub fn audience(presence: &Presence, room: &str, user: UserId, max: usize) -> Audience {
    over_cap(presence.online_count_with(room, user), max)
}

/// [`audience`] for `online` members online, the user counted.
fn over_cap(online: usize, max: usize) -> Audience {
    if online > max {
        Audience::Own
    } else {
        Audience::Room
    }
}

/// The effects of `user`'s own `join` of `room` (the session door; the
/// server API has no join of a user's own): a `joined` frame when the
/// membership is `new`, the `mute` it loaded, told to `audience`.
pub fn joined(
    room: &str,
    user: UserId,
    new: bool,
    mute: MuteChange,
    audience: Audience,
) -> Effects {
    Effects {
        joined: None,
        mute,
        frame: new.then(|| member_frame(room, user, "joined", Some(user), None, None)),
        until: None,
        audience,
    }
}

/// The effects of `user`'s own `leave` of `room`: a `left` frame, told to
/// `audience`.
pub fn left(room: &str, user: UserId, audience: Audience) -> Effects {
    Effects {
        joined: None,
        mute: MuteChange::Unchanged,
        frame: Some(member_frame(room, user, "left", Some(user), None, None)),
        until: None,
        audience,
    }
}

impl Effects {
    /// True when some shard has something to do (a frame or a mute).
    pub fn tells(&self) -> bool {
        self.frame.is_some() || self.mute != MuteChange::Unchanged
    }
}

/// The effects of `change` to `target` in `room` by `by` (`None`: an
/// operator, shown as `by: null`), as the store `applied` it.
pub fn of(
    room: &str,
    by: Option<UserId>,
    target: UserId,
    change: Change,
    applied: Applied,
) -> Effects {
    let event = |action, role, until| Some(member_frame(room, target, action, by, role, until));
    let none = Effects {
        joined: None,
        mute: MuteChange::Unchanged,
        frame: None,
        until: None,
        audience: Audience::Room,
    };
    match applied {
        Applied::Role { changed: false }
        | Applied::Unmuted { changed: false }
        | Applied::Unbanned { changed: false } => none,
        Applied::Unbanned { changed: true } => Effects {
            frame: event("unbanned", None, None),
            ..none
        },
        Applied::Role { changed: true } => {
            let role = match change {
                Change::SetRole(role) => Some(role.as_str()),
                _ => None,
            };
            Effects {
                frame: event("role", role, None),
                ..none
            }
        }
        Applied::Invited { last, mute } => Effects {
            joined: Some(last),
            mute: mute.map_or(MuteChange::Unchanged, MuteChange::Muted),
            frame: event("invited", None, None),
            until: None,
            audience: Audience::Room,
        },
        Applied::Muted(m) => Effects {
            joined: None,
            mute: MuteChange::Muted(m),
            frame: event("muted", None, m.until),
            until: m.until,
            audience: Audience::Room,
        },
        Applied::Unmuted { changed: true } => Effects {
            mute: MuteChange::Unmuted,
            frame: event("unmuted", None, None),
            ..none
        },
    }
}

/// A `member` frame: `user` in `room`, `action` by `by` (`None`: shown as
/// `null`), with the role or the end it sets.
pub fn member_frame(
    room: &str,
    user: UserId,
    action: &str,
    by: Option<UserId>,
    role: Option<&str>,
    until: Option<DateTime<Utc>>,
) -> Frame {
    encode_member(&MemberEvent {
        room,
        user,
        action,
        by,
        role,
        until,
        reason: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::{Mute, Role};

    #[test]
    fn no_change_tells_nobody_and_an_invitation_follows_the_room() {
        let fx = of(
            "r",
            None,
            2,
            Change::Unmute,
            Applied::Unmuted { changed: false },
        );
        assert!(!fx.tells());
        let fx = of(
            "r",
            None,
            2,
            Change::Invite,
            Applied::Invited {
                last: 7,
                mute: None,
            },
        );
        assert_eq!(fx.joined, Some(7));
        let frame = fx.frame.expect("a frame");
        assert!(frame.as_str().contains("\"by\":null"), "{}", frame.as_str());
        let m = Mute { until: None };
        let fx = of("r", Some(1), 2, Change::Mute(None), Applied::Muted(m));
        assert_eq!(fx.mute, MuteChange::Muted(m));
        let fx = of(
            "r",
            Some(1),
            2,
            Change::SetRole(Role::Moderator),
            Applied::Role { changed: true },
        );
        assert!(fx.frame.expect("frame").as_str().contains("moderator"));
    }

    #[test]
    fn joins_and_leaves_reach_only_the_user_over_the_cap_counting_the_user() {
        assert_eq!(over_cap(2, 2), Audience::Room, "at the cap");
        assert_eq!(over_cap(3, 2), Audience::Own);
        let presence = Presence::new();
        let room: std::sync::Arc<str> = std::sync::Arc::from("r");
        for user in [1, 2] {
            presence.connected(user, std::slice::from_ref(&room));
        }
        // User 3, offline or not yet in the room, is counted all the same.
        assert_eq!(audience(&presence, "r", 3, 2), Audience::Own);
        assert_eq!(audience(&presence, "r", 2, 2), Audience::Room);
        presence.connected(3, &[]);
        presence.joined(3, &room);
        assert_eq!(
            audience(&presence, "r", 3, 2),
            Audience::Own,
            "after a join"
        );
        presence.left(3, "r");
        assert_eq!(
            audience(&presence, "r", 3, 2),
            Audience::Own,
            "before a leave"
        );
        assert_eq!(audience(&presence, "r", 3, 3), Audience::Room);
        let fx = left("r", 3, Audience::Own);
        assert!(fx.tells() && fx.audience == Audience::Own);
        let fx = joined("r", 3, false, MuteChange::Unchanged, Audience::Room);
        assert!(!fx.tells(), "an old membership: nothing to tell");
    }
}
