//! The rules of changing a stored message (an edit or a delete), shared by
//! both doors: the WebSocket `session::edits` and the server API's
//! `api::messages` call these, so each rule has one implementation.
//!
//! What a door still decides itself: the stream the change is committed in
//! as its actor sees it (a WebSocket user must be a member of the room, and
//! a muted member cannot edit; the operator is restricted by neither).

use crate::protocol::{Kind, Target, UserId};
use crate::rooms::rules::may_delete;
use crate::store::writer::refused_deleted;
use crate::store::EventTarget;

/// Who asks for the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changer {
    /// A user (the WebSocket door): edits only its own messages, deletes
    /// what [`may_delete`] allows.
    User(UserId),
    /// The operator (the server API): edits on behalf of the author,
    /// deletes any message.
    Operator,
}

/// Why a change is refused (the text is what the requester is told).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such message: a missing id, an event's id, or (for a user) a
    /// message it cannot see; all answered alike.
    #[error("message {0} does not exist")]
    Missing(i64),
    /// The changer may not make this change.
    #[error("{0}")]
    Forbidden(String),
    /// The message is deleted already.
    #[error("{0}")]
    Deleted(String),
}

/// The message a change of `id` names: `found` if it is a message (not an
/// edit, delete, kick or ban event), else [`Refusal::Missing`].
pub fn message(id: i64, found: Option<EventTarget>) -> Result<EventTarget, Refusal> {
    found.filter(|f| f.is_message).ok_or(Refusal::Missing(id))
}

/// Whether `changer` may make the change `kind` of message `id` (`found`),
/// committed in `stream`: an edit by its author (the operator edits as the
/// author), a delete by whoever [`may_delete`] allows (the operator: any
/// message), never a change of a deleted message.
pub fn allowed(
    changer: Changer,
    kind: Kind,
    id: i64,
    found: &EventTarget,
    stream: &Target,
) -> Result<(), Refusal> {
    if let Changer::User(user) = changer {
        match kind {
            Kind::Edit { .. } if found.author != user => {
                return Err(Refusal::Forbidden(format!(
                    "only its author can edit message {id}"
                )))
            }
            Kind::Delete { .. } if !may_delete(user, found.author, found.actor_role) => {
                return Err(Refusal::Forbidden(match stream {
                    Target::Room(room) => format!(
                        "only its author or an owner or moderator of room '{room}' can delete message {id}"
                    ),
                    Target::User(_) => format!("only its author can delete message {id}"),
                }))
            }
            _ => {}
        }
    }
    if found.deleted {
        return Err(Refusal::Deleted(refused_deleted(kind)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn target(author: UserId, deleted: bool) -> EventTarget {
        EventTarget {
            author,
            stream: Target::Room(Arc::from("r")),
            is_message: true,
            deleted,
            actor_role: None,
        }
    }

    #[test]
    fn events_and_missing_ids_do_not_exist() {
        assert_eq!(message(5, None), Err(Refusal::Missing(5)));
        let event = EventTarget {
            is_message: false,
            ..target(1, false)
        };
        assert_eq!(message(5, Some(event)), Err(Refusal::Missing(5)));
        assert_eq!(message(5, Some(target(1, false))), Ok(target(1, false)));
    }

    #[test]
    fn the_operator_edits_and_deletes_any_live_message() {
        let room = Target::Room(Arc::from("r"));
        let m = target(7, false);
        let edit = Kind::Edit { target: 5 };
        let delete = Kind::Delete { target: 5 };
        assert!(allowed(Changer::Operator, edit, 5, &m, &room).is_ok());
        assert!(allowed(Changer::Operator, delete, 5, &m, &room).is_ok());
        // A user who is not the author, with no role: neither.
        assert!(matches!(
            allowed(Changer::User(8), edit, 5, &m, &room),
            Err(Refusal::Forbidden(_))
        ));
        assert!(matches!(
            allowed(Changer::User(8), delete, 5, &m, &room),
            Err(Refusal::Forbidden(_))
        ));
        assert!(allowed(Changer::User(7), edit, 5, &m, &room).is_ok());
        // Deleted: refused to everyone.
        let gone = target(7, true);
        for changer in [Changer::Operator, Changer::User(7)] {
            assert!(matches!(
                allowed(changer, delete, 5, &gone, &room),
                Err(Refusal::Deleted(_))
            ));
        }
    }
}
