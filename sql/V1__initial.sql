-- Initial schema: the design document's tables (users, rooms, messages)
-- with bigint ids, timestamptz, and the indexes both history queries use,
-- plus persisted room membership.

-- Users are upserted from token claims at each handshake, so ids come from
-- the identity provider: no sequence here.
CREATE TABLE IF NOT EXISTS users (
    id          BIGINT PRIMARY KEY,
    username    VARCHAR(64) NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Rooms are created by operators (`chat_server room create NAME`).
CREATE TABLE IF NOT EXISTS rooms (
    id          BIGSERIAL PRIMARY KEY,
    name        VARCHAR(64) NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per message. Writers allocate ids from messages_id_seq in blocks
-- and insert them explicitly, so ids increase within a room and a DM pair.
CREATE TABLE IF NOT EXISTS messages (
    id          BIGSERIAL PRIMARY KEY,
    from_user   BIGINT NOT NULL REFERENCES users(id),
    to_user     BIGINT REFERENCES users(id),      -- NULL for room messages
    room        VARCHAR(64),                      -- NULL for direct messages
    content     TEXT NOT NULL,
    "timestamp" TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT messages_one_target CHECK ((room IS NULL) <> (to_user IS NULL))
);

-- room_history: latest N of a room is a backward range scan of this index.
CREATE INDEX IF NOT EXISTS messages_room_id
    ON messages (room, id) WHERE room IS NOT NULL;

-- dm_history: both directions of one pair share one key (low id, high id).
CREATE INDEX IF NOT EXISTS messages_dm_pair_id
    ON messages (LEAST(from_user, to_user), GREATEST(from_user, to_user), id)
    WHERE to_user IS NOT NULL;

-- Room membership is per user and survives reconnects and restarts.
CREATE TABLE IF NOT EXISTS room_members (
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    room        VARCHAR(64) NOT NULL REFERENCES rooms(name) ON UPDATE CASCADE ON DELETE CASCADE,
    joined_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, room)
);
CREATE INDEX IF NOT EXISTS room_members_room ON room_members (room);
