//! PostgreSQL: the only module that touches the database.
//!
//! - [`Store`]: two small connection pools per shard: one for the
//!   handshake's user upsert, joins, existence checks and short writes, one
//!   for the reads that can be heavy (histories, replays, unread counts). All of it is
//!   asynchronous: a shard never waits on the database.
//! - [`writer`]: the writer threads that batch message inserts.
//! - [`admin`]: migrations (`sql/`, embedded at build time) and the
//!   helpers the CLI uses.

pub mod access;
mod admin;
pub mod feed;
mod history;
pub mod operator;
mod posts;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Row};

use crate::auth::{username_key, Identity};
use crate::protocol::{Kind, RoomSummary, StoredMessage, Target, UserId};
use crate::rooms::{Mute, Visibility};

pub use access::{Applied, Change, Joined, MemberRow, Mutes, Standing};
pub use admin::{
    backfill_username_keys, create_room, create_room_as, list_rooms, migrate, AdminCreated,
};
pub use history::{EventTarget, RowSize};
pub use operator::{AuditRow, PutUser, RoomRow};
pub use posts::Sender;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// What went wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `DATABASE_URL` does not parse.
    #[error("invalid database url: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// A statement or connection failed.
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No pooled connection could be had in time.
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Applying the schema migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// The token's username, or one that looks like it (same
    /// [`username_key`]), belongs to another user id.
    #[error("username already taken by another user")]
    UsernameTaken,
    /// Issue 15: an operator blocked the user until this time (`None`:
    /// until unblocked); its handshakes are refused.
    #[error("{}", blocked_message(.0))]
    Blocked(Option<DateTime<Utc>>),
    /// An operator named a user that has no row (it never connected).
    #[error("user {0} does not exist (a user exists once it has connected)")]
    NoSuchUser(UserId),
    /// Gave up connecting at start-up.
    #[error("database unreachable after {0:?}: {1}")]
    Unreachable(Duration, #[source] tokio_postgres::Error),
}

/// The text a blocked user's handshake is refused with.
fn blocked_message(until: &Option<DateTime<Utc>>) -> String {
    match until {
        Some(t) => format!(
            "user blocked until {}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => "user blocked".to_owned(),
    }
}

/// What `create_room` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The room was created, with its creator as its first member.
    Created,
    /// A room of that name exists.
    Exists,
    /// The creator made `--max-rooms-created-per-hour` rooms in the last hour.
    TooMany,
}

/// A shard's handle on the database: a small pool whose connections are
/// driven by the shard's own runtime.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Heavy reads (histories, replays, unread counts); the same pool as
    /// `pool` unless built with [`Store::with_read_pool`].
    read_pool: Pool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Inserts or renames a user with its look-alike key; a UNIQUE violation
/// (on `username` or `username_key`) means another user has the name.
const UPSERT_USER: &str = "INSERT INTO users (id, username, username_key) VALUES ($1, $2, $3) \
     ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, \
                                    username_key = EXCLUDED.username_key \
     WHERE users.username IS DISTINCT FROM EXCLUDED.username \
        OR users.username_key IS DISTINCT FROM EXCLUDED.username_key";
/// The user's row, its rooms, its mutes that hold (rooms and ends), and
/// (issue 15) whether an operator's block holds, with its end: one round
/// trip.
const SESSION: &str = "SELECT u.username, u.username_key, \
     ARRAY(SELECT room::text FROM room_members WHERE user_id = $1 ORDER BY room LIMIT $2), \
     ARRAY(SELECT room::text FROM room_mutes WHERE user_id = $1 \
           AND (until IS NULL OR until > now()) ORDER BY room LIMIT $2), \
     ARRAY(SELECT until FROM room_mutes WHERE user_id = $1 \
           AND (until IS NULL OR until > now()) ORDER BY room LIMIT $2), \
     b.user_id IS NOT NULL, b.until \
     FROM (SELECT $1::int8 AS id) me LEFT JOIN users u ON u.id = me.id \
     LEFT JOIN user_blocks b ON b.user_id = me.id AND (b.until IS NULL OR b.until > now())";
/// Joins a public room, or a private one the user belongs to already; to
/// anyone else a private room is not there (no row; a banned former member
/// is no member, so the room is not there for it either). Returns the
/// room's last id, whether the membership is new, the user's mute there,
/// and whether an active ban refused the join (public rooms only). A new
/// membership appends `member.joined` to the feed (issue 15).
const JOIN_ROOM: &str = concat!(
    "WITH r AS (SELECT name, visibility FROM rooms WHERE name = $2), \
     b AS (SELECT until FROM room_bans WHERE room = $2 AND user_id = $1 \
           AND (until IS NULL OR until > now())), \
     ins AS (INSERT INTO room_members (user_id, room) SELECT $1, name FROM r \
             WHERE visibility = 'public' AND NOT EXISTS (SELECT 1 FROM b) \
             ON CONFLICT DO NOTHING RETURNING 1), \
     mu AS (SELECT until FROM room_mutes WHERE room = $2 AND user_id = $1 \
            AND (until IS NULL OR until > now())), \
     fsrc AS (SELECT 8::int2 AS type, $2::text AS room, $1::int8 AS user_id, NULL::int8 AS by_user, \
                     NULL::int8 AS message_id, NULL::jsonb AS detail, 1::int8 AS ord FROM ins), ",
    crate::feed_append!("fsrc"),
    " SELECT COALESCE((SELECT max(m.id) FROM messages m WHERE m.room = $2), 0)::int8, \
            EXISTS (SELECT 1 FROM ins), EXISTS (SELECT 1 FROM mu), (SELECT until FROM mu), \
            EXISTS (SELECT 1 FROM b), (SELECT until FROM b) \
     FROM r WHERE r.visibility = 'public' \
        OR EXISTS (SELECT 1 FROM room_members x WHERE x.user_id = $1 AND x.room = $2)"
);
/// Cluster mode: the last stored id of each listed room (0: none).
pub const ROOM_LAST: &str = "SELECT r::text, \
       COALESCE((SELECT max(m.id) FROM messages m WHERE m.room = r), 0)::int8 \
     FROM UNNEST($1::text[]) r";
/// Cluster mode: the last stored DM id (sent or received) of each listed user (0: none).
pub const DM_LAST: &str = "SELECT u, GREATEST( \
       COALESCE((SELECT max(m.id) FROM messages m WHERE m.to_user = u), 0), \
       COALESCE((SELECT max(m.id) FROM messages m \
                 WHERE m.from_user = u AND m.to_user IS NOT NULL), 0))::int8 \
     FROM UNNEST($1::int8[]) u";
/// Cluster mode: the user's stored rooms with their last message id, and
/// the user's last DM id, read *before* its connection is registered.
const SESSION_FLOORS: &str = "SELECT ARRAY(SELECT m.room::text FROM room_members m \
            WHERE m.user_id = $1 ORDER BY m.room LIMIT $2), \
       ARRAY(SELECT COALESCE((SELECT max(x.id) FROM messages x WHERE x.room = m.room), 0)::int8 \
            FROM room_members m WHERE m.user_id = $1 ORDER BY m.room LIMIT $2)";
const USER_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)";
/// A row as [`stored_message`] reads it (`m`: `messages`, `u`: `users`).
pub(crate) const COLUMNS: &str = "m.id, m.from_user, u.username, m.content, m.\"timestamp\", \
     m.room, m.to_user, m.kind, m.target, m.edited_at, m.deleted";
const INNER: &str = "SELECT id, from_user, content, \"timestamp\", room, to_user, \
     kind, target, edited_at, deleted FROM messages";
/// Ends a membership; appends `member.left` to the feed when there was one.
const LEAVE_ROOM: &str = concat!(
    "WITH del AS (DELETE FROM room_members WHERE user_id = $1 AND room = $2 RETURNING 1), \
     fsrc AS (SELECT 9::int2 AS type, $2::text AS room, $1::int8 AS user_id, NULL::int8 AS by_user, \
                     NULL::int8 AS message_id, NULL::jsonb AS detail, 1::int8 AS ord FROM del), ",
    crate::feed_append!("fsrc"),
    " SELECT count(*)::int8 FROM del"
);
/// Serializes one user's `create_room`s (two int4 keys: a namespace, the
/// user id folded to 31 bits; two users sharing a key only wait on each other).
const LOCK_CREATOR: &str =
    "SELECT pg_advisory_xact_lock(1919905645, ($1::int8 % 2147483647)::int4)";
/// Creates room $2 (visibility $4) with creator $1 as its owner, unless $1 created
/// $3 rooms or more in the last hour ($3 = 0: no cap). Returns the rooms
/// $1 created in the last hour before this one, and 1 if this one was created.
/// One statement: the member row's foreign key sees the room inserted by it.
/// A new room appends `room.created` to the feed (issue 15).
const CREATE_ROOM: &str = concat!(
    "WITH c AS (SELECT count(*) AS n FROM rooms \
                WHERE created_by = $1 AND created_at > now() - interval '1 hour'), \
          r AS (INSERT INTO rooms (name, created_by, visibility) SELECT $2, $1, $4 FROM c \
                WHERE $3::int8 = 0 OR c.n < $3::int8 \
                ON CONFLICT (name) DO NOTHING RETURNING name), \
          m AS (INSERT INTO room_members (user_id, room, role) SELECT $1, name, 'owner' FROM r), \
          fsrc AS (SELECT 6::int2 AS type, name::text AS room, $1::int8 AS user_id, \
                          $1::int8 AS by_user, NULL::int8 AS message_id, \
                          jsonb_build_object('visibility', $4::text, 'role', 'owner') AS detail, \
                          1::int8 AS ord FROM r), ",
    crate::feed_append!("fsrc"),
    " SELECT (SELECT n FROM c), count(*) FROM r"
);
/// Unread: other users' messages after the read position. The scan is a
/// range of the (room, id) index cut at $4 rows (a few times `$2`, the
/// cap on the count), so a user's own messages after its read position
/// are skipped without making the scan unbounded.
///
/// Only messages count (issue 14): `last_id` is the newest message's id,
/// deleted or not (a backward scan of the same index, stopping at the
/// first message: events are rare); the unread count skips edit and delete
/// events and deleted messages (columns of rows the scan reads anyway).
const ROOMS: &str = "SELECT m.room::text, \
            (SELECT x.id FROM messages x WHERE x.room = m.room AND x.kind = 0 \
             ORDER BY x.id DESC LIMIT 1), \
            (SELECT LEAST(count(*), $2) FROM (SELECT y.from_user, y.kind, y.deleted FROM messages y \
                                   WHERE y.room = m.room AND y.id > m.read_up_to \
                                   ORDER BY y.id LIMIT $4) c \
             WHERE c.from_user <> $1 AND c.kind = 0 AND NOT c.deleted) \
     FROM room_members m WHERE m.user_id = $1 ORDER BY m.room LIMIT $3";
/// How many rows the unread count of one room may scan, per unit of
/// `--unread-max`: own messages after the read position beyond
/// `(UNREAD_SCAN_FACTOR - 1) * unread_max` can hide later unread ones
/// (the count is then too low, never too high).
const UNREAD_SCAN_FACTOR: i64 = 4;
const MARK_READ: &str = "UPDATE room_members SET read_up_to = GREATEST(read_up_to, \
            LEAST($3, COALESCE((SELECT max(id) FROM messages WHERE room = $2), 0))) \
     WHERE user_id = $1 AND room = $2 RETURNING read_up_to";

/// Cluster mode: the last stored ids of a connecting user's streams, read
/// before its connection is registered (see `cluster::Interest::add`).
#[derive(Debug, Default, Clone)]
pub struct Floors {
    /// Room name -> last stored message id.
    pub rooms: std::collections::HashMap<String, i64>,
    /// The user's last stored DM id.
    pub user: Option<i64>,
}

/// A slice of a history, between exclusive id bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Most messages returned.
    pub limit: i64,
    /// Only ids below this one (`None`: no upper bound).
    pub before: Option<i64>,
    /// Only ids above this one; with it, the *oldest* `limit` such messages
    /// are returned, without it the newest (`None`: no lower bound).
    pub after: Option<i64>,
}

impl Store {
    /// A pool of at most `size` connections. Connections are opened lazily,
    /// on the runtime that first uses the pool, so build it on that runtime.
    pub fn new(database_url: &str, size: usize) -> Result<Store, StoreError> {
        let pool = build_pool(database_url, size)?;
        Ok(Store {
            read_pool: pool.clone(),
            pool,
        })
    }

    /// Like [`new`](Self::new), with a second pool of `read_size`
    /// connections for the reads that can be heavy (room and DM history,
    /// `join` replay, `dm_sync`, `rooms`), so that handshakes and short
    /// statements never queue behind them.
    pub fn with_read_pool(
        database_url: &str,
        size: usize,
        read_size: usize,
    ) -> Result<Store, StoreError> {
        Ok(Store {
            pool: build_pool(database_url, size)?,
            read_pool: build_pool(database_url, read_size)?,
        })
    }

    /// The pool of the heavy reads.
    fn reader(&self) -> &Pool {
        &self.read_pool
    }

    /// Handshake work: returns the rooms the user belongs to and its mutes
    /// that hold, and makes
    /// sure the `users` row matches the token's claims. The common case (the
    /// row already matches) is one read-only round trip with no commit to
    /// wait for; only a new or renamed user costs an upsert.
    pub async fn open_session(
        &self,
        identity: &Identity,
        max_rooms: usize,
    ) -> Result<(Vec<String>, Mutes), StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(SESSION).await?;
        let max_rooms = i64::try_from(max_rooms).unwrap_or(i64::MAX);
        let row = client
            .query_one(&stmt, &[&identity.user_id, &max_rooms])
            .await?;
        if row.get::<_, bool>(5) {
            return Err(StoreError::Blocked(row.get(6)));
        }
        let stored_name: Option<String> = row.get(0);
        let stored_key: Option<String> = row.get(1);
        let key = username_key(&identity.username);
        if stored_name.as_deref() != Some(identity.username.as_str())
            || stored_key.as_deref() != Some(key.as_str())
        {
            let upsert = client.prepare_cached(UPSERT_USER).await?;
            if let Err(e) = client
                .execute(&upsert, &[&identity.user_id, &identity.username, &key])
                .await
            {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    return Err(StoreError::UsernameTaken);
                }
                return Err(e.into());
            }
        }
        let mutes = access::mutes(row.get(3), row.get(4));
        Ok((row.get::<_, Vec<String>>(2), mutes))
    }

    /// Cluster mode: the last stored id of each of the user's rooms and of
    /// its DMs, read before its connection is registered (the cluster link
    /// delivers everything after them).
    pub async fn session_floors(
        &self,
        user: UserId,
        max_rooms: usize,
    ) -> Result<Floors, StoreError> {
        let client = self.pool.get().await?;
        let (floors, dm) = tokio::try_join!(
            client.prepare_cached(SESSION_FLOORS),
            client.prepare_cached(DM_LAST)
        )?;
        let max_rooms = i64::try_from(max_rooms).unwrap_or(i64::MAX);
        let users: &[UserId] = &[user];
        let floor_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&user, &max_rooms];
        let dm_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&users];
        let (row, dm) = tokio::try_join!(
            client.query_one(&floors, &floor_params),
            client.query_one(&dm, &dm_params)
        )?;
        let rooms: Vec<String> = row.get(0);
        let lasts: Vec<i64> = row.get(1);
        Ok(Floors {
            rooms: rooms.into_iter().zip(lasts).collect(),
            user: Some(dm.get(1)),
        })
    }

    /// Cluster mode: the last stored id of each room (0: none).
    pub async fn room_lasts(&self, rooms: &[&str]) -> Result<Vec<(String, i64)>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(ROOM_LAST).await?;
        let rows = client.query(&stmt, &[&rooms]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Cluster mode: the last stored DM id of each user (0: none).
    pub async fn dm_lasts(&self, users: &[UserId]) -> Result<Vec<(UserId, i64)>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(DM_LAST).await?;
        let rows = client.query(&stmt, &[&users]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// True when the database answers a trivial query within `within`.
    pub async fn ping(&self, within: Duration) -> bool {
        let check = async {
            let client = self.pool.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        matches!(tokio::time::timeout(within, check).await, Ok(Some(_)))
    }

    /// Adds the user to the room's members. `None` when the room does not
    /// exist, or is private and the user is not a member (the same answer);
    /// else the room's last stored message id (0: none), read before the
    /// membership is registered on the shard, and the user's mute.
    pub async fn join_room(&self, user: UserId, room: &str) -> Result<Option<Joined>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(JOIN_ROOM).await?;
        let row = client.query_opt(&stmt, &[&user, &room]).await?;
        Ok(row.map(|row| Joined {
            last: row.get(0),
            new: row.get(1),
            mute: row.get::<_, bool>(2).then(|| Mute { until: row.get(3) }),
            banned: row.get(4),
            ban_until: row.get(5),
        }))
    }

    /// True when a `users` row has this id.
    pub async fn user_exists(&self, user: UserId) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(USER_EXISTS).await?;
        Ok(client.query_one(&stmt, &[&user]).await?.get(0))
    }

    /// Removes the user from the room's members. False when not a member.
    pub async fn leave_room(&self, user: UserId, room: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(LEAVE_ROOM).await?;
        Ok(client
            .query_one(&stmt, &[&user, &room])
            .await?
            .get::<_, i64>(0)
            > 0)
    }

    /// Creates a room with `creator` as its owner, unless the
    /// creator made `max_per_hour` rooms or more in the last hour (0: no
    /// cap). One user's creations are serialized (an advisory lock), so
    /// concurrent requests from its connections cannot pass the cap.
    pub async fn create_room(
        &self,
        creator: UserId,
        room: &str,
        visibility: Visibility,
        max_per_hour: u32,
    ) -> Result<Created, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let lock = tx.prepare_cached(LOCK_CREATOR).await?;
        tx.execute(&lock, &[&creator]).await?;
        let stmt = tx.prepare_cached(CREATE_ROOM).await?;
        let cap = i64::from(max_per_hour);
        let row = tx
            .query_one(&stmt, &[&creator, &room, &cap, &visibility.as_str()])
            .await?;
        tx.commit().await?;
        let (recent, created): (i64, i64) = (row.get(0), row.get(1));
        Ok(if created > 0 {
            Created::Created
        } else if cap > 0 && recent >= cap {
            Created::TooMany
        } else {
            Created::Exists
        })
    }

    /// The user's rooms (at most `max_rooms`, by name) with their newest
    /// message id and unread count (counted up to `unread_max`).
    pub async fn rooms(
        &self,
        user: UserId,
        unread_max: i64,
        max_rooms: usize,
    ) -> Result<Vec<RoomSummary>, StoreError> {
        let client = self.reader().get().await?;
        let stmt = client.prepare_cached(ROOMS).await?;
        let max_rooms = i64::try_from(max_rooms).unwrap_or(i64::MAX);
        let scan = unread_max.saturating_mul(UNREAD_SCAN_FACTOR);
        let rows = client
            .query(&stmt, &[&user, &unread_max, &max_rooms, &scan])
            .await?;
        Ok(rows
            .iter()
            .map(|r| RoomSummary {
                room: r.get(0),
                last_id: r.get(1),
                unread: r.get(2),
            })
            .collect())
    }

    /// Moves the user's read position in `room` forward to `up_to` (capped
    /// at the room's newest id); returns the stored position, or `None` when
    /// the user is not a member.
    pub async fn mark_read(
        &self,
        user: UserId,
        room: &str,
        up_to: i64,
    ) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(MARK_READ).await?;
        let row = client.query_opt(&stmt, &[&user, &room, &up_to]).await?;
        Ok(row.map(|r| r.get(0)))
    }
}

/// A message row in [`COLUMNS`] order.
pub(crate) fn stored_message(row: &Row) -> StoredMessage {
    let room: Option<String> = row.get(5);
    let to: Option<UserId> = row.get(6);
    StoredMessage {
        kind: Kind::from_columns(row.get(7), row.get(8)),
        edited_at: row.get(9),
        deleted: row.get(10),
        id: row.get(0),
        from_user: row.get(1),
        username: Arc::from(row.get::<_, String>(2)),
        content: row.get(3),
        timestamp: row.get::<_, DateTime<Utc>>(4),
        target: match (room, to) {
            (Some(room), _) => Target::Room(Arc::from(room)),
            (None, Some(to)) => Target::User(to),
            // The table's CHECK constraint rules this out.
            (None, None) => Target::User(0),
        },
    }
}

/// Opens one connection, driven by a task on the current runtime.
pub async fn connect(database_url: &str) -> Result<Client, StoreError> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection ended");
        }
    });
    Ok(client)
}

/// Connects, retrying with back-off until `wait` has passed.
pub async fn connect_with_retry(database_url: &str, wait: Duration) -> Result<Client, StoreError> {
    let _: tokio_postgres::Config = database_url.parse().map_err(StoreError::Url)?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut backoff = Duration::from_millis(100);
    loop {
        match tokio_postgres::connect(database_url, NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "database connection ended");
                    }
                });
                return Ok(client);
            }
            Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, retry_in = ?backoff, "database unreachable, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(StoreError::Unreachable(wait, e)),
        }
    }
}

/// A pool of at most `size` connections. Connections are opened lazily,
/// on the runtime that first uses the pool, so build it on that runtime.
fn build_pool(database_url: &str, size: usize) -> Result<Pool, StoreError> {
    let pg: tokio_postgres::Config = database_url.parse().map_err(StoreError::Url)?;
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(3)))
        .recycle_timeout(Some(Duration::from_secs(3)))
        .build()
        .expect("pool with a runtime and timeouts builds");
    Ok(pool)
}

/// True for errors worth retrying: the connection or server went away, or
/// the server is starting, stopping or out of resources.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exceptions
                || c.starts_with("53") // insufficient resources
                || c.starts_with("57P") // admin/crash shutdown, cannot connect now
                || c == "40001"
                || c == "40P01"
        }
    }
}
