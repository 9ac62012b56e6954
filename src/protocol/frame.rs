//! Server → client: every frame the server sends, encoded once into a
//! shared [`Frame`] as `{"type":..,"ref":..,"data":..}` (`ref` only on
//! direct replies to a request that carried one).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use super::{Frame, Kind, Ref, RoomSummary, StoredMessage, Target, UserId};

/// Serializes a time as every frame shows it: RFC 3339, UTC, microseconds
/// (`2025-01-01T12:00:00.000000Z`). Also the event feed's format.
pub fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// [`rfc3339`] for an optional time (`None`: `null`).
pub fn rfc3339_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a Ref>,
    data: T,
}

fn rfc3339_opt_ref<S: Serializer>(t: &Option<&DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomMessageData<'a> {
    id: i64,
    from_user: UserId,
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(serialize_with = "rfc3339")]
    timestamp: &'a DateTime<Utc>,
    room: &'a str,
    #[serde(
        rename = "edited_at",
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt_ref"
    )]
    edited_at: Option<&'a DateTime<Utc>>,
    #[serde(skip_serializing_if = "is_false")]
    deleted: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DmData<'a> {
    id: i64,
    from_user: UserId,
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(serialize_with = "rfc3339")]
    timestamp: &'a DateTime<Utc>,
    to: UserId,
    #[serde(
        rename = "edited_at",
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt_ref"
    )]
    edited_at: Option<&'a DateTime<Utc>>,
    #[serde(skip_serializing_if = "is_false")]
    deleted: bool,
}

/// `message_edited`'s data; `content` is absent (and `deleted` true) once
/// the edited message was deleted.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EditedData<'a> {
    id: i64,
    target: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<UserId>,
    from_user: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(serialize_with = "rfc3339")]
    timestamp: &'a DateTime<Utc>,
    #[serde(skip_serializing_if = "is_false")]
    deleted: bool,
}

/// `message_deleted`'s data.
#[derive(Serialize)]
struct DeletedData<'a> {
    id: i64,
    target: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<UserId>,
    /// `null`: the operator (the server API).
    by: Option<UserId>,
    #[serde(serialize_with = "rfc3339")]
    timestamp: &'a DateTime<Utc>,
}

/// One row of a stream as serialized data: a message (room or DM shaped
/// after its target; a deleted one as a tombstone without content), or an
/// edit or delete event.
struct MessageData<'a>(&'a StoredMessage);

impl Serialize for MessageData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let (room, to) = match &m.target {
            Target::Room(room) => (Some(&**room), None),
            Target::User(to) => (None, Some(*to)),
        };
        let content = (!m.deleted).then_some(m.content.as_str());
        match m.kind {
            Kind::Message => {
                // A tombstone says nothing of the message but that it was.
                let edited_at = if m.deleted {
                    None
                } else {
                    m.edited_at.as_ref()
                };
                match &m.target {
                    Target::Room(room) => RoomMessageData {
                        id: m.id,
                        from_user: m.from_user,
                        username: &m.username,
                        content,
                        timestamp: &m.timestamp,
                        room,
                        edited_at,
                        deleted: m.deleted,
                    }
                    .serialize(s),
                    Target::User(to) => DmData {
                        id: m.id,
                        from_user: m.from_user,
                        username: &m.username,
                        content,
                        timestamp: &m.timestamp,
                        to: *to,
                        edited_at,
                        deleted: m.deleted,
                    }
                    .serialize(s),
                }
            }
            Kind::Edit { target } => EditedData {
                id: m.id,
                target,
                room,
                to,
                from_user: m.from_user,
                content,
                timestamp: &m.timestamp,
                deleted: m.deleted,
            }
            .serialize(s),
            Kind::Delete { target } => DeletedData {
                id: m.id,
                target,
                room,
                to,
                by: actor(m.from_user),
                timestamp: &m.timestamp,
            }
            .serialize(s),
            // Issue 14: a kick or ban is the `member` event of its row; a
            // ban's end travels in `edited_at` (see `StoredMessage`).
            Kind::Member { user, ban, .. } => super::member::MemberEvent {
                room: room.unwrap_or_default(),
                user,
                action: if ban { "banned" } else { "kicked" },
                by: actor(m.from_user),
                role: None,
                until: m.edited_at,
                reason: (!m.content.is_empty()).then_some(m.content.as_str()),
            }
            .serialize(s),
        }
    }
}

/// The actor of a delete, kick or ban row: `None` (`null`) for the
/// operator ([`OPERATOR`](super::OPERATOR), the server API).
fn actor(from_user: UserId) -> Option<UserId> {
    (from_user != super::OPERATOR).then_some(from_user)
}

/// Issue 15: the `data` of `m`'s frame alone (what `message` carries in
/// an event of the feed), serialized once.
pub fn encode_message_data(m: &StoredMessage) -> String {
    serde_json::to_string(&MessageData(m)).expect("message data serialization")
}

pub(super) fn to_frame<T: Serialize>(kind: &str, reference: Option<&Ref>, data: T) -> Frame {
    // Serializing plain structs of strings and integers cannot fail.
    let text = serde_json::to_string(&Envelope {
        kind,
        reference,
        data,
    })
    .expect("frame serialization");
    Frame::from(text)
}

/// Encodes a live `message` (room) or `dm` frame, shared by every recipient
/// (or, for an event row, its `message_edited` / `message_deleted` frame).
pub fn encode_message(m: &StoredMessage) -> Frame {
    encode_message_for(m, None)
}

/// Encodes a `message` or `dm` frame carrying the sender's `ref` (its own copy).
pub fn encode_message_for(m: &StoredMessage, reference: Option<&Ref>) -> Frame {
    let kind = match (m.kind, &m.target) {
        (Kind::Message, Target::Room(_)) => "message",
        (Kind::Message, Target::User(_)) => "dm",
        (Kind::Edit { .. }, _) => "message_edited",
        (Kind::Delete { .. }, _) => "message_deleted",
        (Kind::Member { .. }, _) => "member",
    };
    to_frame(kind, reference, MessageData(m))
}

/// Encodes a `room_history` or `dm_history` reply (oldest first).
pub fn encode_history(
    kind: HistoryKind,
    messages: &[StoredMessage],
    reference: Option<&Ref>,
) -> Frame {
    let data: Vec<MessageData<'_>> = messages.iter().map(MessageData).collect();
    to_frame(kind.as_str(), reference, data)
}

/// The start of a history reply, up to its first entry:
/// `{"type":"room_history","ref":..,"data":[`. A reply written in pieces
/// is this, the entries separated by commas ([`push_history_entry`]), then
/// [`HISTORY_TAIL`]: exactly what [`encode_history`] gives.
pub fn history_head(kind: HistoryKind, reference: Option<&Ref>) -> Vec<u8> {
    let empty: [MessageData<'_>; 0] = [];
    let mut whole = to_frame(kind.as_str(), reference, empty)
        .as_bytes()
        .to_vec();
    whole.truncate(whole.len() - HISTORY_TAIL.len());
    whole
}

/// The end of a history reply, after its last entry.
pub const HISTORY_TAIL: &str = "]}";

/// Appends one history entry (a message's data) to `out`.
pub fn push_history_entry(out: &mut Vec<u8>, m: &StoredMessage) {
    // Serializing strings and integers into a Vec cannot fail.
    serde_json::to_writer(out, &MessageData(m)).expect("entry serialization");
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

/// What a `join_ack` says besides the room.
#[derive(Debug, Clone, Copy, Default)]
pub struct JoinAck<'a> {
    /// With `since`: whether the missed messages follow (`None`: no `since`).
    pub recovered: Option<bool>,
    /// Ids of the room's members with an open connection (`None`: not reported).
    pub online: Option<&'a [UserId]>,
}

/// Encodes `{"type":"join_ack","data":{"room":..,"status":"ok",..}}`.
pub fn encode_join_ack(room: &str, ack: JoinAck<'_>, reference: Option<&Ref>) -> Frame {
    #[derive(Serialize)]
    struct Data<'a> {
        room: &'a str,
        status: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        online: Option<&'a [UserId]>,
    }
    let data = Data {
        room,
        status: "ok",
        recovered: ack.recovered,
        online: ack.online,
    };
    to_frame("join_ack", reference, data)
}

#[derive(Serialize)]
struct RoomData<'a> {
    room: &'a str,
}

/// Encodes `{"type":"leave_ack","data":{"room":..}}`.
pub fn encode_leave_ack(room: &str, reference: Option<&Ref>) -> Frame {
    to_frame("leave_ack", reference, RoomData { room })
}

/// Encodes `{"type":"room_created","data":{"room":..,"visibility":..}}`.
pub fn encode_room_created(room: &str, visibility: &str, reference: Option<&Ref>) -> Frame {
    #[derive(Serialize)]
    struct Data<'a> {
        room: &'a str,
        visibility: &'a str,
    }
    to_frame("room_created", reference, Data { room, visibility })
}

/// Encodes `{"type":"rooms","data":[{"room","last_id","unread"}..]}`.
pub fn encode_rooms(rooms: &[RoomSummary], reference: Option<&Ref>) -> Frame {
    to_frame("rooms", reference, rooms)
}

/// Encodes `{"type":"read_ack","data":{"room":..,"up_to":..}}`.
pub fn encode_read_ack(room: &str, up_to: i64, reference: Option<&Ref>) -> Frame {
    #[derive(Serialize)]
    struct Data<'a> {
        room: &'a str,
        up_to: i64,
    }
    to_frame("read_ack", reference, Data { room, up_to })
}

/// Encodes `{"type":"dm_sync_ack","data":{"recovered":..}}`.
pub fn encode_dm_sync_ack(recovered: bool, reference: Option<&Ref>) -> Frame {
    #[derive(Serialize)]
    struct Data {
        recovered: bool,
    }
    to_frame("dm_sync_ack", reference, Data { recovered })
}

/// Encodes `{"type":"presence","data":{"room","user","username","status"}}`.
pub fn encode_presence(room: &str, user: UserId, username: &str, online: bool) -> Frame {
    #[derive(Serialize)]
    struct Data<'a> {
        room: &'a str,
        user: UserId,
        username: &'a str,
        status: &'a str,
    }
    let status = if online { "online" } else { "offline" };
    to_frame(
        "presence",
        None,
        Data {
            room,
            user,
            username,
            status,
        },
    )
}

/// One user in a `presence_batch` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceEntry {
    /// The user's id.
    pub user: UserId,
    /// The username it connected with.
    pub username: String,
}

/// Encodes `{"type":"presence_batch","data":{"room","online","offline"}}`:
/// the presence changes of one room held during a batching window.
pub fn encode_presence_batch(
    room: &str,
    online: &[PresenceEntry],
    offline: &[PresenceEntry],
) -> Frame {
    #[derive(Serialize)]
    struct Data<'a> {
        room: &'a str,
        online: &'a [PresenceEntry],
        offline: &'a [PresenceEntry],
    }
    to_frame(
        "presence_batch",
        None,
        Data {
            room,
            online,
            offline,
        },
    )
}

/// Encodes `{"type":"typing","data":{"room","fromUser","username"}}`.
pub fn encode_typing(room: &str, from_user: UserId, username: &str) -> Frame {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Data<'a> {
        room: &'a str,
        from_user: UserId,
        username: &'a str,
    }
    to_frame(
        "typing",
        None,
        Data {
            room,
            from_user,
            username,
        },
    )
}

/// Encodes `{"type":"refresh_ack","data":{"exp":..}}` (the new expiry, Unix seconds).
pub fn encode_refresh_ack(exp: i64, reference: Option<&Ref>) -> Frame {
    #[derive(Serialize)]
    struct Data {
        exp: i64,
    }
    to_frame("refresh_ack", reference, Data { exp })
}

/// Encodes `{"type":"error","data":{"message":..}}`.
pub fn encode_error(message: &str) -> Frame {
    encode_error_for(message, None)
}

/// Encodes an error frame answering the request that carried `reference`.
pub fn encode_error_for(message: &str, reference: Option<&Ref>) -> Frame {
    #[derive(Serialize)]
    struct ErrorData<'a> {
        message: &'a str,
    }
    to_frame("error", reference, ErrorData { message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample(target: Target) -> StoredMessage {
        StoredMessage {
            id: 42,
            from_user: 7,
            username: "al\"ice".into(),
            content: "héllo\n<b>".into(),
            timestamp: Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap(),
            target,
            kind: Kind::Message,
            edited_at: None,
            deleted: false,
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
            encode_join_ack("r", JoinAck::default(), None).as_str(),
            r#"{"type":"join_ack","data":{"room":"r","status":"ok"}}"#
        );
        let ack = JoinAck {
            recovered: Some(true),
            online: Some(&[3, 4]),
        };
        assert_eq!(
            encode_join_ack("r", ack, Some(&Ref::Text("j".into()))).as_str(),
            r#"{"type":"join_ack","ref":"j","data":{"room":"r","status":"ok","recovered":true,"online":[3,4]}}"#
        );
        assert_eq!(
            encode_error_for("bad", Some(&Ref::Int(5))).as_str(),
            r#"{"type":"error","ref":5,"data":{"message":"bad"}}"#
        );
        let rooms = [RoomSummary {
            room: "g".into(),
            last_id: None,
            unread: 0,
        }];
        assert_eq!(
            encode_rooms(&rooms, None).as_str(),
            r#"{"type":"rooms","data":[{"room":"g","last_id":null,"unread":0}]}"#
        );
        assert_eq!(
            encode_read_ack("g", 9, None).as_str(),
            r#"{"type":"read_ack","data":{"room":"g","up_to":9}}"#
        );
        assert_eq!(
            encode_dm_sync_ack(false, None).as_str(),
            r#"{"type":"dm_sync_ack","data":{"recovered":false}}"#
        );
        assert_eq!(
            encode_presence("r", 3, "bo", false).as_str(),
            r#"{"type":"presence","data":{"room":"r","user":3,"username":"bo","status":"offline"}}"#
        );
        assert_eq!(
            encode_typing("r", 3, "bo").as_str(),
            r#"{"type":"typing","data":{"room":"r","fromUser":3,"username":"bo"}}"#
        );
        assert_eq!(
            encode_refresh_ack(99, Some(&Ref::Int(2))).as_str(),
            r#"{"type":"refresh_ack","ref":2,"data":{"exp":99}}"#
        );
        let own = encode_message_for(&sample(Target::User(9)), Some(&Ref::Int(1)));
        assert!(
            own.as_str()
                .starts_with(r#"{"type":"dm","ref":1,"data":{"id":42"#),
            "{own}"
        );
        assert_eq!(
            encode_error("nope").as_str(),
            r#"{"type":"error","data":{"message":"nope"}}"#
        );
        let h = encode_history(HistoryKind::Dm, &[sample(Target::User(9))], None);
        let v: serde_json::Value = serde_json::from_str(h.as_str()).unwrap();
        assert_eq!(v["type"], "dm_history");
        assert_eq!(v["data"][0]["id"], 42);
        assert_eq!(
            encode_history(HistoryKind::Room, &[], None).as_str(),
            r#"{"type":"room_history","data":[]}"#
        );
    }

    #[test]
    fn encodes_edits_deletes_and_tombstones() {
        let at = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 5).unwrap();
        let edit = StoredMessage {
            id: 50,
            kind: Kind::Edit { target: 42 },
            content: "fixed".into(),
            ..sample(Target::Room("general".into()))
        };
        assert_eq!(
            encode_message_for(&edit, Some(&Ref::Int(4))).as_str(),
            r#"{"type":"message_edited","ref":4,"data":{"id":50,"target":42,"room":"general","fromUser":7,"content":"fixed","timestamp":"2025-01-01T12:00:00.000000Z"}}"#
        );
        let delete = StoredMessage {
            id: 51,
            kind: Kind::Delete { target: 42 },
            content: String::new(),
            ..sample(Target::User(9))
        };
        assert_eq!(
            encode_message(&delete).as_str(),
            r#"{"type":"message_deleted","data":{"id":51,"target":42,"to":9,"by":7,"timestamp":"2025-01-01T12:00:00.000000Z"}}"#
        );
        let ban = StoredMessage {
            id: 52,
            kind: Kind::Member {
                user: 3,
                ban: true,
                seconds: None,
            },
            content: "spam".into(),
            edited_at: Some(at),
            ..sample(Target::Room("general".into()))
        };
        assert_eq!(
            encode_message(&ban).as_str(),
            r#"{"type":"member","data":{"room":"general","user":3,"action":"banned","by":7,"until":"2025-01-01T12:00:05.000000Z","reason":"spam"}}"#
        );
        let kick = StoredMessage {
            kind: Kind::Member {
                user: 3,
                ban: false,
                seconds: None,
            },
            content: String::new(),
            edited_at: None,
            ..ban.clone()
        };
        assert_eq!(
            encode_message(&kick).as_str(),
            r#"{"type":"member","data":{"room":"general","user":3,"action":"kicked","by":7}}"#
        );
        let edited = StoredMessage {
            edited_at: Some(at),
            ..sample(Target::Room("g".into()))
        };
        let v: serde_json::Value = serde_json::from_str(encode_message(&edited).as_str()).unwrap();
        assert_eq!(v["data"]["edited_at"], "2025-01-01T12:00:05.000000Z");
        assert!(v["data"].get("deleted").is_none());
        let tombstone = StoredMessage {
            deleted: true,
            edited_at: Some(at),
            content: String::new(),
            ..sample(Target::Room("g".into()))
        };
        assert_eq!(
            encode_message(&tombstone).as_str(),
            r#"{"type":"message","data":{"id":42,"fromUser":7,"username":"al\"ice","timestamp":"2025-01-01T12:00:00.000000Z","room":"g","deleted":true}}"#
        );
    }

    #[test]
    fn a_history_written_in_pieces_is_the_history_encoded_whole() {
        let messages = [sample(Target::Room("g".into())), sample(Target::User(9))];
        let reference = Ref::Text("h\u{1}".into());
        let mut pieces = history_head(HistoryKind::Room, Some(&reference));
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                pieces.push(b',');
            }
            push_history_entry(&mut pieces, m);
        }
        pieces.extend_from_slice(HISTORY_TAIL.as_bytes());
        let whole = encode_history(HistoryKind::Room, &messages, Some(&reference));
        assert_eq!(pieces, whole.as_bytes());
    }
}

#[cfg(test)]
mod properties {
    //! Property tests over the encoder: every message encodes to valid JSON
    //! that carries its content and id unchanged.
    use super::*;
    use crate::protocol::valid_room_name;
    use proptest::prelude::*;

    fn room() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 _\\-éü€🌍]{1,16}".prop_filter("fits", |r| valid_room_name(r))
    }

    proptest! {

        #[test]
        fn encoded_frames_are_valid_json(id in any::<i64>(), from in any::<i64>(), content in any::<String>(), name in room()) {
            let m = StoredMessage {
                id,
                from_user: from,
                username: name.as_str().into(),
                content: content.clone(),
                timestamp: Utc::now(),
                target: Target::Room(name.as_str().into()),
                kind: Kind::Message,
                edited_at: None,
                deleted: false,
            };
            let v: serde_json::Value = serde_json::from_str(encode_message(&m).as_str()).unwrap();
            prop_assert_eq!(v["data"]["content"].as_str(), Some(content.as_str()));
            prop_assert_eq!(v["data"]["id"].as_i64(), Some(id));
        }
    }
}
