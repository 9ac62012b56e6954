//! The event feed (issue 15): every durable change with a position `seq`
//! in one order, the commit order. What the server API's
//! `GET /v1/events` and the webhook deliverer read.
//!
//! - Writing: each transaction that changes something durable appends its
//!   events as its last statement ([`append`], or the
//!   [`feed_append!`](crate::feed_append) CTEs inside a single statement).
//!   The append takes `feed_head`'s row lock and keeps it until the
//!   transaction ends, so seqs are drawn in commit order and a reader that
//!   sees a seq sees every lower one (docs/ARCHITECTURE.md, "The event
//!   feed", has the argument).
//! - Reading: [`read`] returns the events after a seq, with their messages'
//!   current state (a delete erases the content from the feed too).

pub mod sql;
pub mod upkeep;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_postgres::types::Json;
use tokio_postgres::{GenericClient, Row, Statement};

use crate::protocol::{
    encode_message_data, rfc3339, rfc3339_opt, Kind, StoredMessage, Target, UserId,
};

/// What kind of change an event is. The numbers are the `feed.type`
/// column's (`sql/V8__feed_api.sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A room message or a DM was stored.
    MessageCreated = 1,
    /// A message was edited (the event's message is the edit).
    MessageEdited = 2,
    /// A message was deleted (the event's message is the delete).
    MessageDeleted = 3,
    /// A member was kicked from a room.
    MemberKicked = 4,
    /// A user was banned from a room (with or without an end).
    MemberBanned = 5,
    /// A room was created.
    RoomCreated = 6,
    /// A user was made a member by someone else (an invitation, the API).
    MemberAdded = 7,
    /// A user joined a room by itself.
    MemberJoined = 8,
    /// A member left a room by itself.
    MemberLeft = 9,
    /// A user's ban from a room was lifted.
    MemberUnbanned = 10,
    /// A member was muted.
    MemberMuted = 11,
    /// A member's mute was lifted.
    MemberUnmuted = 12,
    /// A member's role changed.
    MemberRole = 13,
    /// A user was blocked by an operator.
    UserBlocked = 14,
    /// A user's block was lifted.
    UserUnblocked = 15,
}

impl EventType {
    /// Every type, in code order.
    pub const ALL: [EventType; 15] = [
        EventType::MessageCreated,
        EventType::MessageEdited,
        EventType::MessageDeleted,
        EventType::MemberKicked,
        EventType::MemberBanned,
        EventType::RoomCreated,
        EventType::MemberAdded,
        EventType::MemberJoined,
        EventType::MemberLeft,
        EventType::MemberUnbanned,
        EventType::MemberMuted,
        EventType::MemberUnmuted,
        EventType::MemberRole,
        EventType::UserBlocked,
        EventType::UserUnblocked,
    ];

    /// The `feed.type` column's value.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The type of that code (`None`: not one).
    pub fn from_code(code: i16) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The name in events (`message.created`, ...).
    pub fn name(self) -> &'static str {
        match self {
            EventType::MessageCreated => "message.created",
            EventType::MessageEdited => "message.edited",
            EventType::MessageDeleted => "message.deleted",
            EventType::MemberKicked => "member.kicked",
            EventType::MemberBanned => "member.banned",
            EventType::RoomCreated => "room.created",
            EventType::MemberAdded => "member.added",
            EventType::MemberJoined => "member.joined",
            EventType::MemberLeft => "member.left",
            EventType::MemberUnbanned => "member.unbanned",
            EventType::MemberMuted => "member.muted",
            EventType::MemberUnmuted => "member.unmuted",
            EventType::MemberRole => "member.role",
            EventType::UserBlocked => "user.blocked",
            EventType::UserUnblocked => "user.unblocked",
        }
    }

    /// The event a row of `messages` of this kind is (the feed rows the
    /// writers append for their rows).
    pub fn of_kind(kind: Kind) -> EventType {
        match kind {
            Kind::Message => EventType::MessageCreated,
            Kind::Edit { .. } => EventType::MessageEdited,
            Kind::Delete { .. } => EventType::MessageDeleted,
            Kind::Member { ban: false, .. } => EventType::MemberKicked,
            Kind::Member { ban: true, .. } => EventType::MemberBanned,
        }
    }
}

/// Extra facts of an event, kept in `feed.detail` and shown as fields of
/// the event (`role`, `until`, `reason`, `visibility`, `username`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Detail {
    /// `member.role`, `member.added`: the member's role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `member.muted`, `user.blocked`: when it ends (`None`: never).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt"
    )]
    pub until: Option<DateTime<Utc>>,
    /// Why (as the operator or moderator gave it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `room.created`: the room's visibility.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
}

impl Detail {
    /// True when nothing is set (stored as SQL `NULL`).
    pub fn is_empty(&self) -> bool {
        *self == Detail::default()
    }
}

/// One event to append (what a transaction changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventType,
    /// The room it happened in, if any (shared with the request's target:
    /// no copy per message).
    pub room: Option<Arc<str>>,
    /// The user it happened to, if any.
    pub user: Option<UserId>,
    /// Who did it (`None`: the user itself, the operator, or not told).
    pub by: Option<UserId>,
    /// The row of `messages` whose frame is the event's `message`.
    pub message: Option<i64>,
    /// Extra facts.
    pub detail: Detail,
}

impl NewEvent {
    /// An event of `kind` about `user` in `room`, by `by`.
    pub fn member(kind: EventType, room: &str, user: UserId, by: Option<UserId>) -> NewEvent {
        NewEvent {
            kind,
            room: Some(Arc::from(room)),
            user: Some(user),
            by,
            message: None,
            detail: Detail::default(),
        }
    }

    /// The event of a row of `messages` committed now: `id`, of `kind`, by
    /// `from` in `target` (the row's author is the event's actor for a
    /// delete, kick or ban, its `user` for a message or edit).
    pub fn of_row(id: i64, kind: Kind, from: UserId, target: &Target) -> NewEvent {
        let room = match target {
            Target::Room(r) => Some(r.clone()),
            Target::User(_) => None,
        };
        let actor = (from != crate::protocol::OPERATOR).then_some(from);
        let (user, by) = match kind {
            Kind::Message | Kind::Edit { .. } => (Some(from), None),
            Kind::Delete { .. } => (None, actor),
            Kind::Member { user, .. } => (Some(user), actor),
        };
        NewEvent {
            kind: EventType::of_kind(kind),
            room,
            user,
            by,
            message: Some(id),
            detail: Detail::default(),
        }
    }
}

/// Appends `events`, in order, inside `tx`: run it as the transaction's
/// LAST statement (it takes the head's lock, held until the commit).
/// `append` is [`sql::APPEND`] prepared on that connection. Nothing is
/// done (and nothing locked) for no events.
pub async fn append(
    tx: &impl GenericClient,
    append: &Statement,
    events: &[NewEvent],
) -> Result<(), tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let types: Vec<i16> = events.iter().map(|e| e.kind.code()).collect();
    let rooms: Vec<Option<&str>> = events.iter().map(|e| e.room.as_deref()).collect();
    let users: Vec<Option<UserId>> = events.iter().map(|e| e.user).collect();
    let bys: Vec<Option<UserId>> = events.iter().map(|e| e.by).collect();
    let messages: Vec<Option<i64>> = events.iter().map(|e| e.message).collect();
    let details: Vec<Option<Json<&Detail>>> = events
        .iter()
        .map(|e| (!e.detail.is_empty()).then_some(Json(&e.detail)))
        .collect();
    tx.query_one(append, &[&types, &rooms, &users, &bys, &messages, &details])
        .await?;
    Ok(())
}

/// One event as the API and the webhooks show it:
/// `{"seq","type","at","room"?,"user"?,"by"?,"message"?,...}`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Its position in the feed.
    pub seq: i64,
    /// Its type's name.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it was appended (its transaction's commit, within a few µs).
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// The room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The user it happened to (a message's author).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
    /// Who did it (absent: the user itself or the operator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<UserId>,
    /// A message event's frame `data`, in its current state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Box<RawValue>>,
    /// Extra facts (`role`, `until`, `reason`, `visibility`).
    #[serde(flatten)]
    pub detail: Detail,
}

/// The feed's ends: the last seq committed (0: none) and the last seq
/// deleted by retention (asking for anything below it is [`ReadError::Gone`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Last seq drawn by a committed transaction.
    pub seq: i64,
    /// Every seq at or below this was deleted by retention.
    pub purged_through: i64,
}

/// Why events could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// `after` is older than what retention kept: the consumer missed
    /// events for good. `oldest` is the oldest seq kept.
    #[error("events after {after} are gone; the oldest kept is {oldest}")]
    Gone {
        /// What was asked for.
        after: i64,
        /// The oldest seq still kept.
        oldest: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// No pooled connection could be had in time.
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl crate::store::Store {
    /// [`read`] on a pooled connection.
    pub async fn feed_read(&self, after: i64, limit: i64) -> Result<Vec<Event>, ReadError> {
        let client = self.pool.get().await?;
        read(&**client, after, limit).await
    }

    /// [`head`] on a pooled connection.
    pub async fn feed_head(&self) -> Result<Head, crate::store::StoreError> {
        let client = self.pool.get().await?;
        Ok(head(&**client).await?)
    }
}

/// The feed's head and retention horizon.
pub async fn head(client: &impl GenericClient) -> Result<Head, tokio_postgres::Error> {
    let row = client.query_one(sql::HEAD, &[]).await?;
    Ok(Head {
        seq: row.get(0),
        purged_through: row.get(1),
    })
}

/// Up to `limit` events after seq `after`, in seq order; [`ReadError::Gone`]
/// when retention deleted some of them.
pub async fn read(
    client: &impl GenericClient,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, ReadError> {
    let rows = client.query(sql::READ, &[&after, &limit]).await?;
    // Checked after the read: a purge that ran before it shows here.
    let h = head(client).await?;
    if after < h.purged_through {
        return Err(ReadError::Gone {
            after,
            oldest: h.purged_through + 1,
        });
    }
    Ok(rows.iter().filter_map(event_of).collect())
}

/// An event from a [`sql::READ`] row (`None`: a type this build does not know).
fn event_of(r: &Row) -> Option<Event> {
    let kind = EventType::from_code(r.get(1))?;
    let mut detail: Detail = r
        .get::<_, Option<Json<Detail>>>(6)
        .map(|j| j.0)
        .unwrap_or_default();
    let message_id: Option<i64> = r.get(7);
    let stored = message_id.map(|id| {
        let room: Option<String> = r.get(12);
        let to: Option<UserId> = r.get(13);
        StoredMessage {
            id,
            from_user: r.get(8),
            username: r.get::<_, Option<String>>(9).unwrap_or_default().into(),
            content: r.get(10),
            timestamp: r.get(11),
            target: match (room, to) {
                (Some(room), _) => Target::Room(room.into()),
                (None, Some(to)) => Target::User(to),
                (None, None) => Target::User(0),
            },
            kind: Kind::from_columns(r.get(14), r.get(15)),
            edited_at: r.get(16),
            deleted: r.get(17),
        }
    });
    let mut message = None;
    match (&stored, kind) {
        // A kick or ban: its end and reason are the row's.
        (Some(m), EventType::MemberKicked | EventType::MemberBanned) => {
            detail.until = m.edited_at;
            detail.reason = (!m.content.is_empty()).then(|| m.content.clone());
        }
        (Some(m), _) => {
            message = RawValue::from_string(encode_message_data(m)).ok();
        }
        (None, _) => {}
    }
    Some(Event {
        seq: r.get(0),
        kind: kind.name(),
        at: r.get(2),
        room: r.get(3),
        user: r.get(4),
        by: r.get(5),
        message,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for t in EventType::ALL {
            assert_eq!(EventType::from_code(t.code()), Some(t));
            assert!(names.insert(t.name()));
        }
        assert_eq!(EventType::from_code(0), None);
        assert_eq!(EventType::from_code(16), None);
    }

    #[test]
    fn rows_of_messages_name_their_author_or_actor() {
        let room = Target::Room("r".into());
        let e = NewEvent::of_row(5, Kind::Message, 7, &room);
        assert_eq!(
            (e.kind, e.user, e.by),
            (EventType::MessageCreated, Some(7), None)
        );
        let e = NewEvent::of_row(6, Kind::Delete { target: 5 }, 8, &room);
        assert_eq!(
            (e.kind, e.user, e.by),
            (EventType::MessageDeleted, None, Some(8))
        );
        let kick = Kind::Member {
            user: 3,
            ban: false,
            seconds: None,
        };
        let e = NewEvent::of_row(7, kick, crate::protocol::OPERATOR, &room);
        assert_eq!(
            (e.kind, e.user, e.by),
            (EventType::MemberKicked, Some(3), None)
        );
        let e = NewEvent::of_row(8, Kind::Message, 7, &Target::User(9));
        assert_eq!(e.room, None);
    }
}
