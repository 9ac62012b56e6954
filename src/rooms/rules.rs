//! Who may do what in a room: each rule a pure function of the actor's
//! standing, the action and the target's role, returning `Ok` or the
//! [`Refusal`] to tell the actor (naming the missing role).
//!
//! - owners act on anyone but themselves;
//! - moderators act on plain members (and invite non-members);
//! - members act on no one;
//! - an operator (the server API, `by` null) is not bound by roles;
//! - someone who is not a member of the room is told what a request about a
//!   room that does not exist is told (a private room does not leak).

use std::fmt;

/// A member's role in a room, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A plain member.
    Member,
    /// May invite, and mute plain members.
    Moderator,
    /// May do anything to anyone but itself, including setting roles.
    Owner,
}

impl Role {
    /// The name used in the protocol and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Moderator => "moderator",
            Role::Member => "member",
        }
    }

    /// The role of that name (`None`: not a role).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "moderator" => Some(Role::Moderator),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may delete a message (`delete`; both doors call this): its author
/// always; an owner or moderator of the message's room any message of that
/// room. `actor_role` is the actor's role in that room (`None`: a DM, or
/// not a member: then only the author may).
pub fn may_delete(
    actor: crate::protocol::UserId,
    author: crate::protocol::UserId,
    actor_role: Option<Role>,
) -> bool {
    actor == author || matches!(actor_role, Some(Role::Owner | Role::Moderator))
}

/// Who is acting, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// The server's operator (server API, command line): bypasses roles.
    Operator,
    /// A member of the room with this role.
    Member(Role),
    /// Not a member of the room (or the room does not exist).
    Outsider,
}

/// What the actor wants to do to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Give the target this role (owners only).
    SetRole(Role),
    /// Make a non-member a member (owners and moderators).
    Invite,
    /// Refuse the target's messages for a while (or until unmuted).
    Mute,
    /// Lift a mute.
    Unmute,
    /// End a member's membership (ordered in the room's stream).
    Kick,
    /// End the target's membership (if any) and refuse its `join` for a
    /// while (or until unbanned); a non-member may be banned too.
    Ban,
    /// Lift a ban.
    Unban,
}

impl Action {
    /// The request's name, as the client sent it.
    pub fn name(self) -> &'static str {
        match self {
            Action::SetRole(_) => "set_role",
            Action::Invite => "invite",
            Action::Mute => "mute",
            Action::Unmute => "unmute",
            Action::Kick => "kick",
            Action::Ban => "ban",
            Action::Unban => "unban",
        }
    }
}

/// The target of an action, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The target's role in the room (`None`: not a member).
    pub role: Option<Role>,
    /// The target is the actor.
    pub is_self: bool,
}

/// Why an action is refused. [`Refusal::message`] is what the actor is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The actor is not a member of the room (or it does not exist).
    #[error("not a member of the room")]
    NotAMember,
    /// The actor's role is too low: `role` is the one needed; `on` the
    /// target's role when that is what raised the need.
    #[error("{action} needs the {role} role")]
    NeedsRole {
        /// The request.
        action: &'static str,
        /// The role it needs.
        role: Role,
        /// The target's role, when the need comes from it.
        on: Option<Role>,
    },
    /// No one acts on itself (an owner would lock the room out of owners).
    #[error("{0} cannot target yourself")]
    OnSelf(&'static str),
    /// The action needs a member and the target is not one.
    #[error("the user is not a member of the room")]
    TargetNotAMember,
    /// An invitation for someone who is a member already.
    #[error("the user is already a member of the room")]
    AlreadyAMember,
}

impl Refusal {
    /// The error text for the actor: about `room` and `target`.
    pub fn message(&self, room: &str, target: i64) -> String {
        match self {
            // Word for word what a request about a missing room is told.
            Refusal::NotAMember => format!("not a member of room '{room}'"),
            Refusal::NeedsRole {
                action,
                role,
                on: Some(on),
            } => format!(
                "{action} on {} {on} needs the {role} role in room '{room}'",
                article(*on)
            ),
            Refusal::NeedsRole { action, role, .. } => {
                format!("{action} needs the {role} role in room '{room}'")
            }
            Refusal::OnSelf(action) => format!("{action} cannot target yourself"),
            Refusal::TargetNotAMember => format!("user {target} is not a member of room '{room}'"),
            Refusal::AlreadyAMember => {
                format!("user {target} is already a member of room '{room}'")
            }
        }
    }
}

/// "a" or "an" before a role's name.
fn article(role: Role) -> &'static str {
    match role {
        Role::Owner => "an",
        Role::Moderator | Role::Member => "a",
    }
}

/// May `actor` do `action` to `target`? The one rule every door calls.
pub fn check(actor: Authority, action: Action, target: Target) -> Result<(), Refusal> {
    let role = match actor {
        Authority::Outsider => return Err(Refusal::NotAMember),
        Authority::Operator => None,
        Authority::Member(role) => Some(role),
    };
    match (action, target.role) {
        (Action::Invite, Some(_)) => return Err(Refusal::AlreadyAMember),
        (Action::SetRole(_) | Action::Mute | Action::Unmute | Action::Kick, None) => {
            return Err(Refusal::TargetNotAMember)
        }
        _ => {}
    }
    let Some(role) = role else {
        return Ok(()); // an operator
    };
    if target.is_self {
        return Err(Refusal::OnSelf(action.name()));
    }
    let (needed, on) = needed(action, target.role);
    if role >= needed {
        Ok(())
    } else {
        Err(Refusal::NeedsRole {
            action: action.name(),
            role: needed,
            on,
        })
    }
}

/// The lowest role that may do `action` to a target of role `target`, and
/// the target's role when it is what raised the need above the action's own.
fn needed(action: Action, target: Option<Role>) -> (Role, Option<Role>) {
    let own = match action {
        Action::SetRole(_) => Role::Owner,
        Action::Invite
        | Action::Mute
        | Action::Unmute
        | Action::Kick
        | Action::Ban
        | Action::Unban => Role::Moderator,
    };
    // Moderators act on plain members only; anyone above needs an owner.
    match target {
        Some(t @ (Role::Moderator | Role::Owner)) if own < Role::Owner => (Role::Owner, Some(t)),
        _ => (own, None),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_author_and_the_rooms_owners_and_moderators_may_delete() {
        use super::may_delete;
        assert!(may_delete(1, 1, None));
        assert!(may_delete(1, 1, Some(Role::Member)));
        assert!(!may_delete(2, 1, None));
        assert!(!may_delete(2, 1, Some(Role::Member)));
        assert!(may_delete(2, 1, Some(Role::Moderator)));
        assert!(may_delete(2, 1, Some(Role::Owner)));
    }

    use super::*;

    const OWNER: Authority = Authority::Member(Role::Owner);
    const MODERATOR: Authority = Authority::Member(Role::Moderator);
    const MEMBER: Authority = Authority::Member(Role::Member);

    fn on(role: Option<Role>) -> Target {
        Target {
            role,
            is_self: false,
        }
    }

    const ROLES: [Role; 3] = [Role::Owner, Role::Moderator, Role::Member];

    #[test]
    fn roles_round_trip_and_order() {
        for r in ROLES {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("admin"), None);
        assert_eq!(Role::parse("Owner"), None, "case matters");
        assert!(Role::Owner > Role::Moderator && Role::Moderator > Role::Member);
    }

    #[test]
    fn owners_act_on_anyone_but_themselves() {
        for t in ROLES {
            for action in [
                Action::Mute,
                Action::Unmute,
                Action::SetRole(Role::Owner),
                Action::SetRole(Role::Member),
            ] {
                assert_eq!(
                    check(OWNER, action, on(Some(t))),
                    Ok(()),
                    "{action:?} {t:?}"
                );
            }
        }
        assert_eq!(check(OWNER, Action::Invite, on(None)), Ok(()));
        for action in [Action::Mute, Action::SetRole(Role::Member)] {
            let me = Target {
                role: Some(Role::Owner),
                is_self: true,
            };
            assert_eq!(
                check(OWNER, action, me),
                Err(Refusal::OnSelf(action.name()))
            );
        }
    }

    #[test]
    fn moderators_act_on_plain_members_only() {
        assert_eq!(check(MODERATOR, Action::Invite, on(None)), Ok(()));
        for action in [Action::Mute, Action::Unmute] {
            assert_eq!(check(MODERATOR, action, on(Some(Role::Member))), Ok(()));
            for t in [Role::Moderator, Role::Owner] {
                assert_eq!(
                    check(MODERATOR, action, on(Some(t))),
                    Err(Refusal::NeedsRole {
                        action: action.name(),
                        role: Role::Owner,
                        on: Some(t)
                    })
                );
            }
        }
        for t in ROLES {
            assert_eq!(
                check(MODERATOR, Action::SetRole(Role::Member), on(Some(t))),
                Err(Refusal::NeedsRole {
                    action: "set_role",
                    role: Role::Owner,
                    on: None
                }),
                "set_role is for owners only"
            );
        }
        let me = Target {
            role: Some(Role::Moderator),
            is_self: true,
        };
        assert_eq!(
            check(MODERATOR, Action::Mute, me),
            Err(Refusal::OnSelf("mute"))
        );
    }

    #[test]
    fn members_act_on_no_one() {
        assert_eq!(
            check(MEMBER, Action::Invite, on(None)),
            Err(Refusal::NeedsRole {
                action: "invite",
                role: Role::Moderator,
                on: None
            })
        );
        assert_eq!(
            check(MEMBER, Action::Mute, on(Some(Role::Member))),
            Err(Refusal::NeedsRole {
                action: "mute",
                role: Role::Moderator,
                on: None
            })
        );
        assert_eq!(
            check(MEMBER, Action::Unmute, on(Some(Role::Owner))),
            Err(Refusal::NeedsRole {
                action: "unmute",
                role: Role::Owner,
                on: Some(Role::Owner)
            })
        );
        assert_eq!(
            check(MEMBER, Action::SetRole(Role::Owner), on(Some(Role::Member))),
            Err(Refusal::NeedsRole {
                action: "set_role",
                role: Role::Owner,
                on: None
            })
        );
    }

    #[test]
    fn operators_bypass_roles_but_not_the_target_state() {
        for t in ROLES {
            for action in [Action::Mute, Action::Unmute, Action::SetRole(Role::Owner)] {
                assert_eq!(check(Authority::Operator, action, on(Some(t))), Ok(()));
            }
        }
        assert_eq!(check(Authority::Operator, Action::Invite, on(None)), Ok(()));
        assert_eq!(
            check(Authority::Operator, Action::Mute, on(None)),
            Err(Refusal::TargetNotAMember)
        );
        assert_eq!(
            check(Authority::Operator, Action::Invite, on(Some(Role::Member))),
            Err(Refusal::AlreadyAMember)
        );
    }

    #[test]
    fn outsiders_are_told_nothing_about_the_room() {
        for action in [
            Action::Invite,
            Action::Mute,
            Action::Unmute,
            Action::SetRole(Role::Owner),
        ] {
            for t in [None, Some(Role::Owner), Some(Role::Member)] {
                assert_eq!(
                    check(Authority::Outsider, action, on(t)),
                    Err(Refusal::NotAMember)
                );
            }
        }
        assert_eq!(
            Refusal::NotAMember.message("secret", 3),
            "not a member of room 'secret'"
        );
    }

    #[test]
    fn target_state_is_checked_before_roles() {
        assert_eq!(
            check(OWNER, Action::Invite, on(Some(Role::Member))),
            Err(Refusal::AlreadyAMember)
        );
        assert_eq!(
            check(MEMBER, Action::Mute, on(None)),
            Err(Refusal::TargetNotAMember)
        );
        assert_eq!(
            check(OWNER, Action::SetRole(Role::Moderator), on(None)),
            Err(Refusal::TargetNotAMember)
        );
    }

    #[test]
    fn kick_ban_unban_follow_the_mute_rule() {
        for action in [Action::Kick, Action::Ban, Action::Unban] {
            for t in ROLES {
                assert_eq!(
                    check(OWNER, action, on(Some(t))),
                    Ok(()),
                    "{action:?} {t:?}"
                );
            }
            assert_eq!(check(MODERATOR, action, on(Some(Role::Member))), Ok(()));
            for t in [Role::Moderator, Role::Owner] {
                assert_eq!(
                    check(MODERATOR, action, on(Some(t))),
                    Err(Refusal::NeedsRole {
                        action: action.name(),
                        role: Role::Owner,
                        on: Some(t)
                    })
                );
            }
            assert_eq!(
                check(MEMBER, action, on(Some(Role::Member))),
                Err(Refusal::NeedsRole {
                    action: action.name(),
                    role: Role::Moderator,
                    on: None
                })
            );
            let me = Target {
                role: Some(Role::Owner),
                is_self: true,
            };
            assert_eq!(
                check(OWNER, action, me),
                Err(Refusal::OnSelf(action.name()))
            );
            assert_eq!(
                check(Authority::Outsider, action, on(Some(Role::Member))),
                Err(Refusal::NotAMember)
            );
        }
        assert_eq!(
            check(OWNER, Action::Kick, on(None)),
            Err(Refusal::TargetNotAMember),
            "a kick needs a member"
        );
        assert_eq!(
            check(MODERATOR, Action::Ban, on(None)),
            Ok(()),
            "bans need none"
        );
        assert_eq!(check(MODERATOR, Action::Unban, on(None)), Ok(()));
    }

    #[test]
    fn refusals_name_the_missing_role() {
        let r = Refusal::NeedsRole {
            action: "mute",
            role: Role::Owner,
            on: Some(Role::Moderator),
        };
        assert_eq!(
            r.message("r", 5),
            "mute on a moderator needs the owner role in room 'r'"
        );
        let r = Refusal::NeedsRole {
            action: "invite",
            role: Role::Moderator,
            on: None,
        };
        assert_eq!(
            r.message("r", 5),
            "invite needs the moderator role in room 'r'"
        );
        assert_eq!(
            Refusal::TargetNotAMember.message("r", 5),
            "user 5 is not a member of room 'r'"
        );
        assert_eq!(
            Refusal::AlreadyAMember.message("r", 5),
            "user 5 is already a member of room 'r'"
        );
        assert_eq!(
            Refusal::OnSelf("set_role").message("r", 5),
            "set_role cannot target yourself"
        );
    }
}
