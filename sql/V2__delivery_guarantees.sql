-- Delivery guarantees (issue #5): idempotent sends, DM recovery by user,
-- read positions.

-- A client may tag a message with its own id; (sender, client_id) is
-- unique, so a retried send finds the original instead of a second row.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS client_id VARCHAR(64);
CREATE UNIQUE INDEX IF NOT EXISTS messages_sender_client_id
    ON messages (from_user, client_id) WHERE client_id IS NOT NULL;

-- dm_sync: a user's DMs newer than an id, in both directions.
CREATE INDEX IF NOT EXISTS messages_dm_to_id
    ON messages (to_user, id) WHERE to_user IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_dm_from_id
    ON messages (from_user, id) WHERE to_user IS NOT NULL;

-- How far each member has read each room (only moves forward).
ALTER TABLE room_members ADD COLUMN IF NOT EXISTS read_up_to BIGINT NOT NULL DEFAULT 0;
