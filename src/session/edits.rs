//! Issue 14: `edit` and `delete`. Who may change which message, what an
//! actor may see of it (a message it cannot see "does not exist"), and the
//! hand-off of the change to its stream's writer: an edit or delete is an
//! event of the message's stream (the room, or the DM pair), committed by
//! the same writer as the stream's messages, in id order with them. The
//! writer re-checks the target inside the transaction that stores the
//! event ([`EVENT`](crate::store::writer::BatchInserter)), so a race with
//! another delete is refused cleanly.

use super::{error, error_frame, later, submit, Outcome, Session};
use crate::changes::{self, Changer, Refusal};
use crate::protocol::{encode_message_for, Kind, Ref, Target, UserId};
use crate::shard::Shard;
use crate::store::EventTarget;

/// What an actor cannot see, or names an event instead of a message.
fn does_not_exist(id: i64) -> String {
    Refusal::Missing(id).to_string()
}

impl Session {
    /// `{"type":"edit","id","content"}`: the author, while still a member
    /// of the message's room; the content rules of `message`.
    pub(super) fn edit(
        &self,
        id: i64,
        content: String,
        client_id: Option<String>,
        r: Option<Ref>,
    ) -> Outcome {
        if let Err(e) = self.check_content(&content) {
            return error(&r, e);
        }
        self.change(Kind::Edit { target: id }, content, client_id, r)
    }

    /// `{"type":"delete","id"}`: whoever [`may_delete`] allows (for a room
    /// message, a member of the room).
    pub(super) fn delete(&self, id: i64, client_id: Option<String>, r: Option<Ref>) -> Outcome {
        self.change(Kind::Delete { target: id }, String::new(), client_id, r)
    }

    /// Looks the target up (and, with a `client_id`, what the user stored
    /// under it: a retry is answered with its original event), checks the
    /// rules, then queues the event on the writer of the target's stream.
    /// Counts against the user's message rate, like a message.
    fn change(
        &self,
        kind: Kind,
        content: String,
        client_id: Option<String>,
        r: Option<Ref>,
    ) -> Outcome {
        let Some(id) = kind.target_message() else {
            return error(&r, "not an edit or delete");
        };
        if let Err(e) = self.user_rate() {
            return error(&r, e);
        }
        let shard = self.shard.clone();
        let user = self.user;
        // The stream is set once the target is known.
        let mut request = self.persist_request(Target::User(user), content, client_id, r.clone());
        request.kind = kind;
        later(async move {
            let looked_up = shard
                .store
                .event_target(id, user, request.client_id.as_deref())
                .await;
            let (found, original) = match looked_up {
                Ok(found) => found,
                Err(e) => return super::db_error(&shard, "edit/delete", &e, &r),
            };
            if let Some(original) = original {
                return vec![encode_message_for(&original, r.as_ref())];
            }
            match event_stream(&shard, user, kind, id, found) {
                Ok(stream) => {
                    request.target = stream;
                    submit(&shard, request).err().into_iter().collect()
                }
                Err(why) => vec![error_frame(&r, why)],
            }
        })
    }
}

/// The stream an edit or delete of message `id` by `user` is committed in
/// (the message's room, or the DM pair as seen from `user`), or why it is
/// refused. A message `user` cannot see — another room's, another pair's,
/// an event's id, a missing id — "does not exist", whatever the reason.
fn event_stream(
    shard: &Shard,
    user: UserId,
    kind: Kind,
    id: i64,
    found: Option<EventTarget>,
) -> Result<Target, String> {
    let found = changes::message(id, found).map_err(|e| e.to_string())?;
    let is_author = found.author == user;
    let stream = match &found.stream {
        Target::Room(room) => {
            let member = shard.registry.borrow().member_room_muted(user, room);
            // Only members receive the room's events, the author's own copy
            // (its ack) included: an author who left joins again first.
            match member {
                // A muted member's edit is refused like its messages.
                Some((room, mute)) if matches!(kind, Kind::Edit { .. }) => {
                    if let Some(refused) = super::rooms::muted(&room, mute) {
                        return Err(refused);
                    }
                    Target::Room(room)
                }
                Some((room, _)) => Target::Room(room),
                None if is_author => {
                    return Err(format!(
                        "join room '{room}' before changing message {id} in it"
                    ))
                }
                None => return Err(does_not_exist(id)),
            }
        }
        Target::User(to) if is_author => Target::User(*to),
        Target::User(to) if *to == user => Target::User(found.author),
        Target::User(_) => return Err(does_not_exist(id)),
    };
    // The rules every door shares (`changes`): author, role, deleted.
    changes::allowed(Changer::User(user), kind, id, &found, &stream).map_err(|e| e.to_string())?;
    Ok(stream)
}
