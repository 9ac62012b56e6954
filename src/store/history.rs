//! Reads of a stream's stored rows: history windows (messages in their
//! current state), replays and cluster fills (messages and events), the
//! ids and sizes a paged reply is planned from, the pages themselves, and
//! the message an edit or delete names. All of them take their connection
//! from the read pool, so handshakes never wait behind them.

use std::sync::Arc;

use tokio_postgres::Row;

use super::{stored_message, Store, StoreError, Window, COLUMNS, INNER};
use crate::protocol::{Kind, StoredMessage, Target, UserId};

/// The `WHERE … ORDER BY … LIMIT` of a window over `messages` (`None`
/// for [`HistoryQuery::DmSince`], a union of two index scans). The
/// `*Before`/`*After` forms are history windows: messages only (issue 14:
/// edit and delete events are not history entries); `RoomSince` is a
/// room's replay: messages and events.
fn window_body(kind: HistoryQuery) -> Option<&'static str> {
    Some(match kind {
        HistoryQuery::RoomBefore => {
            "WHERE room = $1 AND kind = 0 AND id < $2 ORDER BY id DESC LIMIT $3"
        }
        HistoryQuery::RoomAfter => {
            "WHERE room = $1 AND kind = 0 AND id > $2 AND id < $3 ORDER BY id LIMIT $4"
        }
        HistoryQuery::RoomSince => "WHERE room = $1 AND id > $2 AND id < $3 ORDER BY id LIMIT $4",
        HistoryQuery::DmBefore => {
            "WHERE to_user IS NOT NULL AND LEAST(from_user, to_user) = $1 \
             AND GREATEST(from_user, to_user) = $2 AND kind = 0 AND id < $3 \
             ORDER BY id DESC LIMIT $4"
        }
        HistoryQuery::DmAfter => {
            "WHERE to_user IS NOT NULL AND LEAST(from_user, to_user) = $1 \
             AND GREATEST(from_user, to_user) = $2 AND kind = 0 AND id > $3 AND id < $4 \
             ORDER BY id LIMIT $5"
        }
        HistoryQuery::DmSince => return None,
    })
}

/// The ids and content sizes (bytes, read from the TOAST header: no
/// content is fetched) of the rows a history window or a replay covers,
/// ascending: what a paged reply is planned from.
fn index_sql(kind: HistoryQuery) -> String {
    const SIZED: &str = "SELECT id, octet_length(content)::int8 AS n FROM messages";
    match window_body(kind) {
        Some(body) => format!("SELECT id, n FROM ({SIZED} {body}) m ORDER BY id"),
        None => format!(
            "SELECT id, n FROM ( \
               ({SIZED} WHERE to_user = $1 AND id > $2 ORDER BY id LIMIT $3) \
               UNION ALL \
               ({SIZED} WHERE from_user = $1 AND to_user IS NOT NULL AND to_user <> $1 \
                AND id > $2 ORDER BY id LIMIT $3) \
             ) m ORDER BY id LIMIT $3"
        ),
    }
}

/// Issue 14: [`index_sql`] of a room window, empty unless user `$n` (the
/// parameter after the window's) is a member of room `$1` in the same
/// snapshot. A kick ends the membership in the transaction that commits
/// its event, and the room's later ids commit after it (one writer, in
/// id order), so a snapshot that still shows the membership shows no id
/// above the kick: a history or replay planned for a kicked user never
/// holds one, whatever its shard's registry still says.
fn member_index_sql(kind: HistoryQuery) -> String {
    let member = match kind {
        HistoryQuery::RoomBefore => 4,
        _ => 5,
    };
    format!(
        "SELECT id, n FROM ({}) w WHERE EXISTS (SELECT 1 FROM room_members x \
         WHERE x.room = $1 AND x.user_id = ${member}::int8) ORDER BY id",
        index_sql(kind)
    )
}

/// The messages of a page of a reply, by id, oldest first.
fn messages_by_id_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM messages m JOIN users u ON u.id = m.from_user \
         WHERE m.id = ANY($1) ORDER BY m.id"
    )
}

/// Issue 14: what an edit or delete request needs to know of its target.
/// The message `$1` and the role of user `$2` in its room (NULL: a DM, or
/// not a member).
const EVENT_TARGET: &str = "SELECT m.from_user, m.room::text, m.to_user, m.kind, m.deleted, \
            (SELECT r.role FROM room_members r WHERE r.room = m.room AND r.user_id = $2) \
     FROM messages m WHERE m.id = $1";

/// Issue 14: the row a sender stored under a `client_id` (a retried edit or
/// delete is answered with it).
fn by_sender_client_id_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM messages m JOIN users u ON u.id = m.from_user \
         WHERE m.from_user = $1 AND m.client_id = $2"
    )
}

/// Issue 14: the message an edit or delete names, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTarget {
    /// Its author.
    pub author: UserId,
    /// Its stream: the room, or (for a DM) the recipient.
    pub stream: Target,
    /// A message (not itself an edit or delete event).
    pub is_message: bool,
    /// Deleted already.
    pub deleted: bool,
    /// The actor's role in the message's room (`None`: a DM, or not a member).
    pub actor_role: Option<crate::rooms::rules::Role>,
}

/// A stored message's id and the size of its content in bytes: what a
/// paged reply is planned from before any content is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSize {
    /// The message id.
    pub id: i64,
    /// Bytes of its content as stored (UTF-8).
    pub bytes: usize,
}

/// Which statement serves a history page, and its text.
fn history_sql(kind: HistoryQuery) -> String {
    match window_body(kind) {
        Some(body) => format!(
            "SELECT {COLUMNS} FROM ({INNER} {body}) m JOIN users u ON u.id = m.from_user ORDER BY m.id"
        ),
        // Both directions through their own index; a DM to oneself is
        // found by the first branch only.
        None => format!(
            "SELECT {COLUMNS} FROM ( \
               ({INNER} WHERE to_user = $1 AND id > $2 ORDER BY id LIMIT $3) \
               UNION ALL \
               ({INNER} WHERE from_user = $1 AND to_user IS NOT NULL AND to_user <> $1 AND id > $2 \
                ORDER BY id LIMIT $3) \
             ) m JOIN users u ON u.id = m.from_user ORDER BY m.id LIMIT $3"
        ),
    }
}

/// The rows of a history window: `stream` are the statement's leading
/// parameters (the room, or the pair's two ids), then the window's bounds
/// and limit; `sql` gives the text of the `before` or the `after` form.
async fn window_rows(
    client: &deadpool_postgres::Client,
    sql: fn(HistoryQuery) -> String,
    (before_form, after_form): (HistoryQuery, HistoryQuery),
    stream: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    window: Window,
    tail: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let before = window.before.unwrap_or(i64::MAX);
    let after = window.after;
    let mut params = stream.to_vec();
    let form = match &after {
        None => before_form,
        Some(after) => {
            params.push(after);
            after_form
        }
    };
    params.push(&before);
    params.push(&window.limit);
    params.extend_from_slice(tail);
    let stmt = client.prepare_cached(&sql(form)).await?;
    Ok(client.query(&stmt, &params).await?)
}

#[derive(Debug, Clone, Copy)]
enum HistoryQuery {
    RoomBefore,
    RoomAfter,
    /// A room's rows after an id, events included: replays and cluster fills.
    RoomSince,
    DmBefore,
    DmAfter,
    DmSince,
}

impl Store {
    /// The first `limit` rows of a room's stream with ids above `since`,
    /// oldest first: messages (in their current state) and edit and delete
    /// events (cluster fills).
    pub async fn room_since(
        &self,
        room: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let client = self.reader().get().await?;
        let rows = window_rows(
            &client,
            history_sql,
            (HistoryQuery::RoomSince, HistoryQuery::RoomSince),
            &[&room],
            Window {
                limit,
                before: None,
                after: Some(since),
            },
            &[],
        )
        .await?;
        Ok(rows.iter().map(stored_message).collect())
    }

    /// Issue 15: a window of a room's history (messages in their current
    /// state, no events), oldest first, whoever asks (the server API's
    /// `GET /v1/rooms/{room}/messages`: no membership is read).
    pub async fn room_window(
        &self,
        room: &str,
        window: Window,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let client = self.reader().get().await?;
        let rows = window_rows(
            &client,
            history_sql,
            (HistoryQuery::RoomBefore, HistoryQuery::RoomAfter),
            &[&room],
            window,
            &[],
        )
        .await?;
        Ok(rows.iter().map(stored_message).collect())
    }

    /// The ids and content sizes of the first `limit` rows of a room's
    /// stream with ids above `since`, oldest first, events included: what
    /// a `join` with `since` replays to `member` (nothing if it is not a
    /// member when the rows are read: see `member_index_sql`).
    pub async fn room_since_index(
        &self,
        room: &str,
        member: UserId,
        since: i64,
        limit: i64,
    ) -> Result<Vec<RowSize>, StoreError> {
        let client = self.reader().get().await?;
        let rows = window_rows(
            &client,
            member_index_sql,
            (HistoryQuery::RoomSince, HistoryQuery::RoomSince),
            &[&room],
            Window {
                limit,
                before: None,
                after: Some(since),
            },
            &[&member],
        )
        .await?;
        Ok(rows.iter().map(row_size).collect())
    }

    /// The first `limit` DMs sent or received by `user` with ids above
    /// `since`, edit and delete events included, oldest first.
    pub async fn dm_since(
        &self,
        user: UserId,
        since: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = self.dm_since_rows(history_sql, user, since, limit).await?;
        Ok(rows.iter().map(stored_message).collect())
    }

    /// The ids and content sizes of a window of a room's history (its
    /// messages, no events), oldest first, as `member` may read it (nothing
    /// if it is not a member when the rows are read: see `member_index_sql`).
    pub async fn room_index(
        &self,
        room: &str,
        member: UserId,
        window: Window,
    ) -> Result<Vec<RowSize>, StoreError> {
        let client = self.reader().get().await?;
        let rows = window_rows(
            &client,
            member_index_sql,
            (HistoryQuery::RoomBefore, HistoryQuery::RoomAfter),
            &[&room],
            window,
            &[&member],
        )
        .await?;
        Ok(rows.iter().map(row_size).collect())
    }

    /// The ids and content sizes of a window of the messages between two
    /// users (no events), oldest first (a window of the DM history of the pair).
    pub async fn dm_index(
        &self,
        a: UserId,
        b: UserId,
        window: Window,
    ) -> Result<Vec<RowSize>, StoreError> {
        let client = self.reader().get().await?;
        let (low, high) = (a.min(b), a.max(b));
        let rows = window_rows(
            &client,
            index_sql,
            (HistoryQuery::DmBefore, HistoryQuery::DmAfter),
            &[&low, &high],
            window,
            &[],
        )
        .await?;
        Ok(rows.iter().map(row_size).collect())
    }

    /// The ids and content sizes of the first `limit` DMs sent or received
    /// by `user` with ids above `since`, oldest first (the rows
    /// [`dm_since`](Self::dm_since) would return).
    pub async fn dm_since_index(
        &self,
        user: UserId,
        since: i64,
        limit: i64,
    ) -> Result<Vec<RowSize>, StoreError> {
        let rows = self.dm_since_rows(index_sql, user, since, limit).await?;
        Ok(rows.iter().map(row_size).collect())
    }

    /// The rows of `sql`'s [`HistoryQuery::DmSince`] form: `user`'s DMs
    /// (both directions) with ids above `since`, at most `limit`.
    async fn dm_since_rows(
        &self,
        sql: fn(HistoryQuery) -> String,
        user: UserId,
        since: i64,
        limit: i64,
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.reader().get().await?;
        let stmt = client.prepare_cached(&sql(HistoryQuery::DmSince)).await?;
        Ok(client.query(&stmt, &[&user, &since, &limit]).await?)
    }

    /// The messages with these ids, oldest first: one page of a reply.
    pub async fn messages_by_id(&self, ids: &[i64]) -> Result<Vec<StoredMessage>, StoreError> {
        let client = self.reader().get().await?;
        let stmt = client.prepare_cached(&messages_by_id_sql()).await?;
        let rows = client.query(&stmt, &[&ids]).await?;
        // Each row's buffer goes as soon as it is converted.
        Ok(rows.into_iter().map(|r| stored_message(&r)).collect())
    }

    /// Issue 14: the message `id` an edit or delete of `user` names
    /// (`None`: no such row), and, when the request carries a `client_id`,
    /// what `user` already stored under it (a retry is answered with it).
    /// One round trip (the two statements pipelined).
    pub async fn event_target(
        &self,
        id: i64,
        user: UserId,
        client_id: Option<&str>,
    ) -> Result<(Option<EventTarget>, Option<StoredMessage>), StoreError> {
        let client = self.pool.get().await?;
        let by_client_id_text = by_sender_client_id_sql();
        let (target, by_client_id) = tokio::try_join!(
            client.prepare_cached(EVENT_TARGET),
            client.prepare_cached(&by_client_id_text)
        )?;
        let original = async {
            match client_id {
                None => Ok(None),
                Some(c) => client.query_opt(&by_client_id, &[&user, &c]).await,
            }
        };
        let id_param: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&id, &user];
        let (row, original) = tokio::try_join!(client.query_opt(&target, &id_param), original)?;
        let target = row.map(|r| {
            let room: Option<String> = r.get(1);
            let to: Option<UserId> = r.get(2);
            EventTarget {
                author: r.get(0),
                stream: match (room, to) {
                    (Some(room), _) => Target::Room(Arc::from(room)),
                    (None, to) => Target::User(to.unwrap_or(0)),
                },
                is_message: r.get::<_, i16>(3) == Kind::Message.code(),
                deleted: r.get(4),
                actor_role: r
                    .get::<_, Option<&str>>(5)
                    .and_then(crate::rooms::rules::Role::parse),
            }
        });
        Ok((target, original.as_ref().map(stored_message)))
    }
}

/// An `(id, content bytes)` row of [`index_sql`].
fn row_size(row: &Row) -> RowSize {
    RowSize {
        id: row.get(0),
        bytes: usize::try_from(row.get::<_, i64>(1)).unwrap_or(0),
    }
}
