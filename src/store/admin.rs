//! Migrations (`sql/`, embedded at build time, applied under an advisory
//! lock, then the look-alike key backfill) and the operator's helpers the
//! command line uses (`room create`, `room list`).

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::{embedded, StoreError};
use crate::auth::username_key;
use crate::protocol::UserId;
use crate::rooms::Visibility;

/// Users without a look-alike key (rows from before `V3`), oldest first,
/// after a (created_at, id) position.
const KEYLESS_USERS: &str = "SELECT id, username, created_at FROM users \
     WHERE username_key IS NULL \
       AND ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2::int8)) \
     ORDER BY created_at, id LIMIT $3";
/// Gives each listed user its key, unless another row already holds it.
const SET_KEYS: &str = "UPDATE users u SET username_key = k.key \
     FROM UNNEST($1::int8[], $2::text[]) AS k(id, key) \
     WHERE u.id = k.id AND u.username_key IS NULL \
       AND NOT EXISTS (SELECT 1 FROM users o WHERE o.username_key = k.key)";

/// Applies the embedded `sql/` migrations, serialized across concurrent
/// starters by an advisory lock.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    const LOCK_KEY: i64 = 0x6368_6174_5f73_7276; // "chat_srv"
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = embedded::migrations::runner().run_async(client).await;
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
                .await?;
            return Err(e.into());
        }
    };
    for m in report.applied_migrations() {
        tracing::info!(migration = %m, "applied migration");
    }
    let keyed = backfill_username_keys(client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await?;
    let (keyed, contested) = keyed?;
    if keyed > 0 || contested > 0 {
        tracing::info!(
            keyed,
            contested,
            "username keys filled; contested look-alikes must choose a new name"
        );
    }
    Ok(())
}

/// Gives every user row without a look-alike key (rows from before the
/// `V3` migration) its [`username_key`], oldest account first, in batches.
/// A row whose key an older row (or a user connected meanwhile) already
/// holds keeps a NULL key: that user's next handshake is refused as
/// "username already taken" until its token carries another name.
/// Returns (rows keyed, rows left contested).
pub async fn backfill_username_keys(client: &Client) -> Result<(u64, u64), StoreError> {
    const BATCH: i64 = 1000;
    let select = client.prepare(KEYLESS_USERS).await?;
    let update = client.prepare(SET_KEYS).await?;
    let mut after: (Option<DateTime<Utc>>, UserId) = (None, 0);
    let (mut keyed, mut contested) = (0u64, 0u64);
    loop {
        let rows = client.query(&select, &[&after.0, &after.1, &BATCH]).await?;
        let Some(last) = rows.last() else {
            return Ok((keyed, contested));
        };
        after = (Some(last.get(2)), last.get(0));
        // Within a batch the oldest of two look-alikes is listed first.
        let mut seen = std::collections::HashSet::new();
        let (mut ids, mut keys) = (Vec::new(), Vec::new());
        for row in &rows {
            let key = username_key(row.get::<_, &str>(1));
            if seen.insert(key.clone()) {
                ids.push(row.get::<_, UserId>(0));
                keys.push(key);
            }
        }
        let n = match client.execute(&update, &[&ids, &keys]).await {
            Ok(n) => n,
            // A handshake elsewhere took a key meanwhile: one at a time.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let mut n = 0;
                for (id, key) in ids.iter().zip(&keys) {
                    match client.execute(&update, &[&vec![*id], &vec![key]]).await {
                        Ok(k) => n += k,
                        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                n
            }
            Err(e) => return Err(e.into()),
        };
        keyed += n;
        contested += rows.len() as u64 - n;
    }
}

/// Creates a public room without owner; false when it already existed.
pub async fn create_room(client: &Client, name: &str) -> Result<bool, StoreError> {
    Ok(create_room_as(client, name, Visibility::Public, None).await? == AdminCreated::Created)
}

/// What `chat_server room create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCreated {
    /// The room was created (with its owner as first member, if given).
    Created,
    /// A room of that name exists (nothing changed).
    Exists,
    /// The owner has no `users` row (it never connected): nothing created.
    NoSuchOwner,
}

/// [`create_room_as`]'s statement: appends `room.created` (by the
/// operator: no `by`; `user`: the owner, if any) to the feed.
const CREATE_ROOM_AS: &str = concat!(
    "WITH o AS (SELECT $3::int8 IS NULL OR EXISTS (SELECT 1 FROM users WHERE id = $3) AS ok), \
          r AS (INSERT INTO rooms (name, visibility) SELECT $1, $2 FROM o WHERE o.ok \
                ON CONFLICT (name) DO NOTHING RETURNING name), \
          m AS (INSERT INTO room_members (user_id, room, role) \
                SELECT $3, name, 'owner' FROM r WHERE $3::int8 IS NOT NULL), \
          fsrc AS (SELECT 6::int2 AS type, name::text AS room, $3::int8 AS user_id, \
                          NULL::int8 AS by_user, NULL::int8 AS message_id, \
                          jsonb_strip_nulls(jsonb_build_object('visibility', $2::text, \
                              'role', CASE WHEN $3::int8 IS NULL THEN NULL ELSE 'owner' END)) AS detail, \
                          1::int8 AS ord FROM r), ",
    crate::feed_append!("fsrc"),
    " SELECT (SELECT ok FROM o), count(*) FROM r"
);

/// Creates a room with `visibility` and, if given, `owner` as its owner
/// (an operator's act: no creator is recorded, no hourly cap applies).
pub async fn create_room_as(
    client: &Client,
    name: &str,
    visibility: Visibility,
    owner: Option<UserId>,
) -> Result<AdminCreated, StoreError> {
    let row = client
        .query_one(CREATE_ROOM_AS, &[&name, &visibility.as_str(), &owner])
        .await?;
    let (ok, created): (bool, i64) = (row.get(0), row.get(1));
    Ok(if !ok {
        AdminCreated::NoSuchOwner
    } else if created > 0 {
        AdminCreated::Created
    } else {
        AdminCreated::Exists
    })
}

/// All rooms with their member and message counts, by name.
pub async fn list_rooms(client: &Client) -> Result<Vec<(String, i64, i64)>, StoreError> {
    let rows = client
        .query(
            "SELECT r.name, \
                    (SELECT count(*) FROM room_members m WHERE m.room = r.name), \
                    (SELECT count(*) FROM messages g WHERE g.room = r.name) \
             FROM rooms r ORDER BY r.name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}
