//! What the server API's users and rooms routes read and write (issue 15)
//! beyond the shared room access (`store::access`) and the writers: user
//! rows named by the backend, operator blocks (each with its feed event in
//! the same transaction, appended last), rooms and the audit log, paged.

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::feed::{self, EventType, NewEvent};
use super::{create_room_as, AdminCreated, Store, StoreError};
use crate::auth::username_key;
use crate::protocol::UserId;
use crate::rooms::Visibility;

/// What [`Store::put_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutUser {
    /// A new row.
    Created,
    /// The row existed (its username is now the one given).
    Updated,
}

/// One room as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    /// Its name.
    pub name: String,
    /// Who may join it.
    pub visibility: Visibility,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// How many members it has.
    pub members: i64,
}

/// One row of a room's audit log (`moderation_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Its position in the log (the page key).
    pub id: i64,
    /// `invited`, `role`, `muted`, `unmuted`, `kicked`, `banned`, `unbanned`.
    pub action: String,
    /// The member acted on.
    pub user: UserId,
    /// Who acted (`None`: an operator).
    pub by: Option<UserId>,
    /// The role set (`role`).
    pub role: Option<String>,
    /// The reason given (kicks and bans).
    pub reason: Option<String>,
    /// When a mute or ban ends.
    pub until: Option<DateTime<Utc>>,
    /// The stream row of a kick or ban.
    pub message: Option<i64>,
    /// When it was done.
    pub at: DateTime<Utc>,
}

/// Inserts the user or renames it; the first column says which.
const PUT_USER: &str = "INSERT INTO users (id, username, username_key) VALUES ($1, $2, $3) \
     ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, \
                                    username_key = EXCLUDED.username_key \
     RETURNING (xmax = 0)";
const GET_USER: &str = "SELECT username FROM users WHERE id = $1";
/// Sets (or replaces) the user's block; returns its end. No row: no user.
const BLOCK: &str = "INSERT INTO user_blocks (user_id, until, reason) \
     SELECT id, CASE WHEN $2::int8 IS NULL THEN NULL \
                     ELSE now() + $2::int8 * interval '1 second' END, $3 \
     FROM users WHERE id = $1 \
     ON CONFLICT (user_id) DO UPDATE \
       SET until = EXCLUDED.until, reason = EXCLUDED.reason, blocked_at = now() \
     RETURNING until";
/// Lifts the user's block: whether one held, and whether the user exists.
const UNBLOCK: &str = "WITH d AS (DELETE FROM user_blocks WHERE user_id = $1 \
                      RETURNING (until IS NULL OR until > now()) AS held) \
     SELECT EXISTS (SELECT 1 FROM users WHERE id = $1), COALESCE((SELECT held FROM d), false)";
const ROOM_COLUMNS: &str = "SELECT r.name::text, r.visibility, r.created_at, \
     (SELECT count(*) FROM room_members m WHERE m.room = r.name) FROM rooms r";
const ROOM_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM rooms WHERE name = $1)";
const AUDIT_PAGE: &str = "SELECT id, action, target, actor, role, reason, until, event_id, at \
     FROM moderation_log WHERE room = $1 AND id > $2 ORDER BY id LIMIT $3";

/// An event about a user, by the operator (`by` null), in no room.
fn user_event(kind: EventType, user: UserId) -> NewEvent {
    NewEvent {
        kind,
        room: None,
        user: Some(user),
        by: None,
        message: None,
        detail: feed::Detail::default(),
    }
}

fn room_row(r: &Row) -> RoomRow {
    RoomRow {
        name: r.get(0),
        visibility: Visibility::parse(r.get(1)).unwrap_or_default(),
        created_at: r.get(2),
        members: r.get(3),
    }
}

impl Store {
    /// Creates user `id` with `username`, or renames it: the look-alike
    /// key is the handshake's ([`username_key`]); `UsernameTaken` when
    /// another user has the name or one that looks like it. The caller
    /// checks the name first (`auth::check_username`).
    pub async fn put_user(&self, id: UserId, username: &str) -> Result<PutUser, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(PUT_USER).await?;
        match client
            .query_one(&stmt, &[&id, &username, &username_key(username)])
            .await
        {
            Ok(row) if row.get::<_, bool>(0) => Ok(PutUser::Created),
            Ok(_) => Ok(PutUser::Updated),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(StoreError::UsernameTaken)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The user's username (`None`: no such user).
    pub async fn username(&self, id: UserId) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(GET_USER).await?;
        Ok(client.query_opt(&stmt, &[&id]).await?.map(|r| r.get(0)))
    }

    /// Blocks the user's handshakes for `seconds` (`None`: until
    /// unblocked) and appends `user.blocked`, in one transaction (the
    /// feed last). `None`: no such user; else the block's end.
    pub async fn block_user(
        &self,
        user: UserId,
        seconds: Option<i64>,
        reason: Option<&str>,
    ) -> Result<Option<Option<DateTime<Utc>>>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (block, append) = tokio::try_join!(
            tx.prepare_cached(BLOCK),
            tx.prepare_cached(feed::sql::APPEND)
        )?;
        let Some(row) = tx.query_opt(&block, &[&user, &seconds, &reason]).await? else {
            return Ok(None);
        };
        let until: Option<DateTime<Utc>> = row.get(0);
        let mut event = user_event(EventType::UserBlocked, user);
        event.detail.until = until;
        event.detail.reason = reason.map(str::to_owned);
        feed::append(&*tx, &append, &[event]).await?;
        tx.commit().await?;
        Ok(Some(until))
    }

    /// Lifts the user's block; appends `user.unblocked` when one held (in
    /// the same transaction). `None`: no such user; else whether one held.
    pub async fn unblock_user(&self, user: UserId) -> Result<Option<bool>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (unblock, append) = tokio::try_join!(
            tx.prepare_cached(UNBLOCK),
            tx.prepare_cached(feed::sql::APPEND)
        )?;
        let row = tx.query_one(&unblock, &[&user]).await?;
        let (exists, held): (bool, bool) = (row.get(0), row.get(1));
        if !exists {
            return Ok(None);
        }
        if held {
            let event = user_event(EventType::UserUnblocked, user);
            feed::append(&*tx, &append, &[event]).await?;
        }
        tx.commit().await?;
        Ok(Some(held))
    }

    /// Creates a room as an operator (`store::create_room_as`: optional
    /// owner, no hourly cap, `room.created` appended).
    pub async fn create_room_as(
        &self,
        name: &str,
        visibility: Visibility,
        owner: Option<UserId>,
    ) -> Result<AdminCreated, StoreError> {
        let client = self.pool.get().await?;
        create_room_as(&client, name, visibility, owner).await
    }

    /// The room named `name`, if it exists.
    pub async fn room(&self, name: &str) -> Result<Option<RoomRow>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!("{ROOM_COLUMNS} WHERE r.name = $1"))
            .await?;
        Ok(client
            .query_opt(&stmt, &[&name])
            .await?
            .as_ref()
            .map(room_row))
    }

    /// True when a room has this name.
    pub async fn room_exists(&self, name: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(ROOM_EXISTS).await?;
        Ok(client.query_one(&stmt, &[&name]).await?.get(0))
    }

    /// Up to `limit` rooms named after `after` (`""`: from the first), by name.
    pub async fn rooms_page(&self, after: &str, limit: i64) -> Result<Vec<RoomRow>, StoreError> {
        let client = self.reader().get().await?;
        let stmt = client
            .prepare_cached(&format!(
                "{ROOM_COLUMNS} WHERE r.name > $1 ORDER BY r.name LIMIT $2"
            ))
            .await?;
        let rows = client.query(&stmt, &[&after, &limit]).await?;
        Ok(rows.iter().map(room_row).collect())
    }

    /// Up to `limit` rows of `room`'s audit log after id `after`, by id.
    pub async fn audit_page(
        &self,
        room: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let client = self.reader().get().await?;
        let stmt = client.prepare_cached(AUDIT_PAGE).await?;
        let rows = client.query(&stmt, &[&room, &after, &limit]).await?;
        Ok(rows
            .iter()
            .map(|r| AuditRow {
                id: r.get(0),
                action: r.get(1),
                user: r.get(2),
                by: r.get(3),
                role: r.get(4),
                reason: r.get(5),
                until: r.get(6),
                message: r.get(7),
                at: r.get(8),
            })
            .collect())
    }
}
