//! The wire protocol: the only module that knows JSON.
//!
//! Incoming text frames are decoded into [`Request`]s with a clear
//! [`DecodeError`] for every way a frame can be wrong; outgoing frames are
//! encoded here once into a [`Frame`] that every recipient shares.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A user id, as carried in tokens, frames and the `users` table.
pub type UserId = i64;

/// An encoded outgoing text frame. Cloning it only bumps a reference count,
/// so one encoding is shared by every recipient on every shard.
pub type Frame = Utf8Bytes;

/// Longest accepted room name, in bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 64;

/// A decoded client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Join a room: `{"type":"join","room":"..."}`.
    Join { room: String },
    /// Post to a room: `{"type":"message","room":"...","content":"..."}`.
    Message { room: String, content: String },
    /// Direct message: `{"type":"dm","to":123,"content":"..."}`.
    Dm { to: UserId, content: String },
    /// Latest messages of a room: `{"type":"room_history","room":"...","limit":50}`.
    RoomHistory { room: String, limit: Option<i64> },
    /// Latest messages between the caller and `with`: `{"type":"dm_history","with":123,"limit":50}`.
    DmHistory { with: UserId, limit: Option<i64> },
}

/// Why a text frame could not be turned into a [`Request`]; the `Display`
/// text is what the client gets in its error frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is not a JSON object, or a field has the wrong JSON type.
    #[error("malformed request: {0}")]
    Malformed(String),
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
}

/// The shape every request is read through; unknown fields are ignored so
/// that newer clients keep working against this server.
#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    to: Option<UserId>,
    with: Option<UserId>,
    limit: Option<i64>,
}

/// Decodes one text frame into a request.
pub fn decode(text: &str) -> Result<Request, DecodeError> {
    let raw: RawRequest<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError::Malformed(strip_position(&e)))?;
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
    match kind.as_ref() {
        "join" => Ok(Request::Join {
            room: room(raw.room)?,
        }),
        "message" => Ok(Request::Message {
            room: room(raw.room)?,
            content: content(raw.content)?,
        }),
        "dm" => Ok(Request::Dm {
            to: raw.to.ok_or(DecodeError::MissingField("to"))?,
            content: content(raw.content)?,
        }),
        "room_history" => Ok(Request::RoomHistory {
            room: room(raw.room)?,
            limit: raw.limit,
        }),
        "dm_history" => Ok(Request::DmHistory {
            with: raw.with.ok_or(DecodeError::MissingField("with"))?,
            limit: raw.limit,
        }),
        other => Err(DecodeError::UnknownType(truncate(other, 64).to_owned())),
    }
}

/// True for a room name the server accepts: 1 to [`MAX_ROOM_NAME_BYTES`]
/// bytes, no control characters.
pub fn valid_room_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_ROOM_NAME_BYTES && !name.chars().any(char::is_control)
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

/// Where a stored message was addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A room message, by room name.
    Room(std::sync::Arc<str>),
    /// A direct message to this user.
    User(UserId),
}

/// A message as stored and as delivered: the payload of `message` and `dm`
/// frames and of history entries.
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
}

fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomMessageData<'a> {
    id: i64,
    from_user: UserId,
    username: &'a str,
    content: &'a str,
    #[serde(serialize_with = "rfc3339")]
    timestamp: &'a DateTime<Utc>,
    room: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DmData<'a> {
    id: i64,
    from_user: UserId,
    username: &'a str,
    content: &'a str,
    #[serde(serialize_with = "rfc3339")]
    timestamp: &'a DateTime<Utc>,
    to: UserId,
}

/// One message as serialized data, room or DM shaped after its target.
struct MessageData<'a>(&'a StoredMessage);

impl Serialize for MessageData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        match &m.target {
            Target::Room(room) => RoomMessageData {
                id: m.id,
                from_user: m.from_user,
                username: &m.username,
                content: &m.content,
                timestamp: &m.timestamp,
                room,
            }
            .serialize(s),
            Target::User(to) => DmData {
                id: m.id,
                from_user: m.from_user,
                username: &m.username,
                content: &m.content,
                timestamp: &m.timestamp,
                to: *to,
            }
            .serialize(s),
        }
    }
}

fn to_frame<T: Serialize>(kind: &str, data: T) -> Frame {
    // Serializing plain structs of strings and integers cannot fail.
    let text = serde_json::to_string(&Envelope { kind, data }).expect("frame serialization");
    Frame::from(text)
}

/// Encodes a live `message` (room) or `dm` frame.
pub fn encode_message(m: &StoredMessage) -> Frame {
    let kind = match m.target {
        Target::Room(_) => "message",
        Target::User(_) => "dm",
    };
    to_frame(kind, MessageData(m))
}

/// Encodes a `room_history` or `dm_history` reply (oldest first).
pub fn encode_history(kind: HistoryKind, messages: &[StoredMessage]) -> Frame {
    let data: Vec<MessageData<'_>> = messages.iter().map(MessageData).collect();
    to_frame(kind.as_str(), data)
}

/// Which history a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKind {
    /// Reply to `room_history`.
    Room,
    /// Reply to `dm_history`.
    Dm,
}

impl HistoryKind {
    fn as_str(self) -> &'static str {
        match self {
            HistoryKind::Room => "room_history",
            HistoryKind::Dm => "dm_history",
        }
    }
}

/// Encodes `{"type":"join_ack","data":{"room":..,"status":"ok"}}`.
pub fn encode_join_ack(room: &str) -> Frame {
    #[derive(Serialize)]
    struct JoinAck<'a> {
        room: &'a str,
        status: &'a str,
    }
    to_frame("join_ack", JoinAck { room, status: "ok" })
}

/// Encodes `{"type":"error","data":{"message":..}}`.
pub fn encode_error(message: &str) -> Frame {
    #[derive(Serialize)]
    struct ErrorData<'a> {
        message: &'a str,
    }
    to_frame("error", ErrorData { message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn decodes_each_request_type() {
        assert_eq!(
            decode(r#"{"type":"join","room":"general"}"#),
            Ok(Request::Join {
                room: "general".into()
            })
        );
        assert_eq!(
            decode(r#"{"type":"message","room":"r","content":"hi \"you\""}"#),
            Ok(Request::Message {
                room: "r".into(),
                content: "hi \"you\"".into()
            })
        );
        assert_eq!(
            decode(r#"{"type":"dm","to":7,"content":"x","extra":true}"#),
            Ok(Request::Dm {
                to: 7,
                content: "x".into()
            })
        );
        assert_eq!(
            decode(r#"{"type":"room_history","room":"r"}"#),
            Ok(Request::RoomHistory {
                room: "r".into(),
                limit: None
            })
        );
        assert_eq!(
            decode(r#"{"type":"dm_history","with":3,"limit":10}"#),
            Ok(Request::DmHistory {
                with: 3,
                limit: Some(10)
            })
        );
    }

    #[test]
    fn rejects_bad_frames_with_clear_errors() {
        assert!(matches!(decode("not json"), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode("[1,2]"), Err(DecodeError::Malformed(_))));
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

    fn sample(target: Target) -> StoredMessage {
        StoredMessage {
            id: 42,
            from_user: 7,
            username: "al\"ice".into(),
            content: "héllo\n<b>".into(),
            timestamp: Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap(),
            target,
        }
    }

    #[test]
    fn encodes_room_and_dm_frames_in_document_shape() {
        let room = encode_message(&sample(Target::Room("general".into())));
        assert_eq!(
            room.as_str(),
            r#"{"type":"message","data":{"id":42,"fromUser":7,"username":"al\"ice","content":"héllo\n<b>","timestamp":"2025-01-01T12:00:00.000000Z","room":"general"}}"#
        );
        let dm = encode_message(&sample(Target::User(9)));
        let v: serde_json::Value = serde_json::from_str(dm.as_str()).unwrap();
        assert_eq!(v["type"], "dm");
        assert_eq!(v["data"]["to"], 9);
        assert_eq!(v["data"]["fromUser"], 7);
        assert!(v["data"].get("room").is_none());
    }

    #[test]
    fn encodes_acks_errors_and_history() {
        assert_eq!(
            encode_join_ack("r").as_str(),
            r#"{"type":"join_ack","data":{"room":"r","status":"ok"}}"#
        );
        assert_eq!(
            encode_error("nope").as_str(),
            r#"{"type":"error","data":{"message":"nope"}}"#
        );
        let h = encode_history(HistoryKind::Dm, &[sample(Target::User(9))]);
        let v: serde_json::Value = serde_json::from_str(h.as_str()).unwrap();
        assert_eq!(v["type"], "dm_history");
        assert_eq!(v["data"][0]["id"], 42);
        assert_eq!(
            encode_history(HistoryKind::Room, &[]).as_str(),
            r#"{"type":"room_history","data":[]}"#
        );
    }
}

#[cfg(test)]
mod properties {
    //! Property tests over the decoder: arbitrary input never panics, and
    //! every valid request survives a round trip. `PROPTEST_CASES=100000`
    //! runs a longer campaign by hand.
    use super::*;
    use proptest::prelude::*;

    fn room() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 _\\-éü€🌍]{1,16}".prop_filter("fits", |r| valid_room_name(r))
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            room().prop_map(|room| Request::Join { room }),
            (room(), any::<String>())
                .prop_map(|(room, content)| Request::Message { room, content }),
            (any::<i64>(), any::<String>()).prop_map(|(to, content)| Request::Dm { to, content }),
            (room(), proptest::option::of(any::<i64>()))
                .prop_map(|(room, limit)| Request::RoomHistory { room, limit }),
            (any::<i64>(), proptest::option::of(any::<i64>()))
                .prop_map(|(with, limit)| Request::DmHistory { with, limit }),
        ]
    }

    fn to_json(r: &Request) -> serde_json::Value {
        use serde_json::json;
        match r {
            Request::Join { room } => json!({"type": "join", "room": room}),
            Request::Message { room, content } => {
                json!({"type": "message", "room": room, "content": content})
            }
            Request::Dm { to, content } => json!({"type": "dm", "to": to, "content": content}),
            Request::RoomHistory { room, limit } => {
                json!({"type": "room_history", "room": room, "limit": limit})
            }
            Request::DmHistory { with, limit } => {
                json!({"type": "dm_history", "with": with, "limit": limit})
            }
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

        #[test]
        fn encoded_frames_are_valid_json(id in any::<i64>(), from in any::<i64>(), content in any::<String>(), name in room()) {
            let m = StoredMessage {
                id,
                from_user: from,
                username: name.as_str().into(),
                content: content.clone(),
                timestamp: Utc::now(),
                target: Target::Room(name.as_str().into()),
            };
            let v: serde_json::Value = serde_json::from_str(encode_message(&m).as_str()).unwrap();
            prop_assert_eq!(v["data"]["content"].as_str(), Some(content.as_str()));
            prop_assert_eq!(v["data"]["id"].as_i64(), Some(id));
        }
    }
}
