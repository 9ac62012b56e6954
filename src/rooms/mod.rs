//! Room access: visibility, roles, invitations and mutes. What a door
//! (the WebSocket `session` today, the server API later) calls to change
//! who may do what in a room.
//!
//! - [`rules`]: the pure rules (who may act on whom);
//! - [`effects`]: what a committed change tells connections (both doors);
//! - this file: the types both doors and the shards share ([`Visibility`],
//!   [`Mute`], [`MuteChange`]), and [`act`], which reads the actor's and
//!   target's standing, applies the rules and commits the change with its
//!   audit row, in one transaction (`store::access`).

pub mod effects;
pub mod rules;

use chrono::{DateTime, Utc};

pub use rules::{Action, Authority, Refusal, Role, Target};

use crate::protocol::UserId;
use crate::store::{Applied, Change, Standing, Store, StoreError};

/// Who may join a room without an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Visibility {
    /// Anyone may join (every room before issue 14).
    #[default]
    Public,
    /// Only invited users; to others it does not exist.
    Private,
}

impl Visibility {
    /// The name used in the protocol and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }

    /// The visibility of that name (`None`: not one).
    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            _ => None,
        }
    }
}

/// A member's mute in a room: its messages to the room are refused until
/// `until` (`None`: until unmuted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mute {
    /// When it ends by itself (`None`: never).
    pub until: Option<DateTime<Utc>>,
}

impl Mute {
    /// True while the mute holds at `now`.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// What a member event does to the affected user's cached mute (kept by
/// each shard with a connection of that user, checked per message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuteChange {
    /// Leave it as it is.
    Unchanged,
    /// The user is muted (again, or with a new end).
    Muted(Mute),
    /// The user's mute was lifted.
    Unmuted,
}

/// Why an action was not done, beyond the [`rules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The rules said no.
    Rule(Refusal),
    /// The target has no `users` row (it never connected).
    NoSuchUser,
    /// An operator named a room that does not exist.
    NoSuchRoom,
    /// The invitee is in `--max-rooms-per-user` rooms already.
    TooManyRooms(usize),
    /// The invitee is banned from the room: an invitation does not lift a
    /// ban (`unban` does).
    Banned,
}

impl From<Refusal> for Refused {
    fn from(r: Refusal) -> Refused {
        Refused::Rule(r)
    }
}

impl Refused {
    /// The error text for the actor.
    pub fn message(&self, room: &str, target: UserId) -> String {
        match self {
            Refused::Rule(r) => r.message(room, target),
            Refused::NoSuchUser => format!("user {target} does not exist"),
            Refused::NoSuchRoom => format!("room '{room}' does not exist"),
            Refused::TooManyRooms(max) => {
                format!("user {target} is in too many rooms (at most {max} per user)")
            }
            Refused::Banned => {
                format!("user {target} is banned from room '{room}'; unban them first")
            }
        }
    }
}

/// Does `change` to `target` in `room` on behalf of `by` (`None`: an
/// operator), if the rules allow it: one transaction that locks both
/// memberships, checks, writes the change and its `moderation_log` row.
/// `max_rooms` bounds an invitee's rooms (`--max-rooms-per-user`).
pub async fn act(
    store: &Store,
    room: &str,
    by: Option<UserId>,
    target: UserId,
    change: Change,
    max_rooms: usize,
) -> Result<Result<Applied, Refused>, StoreError> {
    act_because(store, room, by, target, change, None, max_rooms).await
}

/// [`act`] with the actor's reason, kept in the audit row and the feed
/// event (issue 15: the server API's mutes carry one).
pub async fn act_because(
    store: &Store,
    room: &str,
    by: Option<UserId>,
    target: UserId,
    change: Change,
    reason: Option<&str>,
    max_rooms: usize,
) -> Result<Result<Applied, Refused>, StoreError> {
    let action = change.action();
    store
        .moderate(room, by, target, change, reason, |s: &Standing| {
            decide(s, by, target, action, max_rooms)
        })
        .await
}

/// The decision of [`act`] on what the transaction read (also the
/// writer's, for a kick or ban it commits in the room's stream).
pub(crate) fn decide(
    s: &Standing,
    by: Option<UserId>,
    target: UserId,
    action: Action,
    max_rooms: usize,
) -> Result<(), Refused> {
    let authority = match by {
        None if !s.room_exists => return Err(Refused::NoSuchRoom),
        None => Authority::Operator,
        Some(_) => s.actor.map_or(Authority::Outsider, Authority::Member),
    };
    let t = Target {
        role: s.target,
        is_self: by == Some(target),
    };
    rules::check(authority, action, t)?;
    if matches!(action, Action::Ban) && !s.target_exists {
        return Err(Refused::NoSuchUser);
    }
    if action == Action::Invite {
        if !s.target_exists {
            return Err(Refused::NoSuchUser);
        }
        if usize::try_from(s.target_rooms).unwrap_or(usize::MAX) >= max_rooms {
            return Err(Refused::TooManyRooms(max_rooms));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(actor: Option<Role>, target: Option<Role>) -> Standing {
        Standing {
            room_exists: true,
            actor,
            target,
            target_exists: true,
            target_rooms: 0,
        }
    }

    #[test]
    fn mutes_end_at_their_time_or_never() {
        let now = Utc::now();
        assert!(Mute { until: None }.active_at(now));
        let m = Mute {
            until: Some(now + chrono::Duration::seconds(1)),
        };
        assert!(m.active_at(now));
        assert!(!m.active_at(now + chrono::Duration::seconds(1)));
    }

    #[test]
    fn operators_need_an_existing_room_and_invitees_an_existing_user() {
        let mut s = standing(None, None);
        s.room_exists = false;
        assert_eq!(
            decide(&s, None, 2, Action::Invite, 10),
            Err(Refused::NoSuchRoom)
        );
        assert_eq!(
            decide(&s, Some(1), 2, Action::Invite, 10),
            Err(Refused::Rule(Refusal::NotAMember)),
            "a member's request about a missing room says what a private one says"
        );
        let mut s = standing(Some(Role::Owner), None);
        s.target_exists = false;
        assert_eq!(
            decide(&s, Some(1), 2, Action::Invite, 10),
            Err(Refused::NoSuchUser)
        );
        let mut s = standing(Some(Role::Moderator), None);
        s.target_rooms = 10;
        assert_eq!(
            decide(&s, Some(1), 2, Action::Invite, 10),
            Err(Refused::TooManyRooms(10))
        );
        assert_eq!(
            decide(&standing(None, None), None, 2, Action::Invite, 10),
            Ok(())
        );
    }

    #[test]
    fn visibility_names() {
        assert_eq!(Visibility::parse("private"), Some(Visibility::Private));
        assert_eq!(Visibility::parse("public"), Some(Visibility::Public));
        assert_eq!(Visibility::parse("secret"), None);
        assert_eq!(Visibility::default().as_str(), "public");
    }
}
