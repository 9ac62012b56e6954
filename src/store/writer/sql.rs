//! The writer's SQL: [`BatchInserter`], one PostgreSQL connection with the
//! writer's statements prepared. Single-node mode inserts a batch with ids
//! reserved beforehand ([`BatchInserter::insert`]); cluster mode stores it in
//! one locking transaction ([`BatchInserter::commit_cluster`]) whose lost
//! commit answer is resolved with [`BatchInserter::resolve`].

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, GenericClient, NoTls, Statement, Transaction};
use tracing::debug;

use super::batch::{columns, fates, has_events, predecessors, streams, Fate};
use super::{refused_deleted, PersistRequest};
use crate::protocol::{Kind, Target, UserId, OPERATOR};
use crate::rooms::{Action, Role};
use crate::store::feed::NewEvent;
use crate::store::Standing;
use crate::store::{stored_message, COLUMNS, DM_LAST, ROOM_LAST};

/// One PostgreSQL connection with the writer's statements prepared: the
/// batch insert, the id reservation and the `client_id` lookup. Public so
/// benchmarks and tests run the very statements the writers run.
pub struct BatchInserter {
    client: Client,
    /// [`INSERT_RETURNING`].
    insert_returning: Statement,
    /// Issue 15: [`INSERT_FEED`], a plain batch with its feed events.
    insert_feed: Statement,
    /// Issue 15: the feed's append (`feed::sql::APPEND`), a transaction's last statement.
    feed_append: Statement,
    next_ids: Statement,
    by_client_id: Statement,
    /// Issue 14: [`EVENT`], one edit or delete.
    event: Statement,
    /// Issue 14: [`event_fate_sql`], what became of an edit or delete not inserted.
    event_fate: Statement,
    /// Issue 14: [`MEMBER_STANDING`], the standing a kick or ban is checked on.
    member_standing: Statement,
    /// Issue 14: [`MEMBER_EVENT`], one kick or ban.
    member_event: Statement,
}

/// What a cluster-mode batch transaction decided, kept until its commit is
/// known to have happened (a lost commit answer is resolved with
/// `txid_status`, never by inserting again).
#[derive(Debug, Clone)]
pub struct ClusterOutcome {
    /// The transaction, for `txid_status`.
    pub xid: i64,
    /// Ids given to the batch's rows, in batch order.
    pub ids: Vec<i64>,
    /// Each row's predecessors (see
    /// [`Committed::prev`](crate::cluster::Committed::prev)); `[0, 0]` for
    /// rows not stored.
    pub prevs: Vec<[i64; 2]>,
    /// Rows not stored (their `client_id` was), with what was stored under it.
    pub fates: Vec<Fate>,
    /// The batch's timestamp.
    pub at: DateTime<Utc>,
}

/// The batch insert from column arrays, skipping rows already stored (by
/// id or by sender and `client_id`), followed by `$tail`.
macro_rules! insert_unnest {
    ($tail:literal) => {
        concat!(
            "INSERT INTO messages \
                  (id, from_user, to_user, room, content, \"timestamp\", client_id) \
             SELECT u.id, u.from_user, u.to_user, u.room, u.content, $6, u.client_id \
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[], $7::text[]) \
                  AS u(id, from_user, to_user, room, content, client_id) \
             ON CONFLICT DO NOTHING",
            $tail
        )
    };
}
/// Single-node mode's insert of a batch of plain messages, in one
/// statement (one transaction); the ids were reserved beforehand. Issue
/// 15: the rows it stores now (not those an earlier attempt stored) get
/// their `message.created` events in the same statement, numbered in id
/// order, the feed's head taken last (`feed_append!`). Returns how many
/// rows it stored.
const INSERT_FEED: &str = concat!(
    "WITH ins AS (",
    insert_unnest!(" RETURNING id, room, from_user"),
    "), src AS (SELECT 1::int2 AS type, room::text AS room, from_user AS user_id, \
                       NULL::int8 AS by_user, id AS message_id, NULL::jsonb AS detail, id AS ord \
                FROM ins), ",
    crate::feed_append!("src"),
    " SELECT count(*)::int8 FROM ins"
);
/// The insert inside a transaction that appends the feed itself, last
/// (cluster mode, and a batch holding edits, deletes, kicks or bans),
/// which tells which rows it stored.
const INSERT_RETURNING: &str = insert_unnest!(" RETURNING id");
/// What is stored under these (sender, `client_id`) pairs, with the
/// `client_id` (column [`CLIENT_ID_COLUMN`]).
fn by_client_id_sql() -> String {
    format!(
        "SELECT {COLUMNS}, m.client_id \
         FROM messages m JOIN users u ON u.id = m.from_user \
         WHERE (m.from_user, m.client_id) IN (SELECT * FROM UNNEST($1::int8[], $2::text[]))"
    )
}
/// The `client_id` column of [`by_client_id_sql`], after [`COLUMNS`].
const CLIENT_ID_COLUMN: usize = 11;
/// Issue 14: one edit (`$8` = 1) or delete (`$8` = 2) of message `$2` by
/// `$3`, as event row `$1` of the same stream (`$4` recipient or `$5` room)
/// at `$7`, applied in the statement that inserts the event: the target
/// must still be a message, not deleted, and (for an edit) by `$3`; it is
/// locked (`FOR UPDATE`), so a concurrent delete committed first makes this
/// one find it deleted and store nothing. An edit replaces the target's
/// content and sets `edited_at`; a delete erases the target's content and
/// that of every edit of it. Returns the event's id when it was stored.
const EVENT: &str = "WITH ok AS ( \
        SELECT id FROM messages \
        WHERE id = $2::int8 AND kind = 0 AND NOT deleted \
          AND ($8::int2 = 2 OR from_user = $3::int8) \
        FOR UPDATE), \
     ins AS ( \
        INSERT INTO messages \
               (id, from_user, to_user, room, content, \"timestamp\", client_id, kind, target) \
        SELECT $1::int8, $3::int8, $4::int8, $5::text, $6::text, $7::timestamptz, $9::text, \
               $8::int2, $2::int8 FROM ok \
        ON CONFLICT DO NOTHING RETURNING id), \
     upd AS ( \
        UPDATE messages SET \
            content = CASE WHEN $8::int2 = 1 THEN $6::text ELSE '' END, \
            edited_at = CASE WHEN $8::int2 = 1 THEN $7::timestamptz ELSE edited_at END, \
            deleted = ($8::int2 = 2) \
        WHERE id = $2::int8 AND EXISTS (SELECT 1 FROM ins)), \
     erase AS ( \
        UPDATE messages SET content = '', deleted = true \
        WHERE $8::int2 = 2 AND target = $2::int8 AND kind = 1 AND EXISTS (SELECT 1 FROM ins)) \
     SELECT id FROM ins";
/// Issue 14: an edit or delete [`EVENT`] did not insert: stored under its
/// own id `$1` by an earlier attempt, or its (sender `$2`, `client_id` `$3`)
/// holds an earlier row (a retry), or neither (its target was deleted).
fn event_fate_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM messages m JOIN users u ON u.id = m.from_user \
         WHERE m.id = $1::int8 \
            OR ($3::text IS NOT NULL AND m.from_user = $2::int8 AND m.client_id = $3::text) \
         ORDER BY m.id = $1::int8 DESC LIMIT 1"
    )
}
/// Issue 14: the actor's (`$3`) and target's (`$4`) roles in room `$1`,
/// their memberships locked in user-id order (`$2`, sorted: the order
/// `Store::moderate` locks in, so no deadlock), and whether the target has
/// a `users` row.
const MEMBER_STANDING: &str = "WITH l AS ( \
        SELECT user_id, role FROM room_members \
        WHERE room = $1::text AND user_id = ANY($2::int8[]) ORDER BY user_id FOR UPDATE) \
     SELECT (SELECT role FROM l WHERE user_id = $3::int8), \
            (SELECT role FROM l WHERE user_id = $4::int8), \
            EXISTS (SELECT 1 FROM users WHERE id = $4::int8)";
/// Issue 14: a kick (`$7` = 3) or ban (`$7` = 4) of user `$3` from room
/// `$2` by `$4`, as event row `$1` of the room's stream at `$6` (reason
/// `$5`, empty: none; a ban's end `$8`, also kept in the row's
/// `edited_at`): ends the membership, writes the ban and the audit row
/// with the event's id, in the batch's transaction.
const MEMBER_EVENT: &str = "WITH del AS ( \
        DELETE FROM room_members WHERE room = $2::text AND user_id = $3::int8), \
     ins AS ( \
        INSERT INTO messages \
               (id, from_user, room, content, \"timestamp\", kind, target, edited_at) \
        VALUES ($1::int8, $4::int8, $2::text, $5::text, $6::timestamptz, $7::int2, $3::int8, \
                $8::timestamptz)), \
     ban AS ( \
        INSERT INTO room_bans (room, user_id, until, banned_by, reason, event_id) \
        SELECT $2::text, $3::int8, $8::timestamptz, NULLIF($4::int8, 0), NULLIF($5::text, ''), $1::int8 \
        WHERE $7::int2 = 4 \
        ON CONFLICT (room, user_id) DO UPDATE SET until = EXCLUDED.until, \
            banned_by = EXCLUDED.banned_by, reason = EXCLUDED.reason, \
            event_id = EXCLUDED.event_id, banned_at = now()) \
     INSERT INTO moderation_log (room, actor, action, target, reason, until, event_id) \
     VALUES ($2::text, NULLIF($4::int8, 0), CASE WHEN $7::int2 = 4 THEN 'banned' ELSE 'kicked' END, \
             $3::int8, NULLIF($5::text, ''), $8::timestamptz, $1::int8)";
/// `$1` fresh ids from the sequence.
const NEXT_IDS: &str = "SELECT nextval('messages_id_seq')::int8 FROM generate_series(1, $1::int8)";
/// Cluster mode: the batch transaction's id, kept to resolve a lost commit answer.
const TXID: &str = "SELECT txid_current()::int8";
/// Cluster mode: whether that transaction committed.
const TXID_STATUS: &str = "SELECT txid_status($1::int8)";
/// Cluster mode: locks the batch's rooms, by name.
const LOCK_ROOMS: &str =
    "SELECT name FROM rooms WHERE name = ANY($1::text[]) ORDER BY name FOR NO KEY UPDATE";
/// Cluster mode: locks the batch's DM users (after its rooms), by id.
const LOCK_USERS: &str =
    "SELECT id FROM users WHERE id = ANY($1::int8[]) ORDER BY id FOR NO KEY UPDATE";

impl BatchInserter {
    /// Connects (driving the connection on the current runtime) and prepares.
    pub async fn connect(database_url: &str) -> Result<BatchInserter, tokio_postgres::Error> {
        let mut cfg: tokio_postgres::Config = database_url.parse()?;
        cfg.connect_timeout(Duration::from_secs(2));
        cfg.application_name("chat_server writer");
        let (client, connection) = cfg.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "writer connection ended");
            }
        });
        let (by_client_id_text, event_fate_text) = (by_client_id_sql(), event_fate_sql());
        let (
            insert_returning,
            insert_feed,
            next_ids,
            by_client_id,
            event,
            event_fate,
            member_standing,
            member_event,
            feed_append,
        ) = tokio::try_join!(
            client.prepare(INSERT_RETURNING),
            client.prepare(INSERT_FEED),
            client.prepare(NEXT_IDS),
            client.prepare(&by_client_id_text),
            client.prepare(EVENT),
            client.prepare(&event_fate_text),
            client.prepare(MEMBER_STANDING),
            client.prepare(MEMBER_EVENT),
            client.prepare(crate::store::feed::sql::APPEND)
        )?;
        Ok(BatchInserter {
            client,
            insert_returning,
            insert_feed,
            next_ids,
            by_client_id,
            event,
            event_fate,
            member_standing,
            member_event,
            feed_append,
        })
    }

    /// Sets `synchronous_commit` for this connection's commits. Off, a
    /// commit returns before its WAL is flushed: lower latency, but a
    /// PostgreSQL or OS crash may lose the last fraction of a second of
    /// acknowledged messages (a crash of this server loses nothing either way).
    pub async fn set_synchronous_commit(&self, on: bool) -> Result<(), tokio_postgres::Error> {
        let value = if on { "on" } else { "off" };
        self.client
            .batch_execute(&format!("SET synchronous_commit = {value}"))
            .await
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Reserves `n` fresh ids from `messages_id_seq`, ascending.
    pub async fn reserve_ids(&self, n: usize) -> Result<Vec<i64>, tokio_postgres::Error> {
        draw_ids(&self.client, &self.next_ids, n).await
    }

    /// Inserts `batch` with the given ids and time in one statement (one
    /// transaction). Rows whose id is already stored are skipped, which
    /// makes a retry after an unknown outcome safe; so are rows whose
    /// (sender, `client_id`) is already stored. Returns the rows inserted.
    /// The rows stored now get their `message.created` events in the same
    /// statement (issue 15).
    pub async fn insert(
        &self,
        batch: &[PersistRequest],
        ids: &[i64],
        at: DateTime<Utc>,
    ) -> Result<u64, tokio_postgres::Error> {
        let (from, to, room, content, client_id) = columns(batch.iter());
        let row = self
            .client
            .query_one(
                &self.insert_feed,
                &[&ids, &from, &to, &room, &content, &at, &client_id],
            )
            .await?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// Issue 14: stores a batch holding edits or deletes in one transaction:
    /// its plain messages with the one insert, then each edit or delete in
    /// batch (id) order (the `EVENT` statement). Like [`insert`](Self::insert), a retry
    /// with the same ids is safe. Returns each row's [`Fate`].
    pub async fn insert_with_events(
        &mut self,
        batch: &[PersistRequest],
        ids: &[i64],
        at: DateTime<Utc>,
    ) -> Result<Vec<Fate>, tokio_postgres::Error> {
        let tx = self.client.transaction().await?;
        let plain = || batch.iter().filter(|r| r.kind == Kind::Message);
        let plain_ids: Vec<i64> = batch
            .iter()
            .zip(ids)
            .filter(|(r, _)| r.kind == Kind::Message)
            .map(|(_, id)| *id)
            .collect();
        let mut fates_out = vec![Fate::Stored; batch.len()];
        // Issue 15: the rows stored by this attempt, whose events it appends.
        let mut new_ids: HashSet<i64> = HashSet::new();
        if !plain_ids.is_empty() {
            let (from, to, room, content, client_id) = columns(plain());
            new_ids = tx
                .query(
                    &self.insert_returning,
                    &[&plain_ids, &from, &to, &room, &content, &at, &client_id],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if new_ids.len() < plain_ids.len() && plain().any(|r| r.client_id.is_some()) {
                fates_out = fates_by_client_id(&tx, &self.by_client_id, batch, ids).await?;
            }
        }
        let events = apply_events(
            &tx,
            EventStatements {
                event: &self.event,
                event_fate: &self.event_fate,
                member_standing: &self.member_standing,
                member_event: &self.member_event,
            },
            batch,
            ids,
            at,
        )
        .await?;
        for (i, fate, new) in events {
            if new {
                new_ids.insert(ids[i]);
            }
            fates_out[i] = fate;
        }
        crate::store::feed::append(&tx, &self.feed_append, &feed_events(batch, ids, &new_ids))
            .await?;
        tx.commit().await?;
        Ok(fates_out)
    }

    /// Cluster mode: stores the batch in one transaction that locks its
    /// rooms and its DM users (sorted: rooms by name, then users by id, so
    /// concurrent batches on any node cannot deadlock), reads each stream's
    /// last id, takes ids from the sequence *inside* the lock and inserts.
    /// Within a stream, ids therefore increase in commit order across every
    /// node, and each row's predecessor is exact. `pending` is set just
    /// before the commit is sent: if its answer is lost, the caller asks
    /// [`resolve`](Self::resolve) instead of inserting again.
    pub async fn commit_cluster(
        &mut self,
        batch: &[PersistRequest],
        pending: &mut Option<ClusterOutcome>,
    ) -> Result<ClusterOutcome, tokio_postgres::Error> {
        let (rooms, users) = streams(batch);
        let tx = self.client.transaction().await?;
        let xid: i64 = tx.query_one(TXID, &[]).await?.get(0);
        if !rooms.is_empty() {
            tx.query(LOCK_ROOMS, &[&rooms]).await?;
        }
        if !users.is_empty() {
            tx.query(LOCK_USERS, &[&users]).await?;
        }
        // Read after the locks: every earlier commit of these streams is visible.
        let room_last = last_ids(&tx, ROOM_LAST, &rooms).await?;
        let user_last = last_ids(&tx, DM_LAST, &users).await?;
        let ids = draw_ids(&tx, &self.next_ids, batch.len()).await?;
        let at = Utc::now().trunc_subsecs(6);
        // Issue 14: a batch of plain messages is one insert, as before; one
        // holding edits or deletes inserts its messages, then applies each
        // of them in id order, in the same transaction.
        let events = has_events(batch);
        let plain = || batch.iter().filter(|r| !events || r.kind == Kind::Message);
        let plain_ids: Vec<i64> = batch
            .iter()
            .zip(&ids)
            .filter(|(r, _)| !events || r.kind == Kind::Message)
            .map(|(_, id)| *id)
            .collect();
        let (from, to, room, content, client_id) = columns(plain());
        let mut inserted: HashSet<i64> = tx
            .query(
                &self.insert_returning,
                &[&plain_ids, &from, &to, &room, &content, &at, &client_id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut fates_out = Vec::new();
        if inserted.len() < plain_ids.len() {
            fates_out = fates_by_client_id(&tx, &self.by_client_id, batch, &ids).await?;
        }
        if events {
            if fates_out.is_empty() {
                fates_out = vec![Fate::Stored; batch.len()];
            }
            let applied = apply_events(
                &tx,
                EventStatements {
                    event: &self.event,
                    event_fate: &self.event_fate,
                    member_standing: &self.member_standing,
                    member_event: &self.member_event,
                },
                batch,
                &ids,
                at,
            )
            .await?;
            for (i, fate, new) in applied {
                if new {
                    inserted.insert(ids[i]);
                }
                fates_out[i] = fate;
            }
        }
        // Issue 15: the batch's events, appended last (the feed's head is
        // the last lock the transaction takes).
        crate::store::feed::append(&tx, &self.feed_append, &feed_events(batch, &ids, &inserted))
            .await?;
        let prevs = predecessors(batch, &ids, &inserted, room_last, user_last);
        let outcome = ClusterOutcome {
            xid,
            ids,
            prevs,
            fates: fates_out,
            at,
        };
        *pending = Some(outcome.clone());
        tx.commit().await?;
        Ok(outcome)
    }

    /// Whether a transaction whose commit answer was lost committed:
    /// `Some(true)` committed, `Some(false)` aborted (or unknown to the
    /// server: never committed), `None` still running.
    pub async fn resolve(&self, xid: i64) -> Result<Option<bool>, tokio_postgres::Error> {
        let status: Option<String> = self.client.query_one(TXID_STATUS, &[&xid]).await?.get(0);
        Ok(match status.as_deref() {
            Some("committed") => Some(true),
            Some("in progress") => None,
            _ => Some(false),
        })
    }

    /// What became of each row of `batch`, given `ids` by an insert that
    /// skipped rows: looks its `client_id`s up (see [`Fate`]).
    pub async fn fates(
        &self,
        batch: &[PersistRequest],
        ids: &[i64],
    ) -> Result<Vec<Fate>, tokio_postgres::Error> {
        fates_by_client_id(&self.client, &self.by_client_id, batch, ids).await
    }
}

/// Draws `n` fresh ids from `messages_id_seq`, ascending: a block reserved
/// ahead (single-node mode) or a batch's ids inside its transaction
/// (cluster mode). `next_ids` is [`NEXT_IDS`] prepared on that connection.
async fn draw_ids(
    client: &impl GenericClient,
    next_ids: &Statement,
    n: usize,
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let want = i64::try_from(n).unwrap_or(i64::MAX);
    let rows = client.query(next_ids, &[&want]).await?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Cluster mode: each stream's last stored id (`query`: [`ROOM_LAST`] for
/// rooms, [`DM_LAST`] for users), read inside the batch transaction after
/// its locks; nothing is asked for no streams.
async fn last_ids<K, T>(
    tx: &Transaction<'_>,
    query: &str,
    streams: &[T],
) -> Result<HashMap<K, i64>, tokio_postgres::Error>
where
    K: for<'a> FromSql<'a> + Eq + Hash,
    T: ToSql + Sync,
{
    if streams.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(tx
        .query(query, &[&streams])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The one `client_id` lookup, on the writer's connection (single-node
/// mode) or inside its batch transaction (cluster mode): finds what is
/// stored under the batch's (sender, `client_id`) pairs and tells each row's
/// [`Fate`]. `by_client_id` is [`BY_CLIENT_ID`] prepared on that connection.
async fn fates_by_client_id(
    client: &impl GenericClient,
    by_client_id: &Statement,
    batch: &[PersistRequest],
    ids: &[i64],
) -> Result<Vec<Fate>, tokio_postgres::Error> {
    let (from, client_ids): (Vec<UserId>, Vec<&str>) = batch
        .iter()
        .filter_map(|r| r.client_id.as_deref().map(|c| (r.from, c)))
        .unzip();
    let found = client
        .query(by_client_id, &[&from, &client_ids])
        .await?
        .iter()
        .map(|r| (stored_message(r), r.get::<_, String>(CLIENT_ID_COLUMN)))
        .collect();
    Ok(fates(batch, ids, found))
}

/// Issue 14: applies the batch's edits and deletes, in batch (id) order,
/// inside `tx` after its messages were inserted ([`EVENT`], then
/// [`event_fate_sql`] for one that stored nothing). Returns each event
/// row's index in the batch with its [`Fate`]: stored (now, or under its
/// own id by an earlier attempt), a retried `client_id`'s original, or
/// refused (its target was deleted first); and whether this attempt
/// stored it (issue 15: its event is appended to the feed).
async fn apply_events(
    tx: &Transaction<'_>,
    st: EventStatements<'_>,
    batch: &[PersistRequest],
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<Vec<(usize, Fate, bool)>, tokio_postgres::Error> {
    let EventStatements {
        event, event_fate, ..
    } = st;
    let mut out = Vec::new();
    for (i, (r, id)) in batch.iter().zip(ids).enumerate() {
        if let Kind::Member { user, ban, seconds } = r.kind {
            let (fate, new) = apply_member(tx, st, r, *id, user, ban, seconds, at).await?;
            out.push((i, fate, new));
            continue;
        }
        let Some(target) = r.kind.target_message() else {
            continue;
        };
        let (to, room): (Option<UserId>, Option<&str>) = match &r.target {
            Target::Room(name) => (None, Some(name)),
            Target::User(u) => (Some(*u), None),
        };
        let code = r.kind.code();
        let client_id = r.client_id.as_deref();
        let stored = tx
            .query_opt(
                event,
                &[
                    id, &target, &r.from, &to, &room, &r.content, &at, &code, &client_id,
                ],
            )
            .await?
            .is_some();
        let fate = if stored {
            Fate::Stored
        } else {
            match tx.query_opt(event_fate, &[id, &r.from, &client_id]).await? {
                Some(row) => {
                    let found = stored_message(&row);
                    if found.id == *id {
                        Fate::Stored
                    } else {
                        Fate::Duplicate(found)
                    }
                }
                None => Fate::Refused(refused_deleted(r.kind)),
            }
        };
        out.push((i, fate, stored));
    }
    Ok(out)
}

/// The statements of the issue-14 events, prepared on the writer's connection.
#[derive(Clone, Copy)]
struct EventStatements<'a> {
    event: &'a Statement,
    event_fate: &'a Statement,
    member_standing: &'a Statement,
    member_event: &'a Statement,
}

/// Issue 14: applies one kick or ban (`ban`) of `user` by `r.from` as
/// event row `id`, inside the batch's transaction: the actor's and
/// target's memberships are locked and read, `rooms::decide` applies the
/// rules (the same function every door's changes go through), and only
/// then is the membership ended, the ban and the audit row written
/// ([`MEMBER_EVENT`]). A retry of a batch that committed finds its row.
#[allow(clippy::too_many_arguments)]
async fn apply_member(
    tx: &Transaction<'_>,
    st: EventStatements<'_>,
    r: &PersistRequest,
    id: i64,
    user: UserId,
    ban: bool,
    seconds: Option<i64>,
    at: DateTime<Utc>,
) -> Result<(Fate, bool), tokio_postgres::Error> {
    let Target::Room(room) = &r.target else {
        return Ok((
            Fate::Refused("a kick or ban needs a room".to_owned()),
            false,
        ));
    };
    let none: Option<&str> = None;
    if tx
        .query_opt(st.event_fate, &[&id, &r.from, &none])
        .await?
        .is_some()
    {
        // An earlier attempt of this batch committed it (and its event).
        return Ok((Fate::Stored, false));
    }
    // Issue 15: the operator (the server API) acts with its own authority.
    let by = (r.from != OPERATOR).then_some(r.from);
    let mut users = vec![r.from, user];
    users.sort_unstable();
    users.dedup();
    let row = tx
        .query_one(st.member_standing, &[&&**room, &users, &r.from, &user])
        .await?;
    let role = |i: usize| row.get::<_, Option<&str>>(i).and_then(Role::parse);
    let standing = Standing {
        room_exists: true,
        actor: role(0),
        target: role(1),
        target_exists: row.get(2),
        target_rooms: 0,
    };
    let action = if ban { Action::Ban } else { Action::Kick };
    if let Err(refused) = crate::rooms::decide(&standing, by, user, action, usize::MAX) {
        return Ok((Fate::Refused(refused.message(room, user)), false));
    }
    let until = ban_until(at, seconds);
    tx.execute(
        st.member_event,
        &[
            &id,
            &&**room,
            &user,
            &r.from,
            &r.content,
            &at,
            &r.kind.code(),
            &until,
        ],
    )
    .await?;
    Ok((Fate::Stored, true))
}

/// Issue 15: the feed events of the rows of `batch` (ids `ids`) that this
/// attempt stored (`new`), in id order.
fn feed_events(batch: &[PersistRequest], ids: &[i64], new: &HashSet<i64>) -> Vec<NewEvent> {
    let mut events: Vec<NewEvent> = batch
        .iter()
        .zip(ids)
        .filter(|(_, id)| new.contains(id))
        .map(|(r, id)| NewEvent::of_row(*id, r.kind, r.from, &r.target))
        .collect();
    events.sort_by_key(|e| e.message);
    events
}

/// When a ban of `seconds` committed at `at` ends (`None`: no end).
pub(crate) fn ban_until(at: DateTime<Utc>, seconds: Option<i64>) -> Option<DateTime<Utc>> {
    seconds.map(|s| at + chrono::Duration::seconds(s))
}
