-- The server API and the event feed (issue 15).
--
-- feed: every durable change, one row per event, numbered by `seq` in
-- commit order. A transaction appends its events as its LAST statement:
-- it takes feed_head's row lock (UPDATE), draws a contiguous block of seq
-- after the previous holder committed, and keeps the lock until it commits
-- or aborts. So a seq is only ever visible after every lower seq is visible
-- (or was rolled back with its transaction, which also rolls back the head):
-- a reader asking for seq > N never misses a lower number that commits
-- later. See docs/ARCHITECTURE.md, "The event feed".
--
-- type: 1 message.created, 2 message.edited, 3 message.deleted,
--       4 member.kicked, 5 member.banned (1-5: `message_id` is the row of
--       `messages` whose frame is the event: its content is read at read
--       time, so a delete erases it from the feed too), 6 room.created,
--       7 member.added, 8 member.joined, 9 member.left, 10 member.unbanned,
--       11 member.muted, 12 member.unmuted, 13 member.role,
--       14 user.blocked, 15 user.unblocked.
CREATE TABLE IF NOT EXISTS feed (
    seq         BIGINT PRIMARY KEY,
    type        SMALLINT NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    room        VARCHAR(64),
    user_id     BIGINT,
    by_user     BIGINT,
    message_id  BIGINT,
    detail      JSONB
);

-- The feed's head (last seq drawn) and retention horizon (every seq at or
-- below `purged_through` was deleted by retention: asking for less is 410).
CREATE TABLE IF NOT EXISTS feed_head (
    one             BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    seq             BIGINT NOT NULL DEFAULT 0,
    purged_through  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO feed_head (one) VALUES (true) ON CONFLICT DO NOTHING;

-- Webhook cursors: the last seq a 2xx acknowledged, per webhook URL.
CREATE TABLE IF NOT EXISTS webhook_cursors (
    url         TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Users an operator cut off: their handshakes are refused (403) until `until`
-- (NULL: until unblocked).
CREATE TABLE IF NOT EXISTS user_blocks (
    user_id     BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    until       TIMESTAMPTZ,
    reason      TEXT,
    blocked_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The operator (the server API) as the actor of the rows it writes in a
-- stream (a delete, kick or ban): user 0, which no token can name (user ids
-- are 1..2^53-1) and no username can match. Frames and events show it as
-- `by: null`.
INSERT INTO users (id, username, username_key) VALUES (0, '', '')
    ON CONFLICT (id) DO NOTHING;
