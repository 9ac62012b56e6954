//! Client → server: decoding a text frame into a [`Request`], or into the
//! [`DecodeError`] the client is told.

use std::borrow::Cow;

use serde::Deserialize;

use super::{valid_client_id, valid_room_name, valid_user_id, Ref, UserId, MAX_REF_BYTES};
use crate::rooms::{Role, Visibility};

/// Longest mute a `mute` request may ask for: ten years, in seconds.
pub const MAX_MUTE_SECONDS: i64 = 315_360_000;

/// Which slice of a history a request asks for (ids are exclusive bounds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Page {
    /// Most messages wanted (the server's default and cap apply).
    pub limit: Option<i64>,
    /// Only messages older than this id: the newest of them.
    pub before: Option<i64>,
    /// Only messages newer than this id: the oldest of them.
    pub after: Option<i64>,
}

/// A decoded client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Join a room, optionally replaying what was missed after `since`:
    /// `{"type":"join","room":"...","since":120}`.
    Join { room: String, since: Option<i64> },
    /// Leave a room: `{"type":"leave","room":"..."}`.
    Leave { room: String },
    /// Create a room (and own it): `{"type":"create_room","room":"...","visibility":"private"}`.
    CreateRoom {
        room: String,
        visibility: Visibility,
    },
    /// The caller's rooms with their newest id and unread count: `{"type":"rooms"}`.
    Rooms,
    /// Move the caller's read position forward: `{"type":"read","room":"...","up_to":120}`.
    Read { room: String, up_to: i64 },
    /// Post to a room: `{"type":"message","room":"...","content":"...","client_id":"..."}`.
    Message {
        room: String,
        content: String,
        client_id: Option<String>,
    },
    /// Direct message: `{"type":"dm","to":123,"content":"...","client_id":"..."}`.
    Dm {
        to: UserId,
        content: String,
        client_id: Option<String>,
    },
    /// A page of a room's history: `{"type":"room_history","room":"...","limit":50,"before":900}`.
    RoomHistory { room: String, page: Page },
    /// A page of the history with `with`: `{"type":"dm_history","with":123,"after":10}`.
    DmHistory { with: UserId, page: Page },
    /// Replay the caller's DMs newer than `since`: `{"type":"dm_sync","since":120}`.
    DmSync { since: i64 },
    /// Tell the room's other members the caller is typing: `{"type":"typing","room":"..."}`.
    Typing { room: String },
    /// Replace the connection's token (same user): `{"type":"refresh","token":"..."}`.
    Refresh { token: String },
    // --- issue 14: edits and deletes ---
    /// Edit one's own message: `{"type":"edit","id":120,"content":"...","client_id":"..."}`.
    Edit {
        id: i64,
        content: String,
        client_id: Option<String>,
    },
    /// Delete a message: `{"type":"delete","id":120,"client_id":"..."}`.
    Delete { id: i64, client_id: Option<String> },
    // --- issue 14: room access ---
    /// Give a member a role (owners): `{"type":"set_role","room","user","role"}`.
    SetRole {
        room: String,
        user: UserId,
        role: Role,
    },
    /// Make a user a member (owners, moderators): `{"type":"invite","room","user"}`.
    Invite { room: String, user: UserId },
    /// A page of the room's members by user id (members): `{"type":"members","room","after"?,"limit"?}`.
    Members {
        room: String,
        after: Option<UserId>,
        limit: Option<i64>,
    },
    /// Refuse a member's messages for `seconds` (none: until unmuted):
    /// `{"type":"mute","room","user","seconds"?}`.
    Mute {
        room: String,
        user: UserId,
        seconds: Option<i64>,
    },
    /// Lift a mute: `{"type":"unmute","room","user"}`.
    Unmute { room: String, user: UserId },
    /// End a membership, ordered in the room's stream:
    /// `{"type":"kick","room","user","reason"?}`.
    Kick {
        room: String,
        user: UserId,
        reason: Option<String>,
    },
    /// End a membership and refuse `join` for `seconds` (none: until
    /// `unban`): `{"type":"ban","room","user","seconds"?,"reason"?}`.
    Ban {
        room: String,
        user: UserId,
        seconds: Option<i64>,
        reason: Option<String>,
    },
    /// Lift a ban: `{"type":"unban","room","user"}`.
    Unban { room: String, user: UserId },
    // --- end issue 14: room access ---
}

/// Why a text frame could not be turned into a [`Request`]; the `Display`
/// text is what the client gets in its error frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is not JSON, or a field has the wrong JSON type.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The frame is JSON but not an object (an array, string, number,
    /// `true`/`false` or `null`).
    #[error("request must be a JSON object")]
    NotAnObject,
    /// The object has no `type` field.
    #[error("missing field `type`")]
    MissingType,
    /// The `type` is not one the server knows.
    #[error("unknown request type `{0}`")]
    UnknownType(String),
    /// A field the request type needs is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A room name that is empty, too long or holds control characters.
    #[error("invalid room name")]
    InvalidRoom,
    /// `ref` is neither a string (at most [`MAX_REF_BYTES`]) nor an integer.
    #[error("`ref` must be an integer or a string of at most 128 bytes")]
    InvalidRef,
    /// `client_id` is empty, too long or holds NUL.
    #[error("`client_id` must be 1 to 64 characters")]
    InvalidClientId,
    /// A message id field (`since`, `before`, `after`, `up_to`, `id`) is negative.
    #[error("`{0}` must be a message id (0 or more)")]
    InvalidId(&'static str),
    /// A field naming a user (`to`, `with`) is outside `1 ..= 2^53 - 1`.
    #[error("`{0}` must be a user id (1 to 9007199254740991)")]
    InvalidUserId(&'static str),
    /// `role` is not `owner`, `moderator` or `member`.
    #[error("`role` must be \"owner\", \"moderator\" or \"member\"")]
    InvalidRole,
    /// `visibility` is not `public` or `private`.
    #[error("`visibility` must be \"public\" or \"private\"")]
    InvalidVisibility,
    /// `seconds` is outside `1 ..= MAX_MUTE_SECONDS`.
    #[error("`seconds` must be 1 to 315360000")]
    InvalidSeconds,
}

/// The shape every request is read through; unknown fields are ignored so
/// that newer clients keep working against this server.
#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "ref")]
    reference: Option<serde_json::Value>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    client_id: Option<Cow<'a, str>>,
    to: Option<UserId>,
    with: Option<UserId>,
    limit: Option<i64>,
    since: Option<i64>,
    before: Option<i64>,
    after: Option<i64>,
    up_to: Option<i64>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    id: Option<i64>,
    // --- issue 14: room access ---
    user: Option<UserId>,
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    visibility: Option<Cow<'a, str>>,
    seconds: Option<i64>,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
}

/// Decodes one text frame into a request.
pub fn decode(text: &str) -> Result<Request, DecodeError> {
    decode_with_ref(text).1
}

/// Decodes one text frame into its `ref` (when it has a valid one) and its
/// request: an error caused by a frame whose `ref` could be read carries
/// it, even when another field has the wrong type.
///
/// Only a JSON object is a request: serde would also read a struct from
/// an array of its fields in order, so the first byte that is not
/// whitespace must be `{` (one byte looked at, no second parse).
pub fn decode_with_ref(text: &str) -> (Option<Ref>, Result<Request, DecodeError>) {
    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match first {
        Some(b'{') => {}
        // Not JSON at all: say so as serde would.
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
            if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() =>
        {
            return (None, Err(DecodeError::NotAnObject));
        }
        _ => {
            let e = serde_json::from_str::<serde::de::IgnoredAny>(text)
                .err()
                .map_or_else(
                    || "expected a JSON object".to_owned(),
                    |e| strip_position(&e),
                );
            return (None, Err(DecodeError::Malformed(e)));
        }
    }
    let raw: RawRequest<'_> = match serde_json::from_str(text) {
        Ok(raw) => raw,
        // Only on the error path: read the `ref` alone, leniently, so that
        // the error about another field still answers the right request.
        Err(e) => {
            let reference = ref_only(text);
            return (reference, Err(DecodeError::Malformed(strip_position(&e))));
        }
    };
    let reference = match raw.reference.as_ref().map(parse_ref).transpose() {
        Ok(r) => r,
        Err(e) => return (None, Err(e)),
    };
    (reference, request(raw))
}

/// The `ref` of a JSON object whose other fields may be of any type
/// (`None` when the text is not an object or its `ref` is not valid).
fn ref_only(text: &str) -> Option<Ref> {
    #[derive(Deserialize)]
    struct RefOnly {
        #[serde(rename = "ref")]
        reference: Option<serde_json::Value>,
    }
    let raw: RefOnly = serde_json::from_str(text).ok()?;
    raw.reference.as_ref().and_then(|r| parse_ref(r).ok())
}

fn parse_ref(v: &serde_json::Value) -> Result<Ref, DecodeError> {
    match v {
        serde_json::Value::String(s) if s.len() <= MAX_REF_BYTES => {
            Ok(Ref::Text(s.as_str().into()))
        }
        serde_json::Value::Number(n) => n.as_i64().map(Ref::Int).ok_or(DecodeError::InvalidRef),
        _ => Err(DecodeError::InvalidRef),
    }
}

fn request(raw: RawRequest<'_>) -> Result<Request, DecodeError> {
    let kind = raw.kind.ok_or(DecodeError::MissingType)?;
    let room = |r: Option<Cow<'_, str>>| -> Result<String, DecodeError> {
        let r = r.ok_or(DecodeError::MissingField("room"))?;
        if valid_room_name(&r) {
            Ok(r.into_owned())
        } else {
            Err(DecodeError::InvalidRoom)
        }
    };
    let content = |c: Option<Cow<'_, str>>| -> Result<String, DecodeError> {
        c.map(Cow::into_owned)
            .ok_or(DecodeError::MissingField("content"))
    };
    let client_id = |c: Option<Cow<'_, str>>| -> Result<Option<String>, DecodeError> {
        match c {
            None => Ok(None),
            Some(c) if valid_client_id(&c) => Ok(Some(c.into_owned())),
            Some(_) => Err(DecodeError::InvalidClientId),
        }
    };
    let id = |v: Option<i64>, name: &'static str| -> Result<Option<i64>, DecodeError> {
        match v {
            Some(v) if v < 0 => Err(DecodeError::InvalidId(name)),
            v => Ok(v),
        }
    };
    let user = |v: Option<UserId>, name: &'static str| -> Result<UserId, DecodeError> {
        match v {
            Some(v) if valid_user_id(v) => Ok(v),
            Some(_) => Err(DecodeError::InvalidUserId(name)),
            None => Err(DecodeError::MissingField(name)),
        }
    };
    let page = |limit, before, after| -> Result<Page, DecodeError> {
        Ok(Page {
            limit,
            before: id(before, "before")?,
            after: id(after, "after")?,
        })
    };
    match kind.as_ref() {
        "join" => Ok(Request::Join {
            room: room(raw.room)?,
            since: id(raw.since, "since")?,
        }),
        "leave" => Ok(Request::Leave {
            room: room(raw.room)?,
        }),
        "create_room" => Ok(Request::CreateRoom {
            room: room(raw.room)?,
            visibility: match raw.visibility.as_deref() {
                None => Visibility::Public,
                Some(v) => Visibility::parse(v).ok_or(DecodeError::InvalidVisibility)?,
            },
        }),
        "rooms" => Ok(Request::Rooms),
        "read" => Ok(Request::Read {
            room: room(raw.room)?,
            up_to: id(raw.up_to, "up_to")?.ok_or(DecodeError::MissingField("up_to"))?,
        }),
        "message" => Ok(Request::Message {
            room: room(raw.room)?,
            content: content(raw.content)?,
            client_id: client_id(raw.client_id)?,
        }),
        "dm" => Ok(Request::Dm {
            to: user(raw.to, "to")?,
            content: content(raw.content)?,
            client_id: client_id(raw.client_id)?,
        }),
        "room_history" => Ok(Request::RoomHistory {
            room: room(raw.room)?,
            page: page(raw.limit, raw.before, raw.after)?,
        }),
        "dm_history" => Ok(Request::DmHistory {
            with: user(raw.with, "with")?,
            page: page(raw.limit, raw.before, raw.after)?,
        }),
        "dm_sync" => Ok(Request::DmSync {
            since: id(raw.since, "since")?.ok_or(DecodeError::MissingField("since"))?,
        }),
        "typing" => Ok(Request::Typing {
            room: room(raw.room)?,
        }),
        "refresh" => Ok(Request::Refresh {
            token: raw
                .token
                .map(Cow::into_owned)
                .ok_or(DecodeError::MissingField("token"))?,
        }),
        // --- issue 14: edits and deletes ---
        "edit" => Ok(Request::Edit {
            id: id(raw.id, "id")?.ok_or(DecodeError::MissingField("id"))?,
            content: content(raw.content)?,
            client_id: client_id(raw.client_id)?,
        }),
        "delete" => Ok(Request::Delete {
            id: id(raw.id, "id")?.ok_or(DecodeError::MissingField("id"))?,
            client_id: client_id(raw.client_id)?,
        }),
        // --- issue 14: room access ---
        "set_role" => Ok(Request::SetRole {
            room: room(raw.room)?,
            user: user(raw.user, "user")?,
            role: raw
                .role
                .as_deref()
                .map(|r| Role::parse(r).ok_or(DecodeError::InvalidRole))
                .ok_or(DecodeError::MissingField("role"))??,
        }),
        "invite" => Ok(Request::Invite {
            room: room(raw.room)?,
            user: user(raw.user, "user")?,
        }),
        "members" => Ok(Request::Members {
            room: room(raw.room)?,
            after: id(raw.after, "after")?,
            limit: raw.limit,
        }),
        "mute" => Ok(Request::Mute {
            room: room(raw.room)?,
            user: user(raw.user, "user")?,
            seconds: match raw.seconds {
                Some(s) if !(1..=MAX_MUTE_SECONDS).contains(&s) => {
                    return Err(DecodeError::InvalidSeconds)
                }
                s => s,
            },
        }),
        "unmute" => Ok(Request::Unmute {
            room: room(raw.room)?,
            user: user(raw.user, "user")?,
        }),
        "kick" => Ok(Request::Kick {
            room: room(raw.room)?,
            user: user(raw.user, "user")?,
            reason: raw.reason.map(Cow::into_owned),
        }),
        "ban" => Ok(Request::Ban {
            room: room(raw.room)?,
            user: user(raw.user, "user")?,
            seconds: match raw.seconds {
                Some(s) if !(1..=MAX_MUTE_SECONDS).contains(&s) => {
                    return Err(DecodeError::InvalidSeconds)
                }
                s => s,
            },
            reason: raw.reason.map(Cow::into_owned),
        }),
        "unban" => Ok(Request::Unban {
            room: room(raw.room)?,
            user: user(raw.user, "user")?,
        }),
        other => Err(DecodeError::UnknownType(truncate(other, 64).to_owned())),
    }
}

/// serde_json appends " at line 1 column 7"; the client gains nothing from it.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
