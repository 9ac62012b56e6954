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
mod tests {
    use super::*;

    #[test]
    fn decodes_edits_and_deletes() {
        assert_eq!(
            decode(r#"{"type":"edit","id":5,"content":"x","client_id":"e1"}"#),
            Ok(Request::Edit {
                id: 5,
                content: "x".into(),
                client_id: Some("e1".into())
            })
        );
        assert_eq!(
            decode(r#"{"type":"delete","id":5}"#),
            Ok(Request::Delete {
                id: 5,
                client_id: None
            })
        );
        assert_eq!(
            decode(r#"{"type":"delete"}"#),
            Err(DecodeError::MissingField("id"))
        );
        assert_eq!(
            decode(r#"{"type":"edit","id":-1,"content":"x"}"#),
            Err(DecodeError::InvalidId("id"))
        );
        assert_eq!(
            decode(r#"{"type":"edit","id":1}"#),
            Err(DecodeError::MissingField("content"))
        );
    }

    #[test]
    fn decodes_each_request_type() {
        assert_eq!(
            decode(r#"{"type":"join","room":"general"}"#),
            Ok(Request::Join {
                room: "general".into(),
                since: None
            })
        );
        assert_eq!(
            decode(r#"{"type":"message","room":"r","content":"hi \"you\""}"#),
            Ok(Request::Message {
                room: "r".into(),
                content: "hi \"you\"".into(),
                client_id: None
            })
        );
        assert_eq!(
            decode(r#"{"type":"dm","to":7,"content":"x","extra":true}"#),
            Ok(Request::Dm {
                to: 7,
                content: "x".into(),
                client_id: None
            })
        );
        assert_eq!(
            decode(r#"{"type":"room_history","room":"r"}"#),
            Ok(Request::RoomHistory {
                room: "r".into(),
                page: Page::default()
            })
        );
        assert_eq!(
            decode(r#"{"type":"dm_history","with":3,"limit":10}"#),
            Ok(Request::DmHistory {
                with: 3,
                page: Page {
                    limit: Some(10),
                    ..Page::default()
                }
            })
        );
    }

    #[test]
    fn decodes_the_delivery_extensions() {
        assert_eq!(
            decode(r#"{"type":"join","room":"g","since":12}"#),
            Ok(Request::Join {
                room: "g".into(),
                since: Some(12)
            })
        );
        assert_eq!(
            decode(r#"{"type":"message","room":"g","content":"x","client_id":"c-1"}"#),
            Ok(Request::Message {
                room: "g".into(),
                content: "x".into(),
                client_id: Some("c-1".into())
            })
        );
        assert_eq!(
            decode(r#"{"type":"room_history","room":"g","before":9,"after":2,"limit":5}"#),
            Ok(Request::RoomHistory {
                room: "g".into(),
                page: Page {
                    limit: Some(5),
                    before: Some(9),
                    after: Some(2)
                }
            })
        );
        assert_eq!(decode(r#"{"type":"rooms"}"#), Ok(Request::Rooms));
        assert_eq!(
            decode(r#"{"type":"leave","room":"g"}"#),
            Ok(Request::Leave { room: "g".into() })
        );
        assert_eq!(
            decode(r#"{"type":"create_room","room":"g"}"#),
            Ok(Request::CreateRoom {
                room: "g".into(),
                visibility: Visibility::Public
            })
        );
        assert_eq!(
            decode(r#"{"type":"read","room":"g","up_to":4}"#),
            Ok(Request::Read {
                room: "g".into(),
                up_to: 4
            })
        );
        assert_eq!(
            decode(r#"{"type":"dm_sync","since":0}"#),
            Ok(Request::DmSync { since: 0 })
        );
        assert_eq!(
            decode(r#"{"type":"dm_sync"}"#),
            Err(DecodeError::MissingField("since"))
        );
        assert_eq!(
            decode(r#"{"type":"join","room":"g","since":-1}"#),
            Err(DecodeError::InvalidId("since"))
        );
        assert_eq!(
            decode(r#"{"type":"read","room":"g"}"#),
            Err(DecodeError::MissingField("up_to"))
        );
        let long = format!(
            r#"{{"type":"dm","to":1,"content":"x","client_id":"{}"}}"#,
            "é".repeat(65)
        );
        assert_eq!(decode(&long), Err(DecodeError::InvalidClientId));
        let ok = format!(
            r#"{{"type":"dm","to":1,"content":"x","client_id":"{}"}}"#,
            "é".repeat(64)
        );
        assert!(decode(&ok).is_ok(), "64 characters (128 bytes) fit");
        assert_eq!(
            decode(r#"{"type":"dm","to":1,"content":"x","client_id":""}"#),
            Err(DecodeError::InvalidClientId)
        );
    }

    #[test]
    fn decodes_the_room_access_requests() {
        assert_eq!(
            decode(r#"{"type":"create_room","room":"g","visibility":"private"}"#),
            Ok(Request::CreateRoom {
                room: "g".into(),
                visibility: Visibility::Private
            })
        );
        assert_eq!(
            decode(r#"{"type":"create_room","room":"g","visibility":"hidden"}"#),
            Err(DecodeError::InvalidVisibility)
        );
        assert_eq!(
            decode(r#"{"type":"set_role","room":"g","user":7,"role":"moderator"}"#),
            Ok(Request::SetRole {
                room: "g".into(),
                user: 7,
                role: Role::Moderator
            })
        );
        assert_eq!(
            decode(r#"{"type":"set_role","room":"g","user":7,"role":"admin"}"#),
            Err(DecodeError::InvalidRole)
        );
        assert_eq!(
            decode(r#"{"type":"set_role","room":"g","user":7}"#),
            Err(DecodeError::MissingField("role"))
        );
        assert_eq!(
            decode(r#"{"type":"invite","room":"g"}"#),
            Err(DecodeError::MissingField("user"))
        );
        assert_eq!(
            decode(r#"{"type":"invite","room":"g","user":0}"#),
            Err(DecodeError::InvalidUserId("user"))
        );
        assert_eq!(
            decode(r#"{"type":"members","room":"g","after":3,"limit":2}"#),
            Ok(Request::Members {
                room: "g".into(),
                after: Some(3),
                limit: Some(2)
            })
        );
        assert_eq!(
            decode(r#"{"type":"mute","room":"g","user":2,"seconds":60}"#),
            Ok(Request::Mute {
                room: "g".into(),
                user: 2,
                seconds: Some(60)
            })
        );
        for bad in ["0", "-5", "315360001"] {
            assert_eq!(
                decode(&format!(
                    r#"{{"type":"mute","room":"g","user":2,"seconds":{bad}}}"#
                )),
                Err(DecodeError::InvalidSeconds),
                "{bad}"
            );
        }
        assert_eq!(
            decode(r#"{"type":"unmute","room":"g","user":2}"#),
            Ok(Request::Unmute {
                room: "g".into(),
                user: 2
            })
        );
    }

    #[test]
    fn refs_are_read_before_the_request_and_kept_on_errors() {
        let (r, req) = decode_with_ref(r#"{"type":"rooms","ref":"a1"}"#);
        assert_eq!(r, Some(Ref::Text("a1".into())));
        assert_eq!(req, Ok(Request::Rooms));
        let (r, req) = decode_with_ref(r#"{"type":"nope","ref":7}"#);
        assert_eq!(r, Some(Ref::Int(7)));
        assert!(matches!(req, Err(DecodeError::UnknownType(_))));
        for bad in [r#"1.5"#, r#"true"#, r#"{"a":1}"#, r#"[1]"#] {
            let (r, req) = decode_with_ref(&format!(r#"{{"type":"rooms","ref":{bad}}}"#));
            assert_eq!((r, req), (None, Err(DecodeError::InvalidRef)), "{bad}");
        }
        let long = format!(r#"{{"type":"rooms","ref":"{}"}}"#, "x".repeat(129));
        assert_eq!(decode_with_ref(&long).1, Err(DecodeError::InvalidRef));
        let (r, _) = decode_with_ref(r#"{"type":"rooms","ref":null}"#);
        assert_eq!(r, None, "null is no ref");
    }

    #[test]
    fn a_ref_survives_an_ill_typed_field() {
        for text in [
            r#"{"type":"dm_history","with":"1","ref":"R"}"#,
            r#"{"ref":"R","type":"dm","to":[],"content":"x"}"#,
            r#"{"type":"join","room":{},"ref":"R","since":"x"}"#,
            r#"{"type":5,"ref":"R"}"#,
        ] {
            let (r, req) = decode_with_ref(text);
            assert_eq!(r, Some(Ref::Text("R".into())), "{text}");
            assert!(matches!(req, Err(DecodeError::Malformed(_))), "{text}");
        }
        let (r, _) = decode_with_ref(r#"{"type":"dm_history","with":"1","ref":9}"#);
        assert_eq!(r, Some(Ref::Int(9)));
        // An unusable ref stays unusable; broken JSON has none.
        let (r, _) = decode_with_ref(r#"{"type":"dm_history","with":"1","ref":1.5}"#);
        assert_eq!(r, None);
        let (r, _) = decode_with_ref(r#"{"type":"rooms","ref":"R""#);
        assert_eq!(r, None);
    }

    #[test]
    fn only_objects_are_requests() {
        for text in [
            r#"["message",null,"general","hi"]"#,
            " [\"rooms\"]",
            r#""rooms""#,
            "5",
            "-1",
            "null",
            "true",
            "false",
        ] {
            assert_eq!(decode(text), Err(DecodeError::NotAnObject), "{text}");
        }
        for text in ["", "   ", "nope", "{", "]"] {
            assert!(
                matches!(decode(text), Err(DecodeError::Malformed(_))),
                "{text:?}"
            );
        }
        assert_eq!(decode(" \r\n\t{\"type\":\"rooms\"}"), Ok(Request::Rooms));
    }

    #[test]
    fn user_ids_in_requests_are_in_range() {
        let max = (1i64 << 53) - 1;
        for (text, field) in [
            (r#"{"type":"dm","to":0,"content":"x"}"#.to_owned(), "to"),
            (r#"{"type":"dm","to":-1,"content":"x"}"#.to_owned(), "to"),
            (
                format!(r#"{{"type":"dm","to":{},"content":"x"}}"#, max + 1),
                "to",
            ),
            (r#"{"type":"dm_history","with":0}"#.to_owned(), "with"),
            (
                format!(r#"{{"type":"dm_history","with":{}}}"#, i64::MAX),
                "with",
            ),
        ] {
            assert_eq!(
                decode(&text),
                Err(DecodeError::InvalidUserId(field)),
                "{text}"
            );
        }
        let text = format!(r#"{{"type":"dm","to":{max},"content":"x"}}"#);
        assert!(matches!(decode(&text), Ok(Request::Dm { to, .. }) if to == max));
        assert_eq!(
            DecodeError::InvalidUserId("to").to_string(),
            "`to` must be a user id (1 to 9007199254740991)"
        );
    }

    #[test]
    fn rejects_bad_frames_with_clear_errors() {
        assert!(matches!(decode("not json"), Err(DecodeError::Malformed(_))));
        assert_eq!(decode("[1,2]"), Err(DecodeError::NotAnObject));
        assert_eq!(decode(r#"{"room":"r"}"#), Err(DecodeError::MissingType));
        assert_eq!(
            decode(r#"{"type":"shout"}"#),
            Err(DecodeError::UnknownType("shout".into()))
        );
        assert_eq!(
            decode(r#"{"type":"dm","content":"x"}"#),
            Err(DecodeError::MissingField("to"))
        );
        assert_eq!(
            decode(r#"{"type":"message","room":"r"}"#),
            Err(DecodeError::MissingField("content"))
        );
        let e = decode(r#"{"type":"dm","to":"seven","content":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        assert!(!e.to_string().contains("line"), "{e}");
        assert_eq!(
            decode(r#"{"type":"join","room":""}"#),
            Err(DecodeError::InvalidRoom)
        );
        assert_eq!(
            decode(r#"{"type":"join","room":"a\u0000b"}"#),
            Err(DecodeError::InvalidRoom)
        );
        let long = format!(r#"{{"type":"join","room":"{}"}}"#, "x".repeat(65));
        assert_eq!(decode(&long), Err(DecodeError::InvalidRoom));
    }
}

#[cfg(test)]
mod properties {
    //! Property tests over the decoder: arbitrary input never panics, and
    //! every valid request survives a round trip. `PROPTEST_CASES=100000`
    //! runs a longer campaign by hand.
    use super::*;
    use crate::protocol::MAX_USER_ID;
    use proptest::prelude::*;

    fn room() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 _\\-éü€🌍]{1,16}".prop_filter("fits", |r| valid_room_name(r))
    }

    fn request() -> impl Strategy<Value = Request> {
        let id = || proptest::option::of(0..i64::MAX);
        let client_id = || proptest::option::of("[a-zA-Z0-9é-]{1,64}");
        let page = move || {
            (proptest::option::of(any::<i64>()), id(), id()).prop_map(|(limit, before, after)| {
                Page {
                    limit,
                    before,
                    after,
                }
            })
        };
        prop_oneof![
            (room(), id()).prop_map(|(room, since)| Request::Join { room, since }),
            room().prop_map(|room| Request::Leave { room }),
            (room(), any::<bool>()).prop_map(|(room, private)| Request::CreateRoom {
                room,
                visibility: if private {
                    Visibility::Private
                } else {
                    Visibility::Public
                }
            }),
            Just(Request::Rooms),
            (room(), 0..i64::MAX).prop_map(|(room, up_to)| Request::Read { room, up_to }),
            (room(), any::<String>(), client_id()).prop_map(|(room, content, client_id)| {
                Request::Message {
                    room,
                    content,
                    client_id,
                }
            }),
            (1..=MAX_USER_ID, any::<String>(), client_id()).prop_map(|(to, content, client_id)| {
                Request::Dm {
                    to,
                    content,
                    client_id,
                }
            }),
            (room(), page()).prop_map(|(room, page)| Request::RoomHistory { room, page }),
            (1..=MAX_USER_ID, page()).prop_map(|(with, page)| Request::DmHistory { with, page }),
            (0..i64::MAX).prop_map(|since| Request::DmSync { since }),
            room().prop_map(|room| Request::Typing { room }),
            "[A-Za-z0-9._-]{0,40}".prop_map(|token| Request::Refresh { token }),
            (0..i64::MAX, any::<String>(), client_id()).prop_map(|(id, content, client_id)| {
                Request::Edit {
                    id,
                    content,
                    client_id,
                }
            }),
            (0..i64::MAX, client_id())
                .prop_map(|(id, client_id)| Request::Delete { id, client_id }),
            (room(), 1..=MAX_USER_ID, 0..3usize).prop_map(|(room, user, r)| Request::SetRole {
                room,
                user,
                role: [Role::Owner, Role::Moderator, Role::Member][r]
            }),
            (room(), 1..=MAX_USER_ID).prop_map(|(room, user)| Request::Invite { room, user }),
            (room(), id(), proptest::option::of(any::<i64>()))
                .prop_map(|(room, after, limit)| Request::Members { room, after, limit }),
            (
                room(),
                1..=MAX_USER_ID,
                proptest::option::of(1..=MAX_MUTE_SECONDS)
            )
                .prop_map(|(room, user, seconds)| Request::Mute {
                    room,
                    user,
                    seconds
                }),
            (room(), 1..=MAX_USER_ID).prop_map(|(room, user)| Request::Unmute { room, user }),
            (
                room(),
                1..=MAX_USER_ID,
                proptest::option::of("[a-z é]{0,12}")
            )
                .prop_map(|(room, user, reason)| Request::Kick { room, user, reason }),
            (
                room(),
                1..=MAX_USER_ID,
                proptest::option::of(1..=MAX_MUTE_SECONDS),
                proptest::option::of("[a-z é]{0,12}")
            )
                .prop_map(|(room, user, seconds, reason)| Request::Ban {
                    room,
                    user,
                    seconds,
                    reason
                }),
            (room(), 1..=MAX_USER_ID).prop_map(|(room, user)| Request::Unban { room, user }),
        ]
    }

    fn to_json(r: &Request) -> serde_json::Value {
        use serde_json::json;
        match r {
            Request::Join { room, since } => json!({"type": "join", "room": room, "since": since}),
            Request::Leave { room } => json!({"type": "leave", "room": room}),
            Request::CreateRoom { room, visibility } => {
                json!({"type": "create_room", "room": room, "visibility": visibility.as_str()})
            }
            Request::Rooms => json!({"type": "rooms"}),
            Request::Read { room, up_to } => json!({"type": "read", "room": room, "up_to": up_to}),
            Request::Message {
                room,
                content,
                client_id,
            } => {
                json!({"type": "message", "room": room, "content": content, "client_id": client_id})
            }
            Request::Dm {
                to,
                content,
                client_id,
            } => json!({"type": "dm", "to": to, "content": content, "client_id": client_id}),
            Request::RoomHistory { room, page } => json!({
                "type": "room_history", "room": room, "limit": page.limit,
                "before": page.before, "after": page.after
            }),
            Request::DmHistory { with, page } => json!({
                "type": "dm_history", "with": with, "limit": page.limit,
                "before": page.before, "after": page.after
            }),
            Request::DmSync { since } => json!({"type": "dm_sync", "since": since}),
            Request::Typing { room } => json!({"type": "typing", "room": room}),
            Request::Refresh { token } => json!({"type": "refresh", "token": token}),
            Request::Edit {
                id,
                content,
                client_id,
            } => json!({"type": "edit", "id": id, "content": content, "client_id": client_id}),
            Request::Delete { id, client_id } => {
                json!({"type": "delete", "id": id, "client_id": client_id})
            }
            Request::SetRole { room, user, role } => {
                json!({"type": "set_role", "room": room, "user": user, "role": role.as_str()})
            }
            Request::Invite { room, user } => json!({"type": "invite", "room": room, "user": user}),
            Request::Members { room, after, limit } => {
                json!({"type": "members", "room": room, "after": after, "limit": limit})
            }
            Request::Mute {
                room,
                user,
                seconds,
            } => json!({"type": "mute", "room": room, "user": user, "seconds": seconds}),
            Request::Unmute { room, user } => json!({"type": "unmute", "room": room, "user": user}),
            Request::Kick { room, user, reason } => {
                json!({"type": "kick", "room": room, "user": user, "reason": reason})
            }
            Request::Ban {
                room,
                user,
                seconds,
                reason,
            } => json!({
                "type": "ban", "room": room, "user": user, "seconds": seconds, "reason": reason
            }),
            Request::Unban { room, user } => json!({"type": "unban", "room": room, "user": user}),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in any::<String>()) {
            let _ = decode(&s);
        }

        #[test]
        fn json_like_text_never_panics(s in r#"\{("[a-z_]{1,8}":("[^"]{0,8}"|-?[0-9]{1,20}|null|true|\[\]|\{\}),?){0,6}\}"#) {
            let _ = decode(&s);
        }

        #[test]
        fn valid_requests_round_trip(r in request()) {
            let text = to_json(&r).to_string();
            prop_assert_eq!(decode(&text), Ok(r));
        }
    }
}
