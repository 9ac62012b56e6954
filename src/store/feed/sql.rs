//! The feed's SQL. Every append takes `feed_head`'s row lock as the last
//! lock of its transaction (see [`feed_append!`](crate::feed_append)).

/// The CTEs that append one feed row per row of CTE `$src` (columns
/// `type int2, room text, user_id int8, by_user int8, message_id int8,
/// detail jsonb, ord int8`, numbered in `ord` order), to put at the END of
/// a statement's `WITH` list. `$src` is read to completion first (the
/// count), then the head is advanced by that count, holding its row lock
/// until the transaction ends; nothing is drawn (and nothing locked) for
/// zero rows. Ends with CTE `feed_ins` (`RETURNING seq`).
#[macro_export]
macro_rules! feed_append {
    ($src:literal) => {
        concat!(
            "feed_n AS (SELECT count(*)::int8 AS n FROM ",
            $src,
            "), \
             feed_h AS (UPDATE feed_head SET seq = feed_head.seq + feed_n.n FROM feed_n \
                        WHERE feed_n.n > 0 RETURNING feed_head.seq - feed_n.n AS base), \
             feed_ins AS (INSERT INTO feed (seq, type, room, user_id, by_user, message_id, detail) \
                        SELECT feed_h.base + row_number() OVER (ORDER BY s.ord), s.type, s.room, \
                               s.user_id, s.by_user, s.message_id, s.detail \
                        FROM feed_h, ",
            $src,
            " s RETURNING seq)"
        )
    };
}

/// Appends the events given as parallel arrays (`$1` types, `$2` rooms,
/// `$3` users, `$4` actors, `$5` message ids, `$6` details), in array
/// order. Run as the last statement of a transaction.
pub const APPEND: &str = concat!(
    "WITH src AS (SELECT * FROM UNNEST($1::int2[], $2::text[], $3::int8[], $4::int8[], \
                                       $5::int8[], $6::jsonb[]) WITH ORDINALITY \
                 AS s(type, room, user_id, by_user, message_id, detail, ord)), ",
    feed_append!("src"),
    " SELECT count(*)::int8 FROM feed_ins"
);

/// Up to `$2` events after seq `$1`, in seq order, each with the stored
/// row of its message (current state: an erased content reads erased).
pub const READ: &str = "SELECT f.seq, f.type, f.at, f.room, f.user_id, f.by_user, f.detail, \
            m.id, m.from_user, u.username, m.content, m.\"timestamp\", m.room, m.to_user, \
            m.kind, m.target, m.edited_at, m.deleted \
     FROM feed f \
     LEFT JOIN messages m ON m.id = f.message_id \
     LEFT JOIN users u ON u.id = m.from_user \
     WHERE f.seq > $1 ORDER BY f.seq LIMIT $2";

/// The head (last seq drawn, committed or in flight) and the retention
/// horizon.
pub const HEAD: &str = "SELECT seq, purged_through FROM feed_head";

/// The advisory-lock class of the feed's jobs (`pg_*advisory*lock(int4,
/// int4)`, a key space apart from the single-`bigint` locks): "feed".
pub const LOCK_CLASS: i32 = 0x6665_6564;

/// The second key of the retention lock (a webhook's is its URL's hash,
/// never 0: see [`super::upkeep::webhook_lock_key`]).
pub const RETENTION_LOCK: i32 = 0;

/// Tries the retention lock for the current transaction.
pub const TRY_RETENTION_LOCK: &str = "SELECT pg_try_advisory_xact_lock($1::int4, $2::int4)";

/// The last seq of the longest prefix after `$1` (at most `$3` events)
/// whose events are all older than `$2` seconds; NULL when the first is not.
pub const PURGEABLE: &str = "WITH c AS ( \
        SELECT seq, bool_and(at < now() - make_interval(secs => $2::float8)) \
                    OVER (ORDER BY seq) AS old \
        FROM feed WHERE seq > $1 ORDER BY seq LIMIT $3) \
     SELECT max(seq) FROM c WHERE old";

/// Deletes the events `$1 < seq <= $2`.
pub const PURGE: &str = "DELETE FROM feed WHERE seq > $1 AND seq <= $2";

/// Moves the retention horizon (the head's row lock: the LAST statement).
pub const SET_PURGED: &str = "UPDATE feed_head SET purged_through = $1";

/// Tries a webhook's session-level lock (held until the connection ends).
pub const TRY_WEBHOOK_LOCK: &str = "SELECT pg_try_advisory_lock($1::int4, $2::int4)";

/// A webhook's cursor, created at the feed's head the first time.
pub const CURSOR_INIT: &str = "WITH ins AS ( \
        INSERT INTO webhook_cursors (url, seq) SELECT $1, seq FROM feed_head \
        ON CONFLICT (url) DO NOTHING RETURNING seq) \
     SELECT seq FROM ins UNION ALL SELECT seq FROM webhook_cursors WHERE url = $1";

/// Stores a webhook's cursor.
pub const CURSOR_SET: &str =
    "UPDATE webhook_cursors SET seq = $2, updated_at = now() WHERE url = $1";

/// A webhook's cursor (NULL row: never configured).
pub const CURSOR_GET: &str = "SELECT seq FROM webhook_cursors WHERE url = $1";
