//! The wire protocol: the only module that knows JSON.
//!
//! Incoming text frames are decoded into [`Request`]s with a clear
//! [`DecodeError`] for every way a frame can be wrong; outgoing frames are
//! encoded here once into a [`Frame`] that every recipient shares.
//!
//! # Layout
//!
//! - `mod.rs` (this file): what both directions share: [`UserId`],
//!   [`Frame`], [`Ref`], [`Target`], [`StoredMessage`] and its [`Kind`], [`RoomSummary`], the
//!   `MAX_*` limits and the name and `client_id` validators.
//! - [`request`]: client → server. [`Request`] and [`Page`], [`decode`] and
//!   [`decode_with_ref`] (the `ref` read first, so an error carries it),
//!   [`DecodeError`]. A new request is a variant, its fields in `RawRequest`
//!   and one arm in the decoder.
//! - [`member`]: the room access frames (issue 14): `member` events, the
//!   `<request>_ack`s of `set_role`/`invite`/`mute`/`unmute`, `members`.
//! - [`frame`]: server → client. One `encode_*` per frame type, all through
//!   one envelope (`{"type", "ref"?, "data"}`); [`HistoryKind`], [`JoinAck`].
//!   `encode_message` is on the hot path (`benches/protocol.rs`).
//!
//! Every public item is re-exported here: callers write
//! `crate::protocol::X`, never the submodule.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub mod frame;
pub mod member;
pub mod request;

pub use frame::{
    encode_dm_sync_ack, encode_error, encode_error_for, encode_history, encode_join_ack,
    encode_leave_ack, encode_message, encode_message_data, encode_message_for, encode_presence,
    encode_presence_batch, encode_read_ack, encode_refresh_ack, encode_room_created, encode_rooms,
    encode_typing, history_head, push_history_entry, rfc3339, rfc3339_opt, HistoryKind, JoinAck,
    PresenceEntry, HISTORY_TAIL,
};
pub use member::{encode_access_ack, encode_member, encode_members, MemberEvent, MemberInfo};
pub use request::{decode, decode_with_ref, DecodeError, Page, Request, MAX_MUTE_SECONDS};

/// A user id, as carried in tokens, frames and the `users` table.
pub type UserId = i64;

/// Issue 15: the operator (the server API) as the author of the rows it
/// writes in a stream (a delete, kick or ban): user 0, which no token can
/// name (see [`MAX_USER_ID`]; `sql/V8__feed_api.sql` creates its row).
/// Frames and feed events show it as `by: null`.
pub const OPERATOR: UserId = 0;

/// Largest user id: 2^53 - 1, the largest integer a JavaScript number
/// holds exactly (`Number.MAX_SAFE_INTEGER`), so that no two ids collide
/// in a browser. User ids are `1 ..= MAX_USER_ID`.
pub const MAX_USER_ID: UserId = (1 << 53) - 1;

/// True for a user id in `1 ..= MAX_USER_ID`.
pub fn valid_user_id(id: UserId) -> bool {
    (1..=MAX_USER_ID).contains(&id)
}

/// An encoded outgoing text frame. Cloning it only bumps a reference count,
/// so one encoding is shared by every recipient on every shard.
pub type Frame = Utf8Bytes;

/// Longest accepted room name, in bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 64;

/// Longest accepted `ref` string, in bytes.
pub const MAX_REF_BYTES: usize = 128;

/// Longest accepted `client_id`, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// Longest room name `create_room` accepts, in characters.
pub const MAX_NEW_ROOM_CHARS: usize = 64;

/// A client's correlation tag: echoed at the top level of every direct
/// reply to the request that carried it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Ref {
    /// `"ref": 17`
    Int(i64),
    /// `"ref": "abc"`
    Text(Box<str>),
}

/// True for a room name the server accepts: 1 to [`MAX_ROOM_NAME_BYTES`]
/// bytes, no control characters.
pub fn valid_room_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_ROOM_NAME_BYTES && !name.chars().any(char::is_control)
}

/// True for a name a new room may have: 1 to [`MAX_NEW_ROOM_CHARS`] ASCII
/// letters, digits, `-`, `_` or `.`.
pub fn valid_new_room_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NEW_ROOM_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks message content (every door: the WebSocket `message`, `dm`,
/// `edit`, and the server API's posts and edits): not empty, at most `max` characters, no NUL
/// (PostgreSQL text cannot hold it).
pub fn check_content(content: &str, max: usize) -> Result<(), String> {
    if content.is_empty() {
        return Err("content must not be empty".into());
    }
    // Byte length bounds character count from above: count only when needed.
    if content.len() > max && content.chars().count() > max {
        return Err(format!("content too long (at most {max} characters)"));
    }
    if content.contains('\0') {
        return Err("content must not contain NUL characters".into());
    }
    Ok(())
}

/// True for a `client_id`: 1 to [`MAX_CLIENT_ID_CHARS`] characters, no NUL.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && (id.len() <= MAX_CLIENT_ID_CHARS || id.chars().count() <= MAX_CLIENT_ID_CHARS)
        && !id.contains('\0')
}

/// Where a stored message was addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A room message, by room name.
    Room(std::sync::Arc<str>),
    /// A direct message to this user.
    User(UserId),
}

/// What a row of a stream is: a message, or an event about one (issue 14).
/// Stored as `messages.kind` (0, 1, 2) with `messages.target`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// A room message or a DM (`message` / `dm` frames).
    #[default]
    Message,
    /// An edit of message `target` by its author; the row's content is the
    /// new content (`message_edited`).
    Edit {
        /// The edited message's id.
        target: i64,
    },
    /// A delete of message `target` by the row's sender (`message_deleted`).
    Delete {
        /// The deleted message's id.
        target: i64,
    },
    /// Issue 14: a kick or ban of `user` from the room by the row's sender
    /// (a `member` frame), ordered in the room's stream: every shard drops
    /// the user's subscriptions when it applies it.
    Member {
        /// The kicked or banned user.
        user: UserId,
        /// A ban (refuses `join` until it ends), not a plain kick.
        ban: bool,
        /// A ban's length (`None`: until `unban`; a stored row reads `None`).
        seconds: Option<i64>,
    },
}

impl Kind {
    /// The `messages.kind` column's value.
    pub fn code(self) -> i16 {
        match self {
            Kind::Message => 0,
            Kind::Edit { .. } => 1,
            Kind::Delete { .. } => 2,
            Kind::Member { ban: false, .. } => 3,
            Kind::Member { ban: true, .. } => 4,
        }
    }

    /// The `messages.target` column's value (`None` for a message).
    pub fn target(self) -> Option<i64> {
        match self {
            Kind::Message => None,
            Kind::Edit { target } | Kind::Delete { target } => Some(target),
            Kind::Member { user, .. } => Some(user),
        }
    }

    /// The message id an edit or delete applies to (`None`: a message, or
    /// a kick or ban, whose `target` is a user).
    pub fn target_message(self) -> Option<i64> {
        match self {
            Kind::Edit { target } | Kind::Delete { target } => Some(target),
            Kind::Message | Kind::Member { .. } => None,
        }
    }

    /// The kind stored as `code` with `target` (an unknown code reads as a
    /// message: the table's CHECK constraint rules it out).
    pub fn from_columns(code: i16, target: Option<i64>) -> Kind {
        match (code, target) {
            (1, Some(target)) => Kind::Edit { target },
            (2, Some(target)) => Kind::Delete { target },
            (3 | 4, Some(user)) => Kind::Member {
                user,
                ban: code == 4,
                seconds: None,
            },
            _ => Kind::Message,
        }
    }
}

/// A message as stored and as delivered: the payload of `message` and `dm`
/// frames and of history entries; or, by its [`Kind`], an edit or delete
/// event of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Database id; unique, increasing within a room and within a DM pair.
    pub id: i64,
    /// Sender's user id.
    pub from_user: UserId,
    /// Sender's username.
    pub username: std::sync::Arc<str>,
    /// Message text.
    pub content: String,
    /// Commit time (microsecond precision, as stored).
    pub timestamp: DateTime<Utc>,
    /// Room or recipient.
    pub target: Target,
    /// A message, an edit or a delete.
    pub kind: Kind,
    /// A message: when it was last edited (`None`: never). A ban event
    /// (issue 14): when the ban ends (`None`: until `unban`); the column
    /// `messages.edited_at` of its row holds the same.
    pub edited_at: Option<DateTime<Utc>>,
    /// A message: deleted (a tombstone, its content erased); an edit: its
    /// message was deleted since (its content erased).
    pub deleted: bool,
}

/// One entry of a `rooms` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomSummary {
    /// Room name.
    pub room: String,
    /// Newest message id in the room (`null` when it has none).
    pub last_id: Option<i64>,
    /// Messages newer than the user's read position (capped by the server).
    pub unread: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_columns() {
        for kind in [
            Kind::Message,
            Kind::Edit { target: 7 },
            Kind::Delete { target: 9 },
            Kind::Member {
                user: 4,
                ban: false,
                seconds: None,
            },
            Kind::Member {
                user: 4,
                ban: true,
                seconds: None,
            },
        ] {
            assert_eq!(Kind::from_columns(kind.code(), kind.target()), kind);
        }
        // A ban's length is not a column (its end is the row's `edited_at`).
        let ban = Kind::Member {
            user: 4,
            ban: true,
            seconds: Some(60),
        };
        assert_eq!(
            (ban.code(), ban.target(), ban.target_message()),
            (4, Some(4), None)
        );
        assert_eq!(Kind::from_columns(0, None), Kind::Message);
        assert_eq!(
            Kind::from_columns(1, None),
            Kind::Message,
            "CHECK rules it out"
        );
    }

    #[test]
    fn new_room_names_use_a_small_character_set() {
        assert!(valid_new_room_name("general"));
        assert!(valid_new_room_name("team-1_b.x"));
        assert!(valid_new_room_name(&"a".repeat(64)));
        assert!(!valid_new_room_name(&"a".repeat(65)));
        assert!(!valid_new_room_name(""));
        assert!(!valid_new_room_name("with space"));
        assert!(!valid_new_room_name("café"));
        assert!(!valid_new_room_name("a/b"));
    }
}
