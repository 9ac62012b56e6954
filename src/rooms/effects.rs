//! What a committed room access change does to connections, shared by
//! both doors (the WebSocket `session::rooms` and the server API's
//! `api::tell`): the `member` frame the room's members and the target's
//! connections get, the target's cached mute, and whether the target now
//! follows the room. Each door applies [`Effects`] its own way (a shard
//! at once and through its announcements, the API through the router and
//! the cluster link), so the frames are the same whichever door acted.

use chrono::{DateTime, Utc};

use super::MuteChange;
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
        },
        Applied::Muted(m) => Effects {
            joined: None,
            mute: MuteChange::Muted(m),
            frame: event("muted", None, m.until),
            until: m.until,
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
}
