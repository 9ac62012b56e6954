-- Rooms created per user (issue 13): who created each room, so that
-- `create_room` can be capped per user over a sliding hour
-- (--max-rooms-created-per-hour), across restarts and cluster nodes.
-- `created_at` exists since V1; rooms made before this migration, and by
-- `chat_server room create`, have no creator and count for no one.
ALTER TABLE rooms ADD COLUMN IF NOT EXISTS created_by BIGINT
    REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE rooms ADD COLUMN IF NOT EXISTS created_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- The cap's count is a range scan of one user's recent rooms.
CREATE INDEX IF NOT EXISTS rooms_created_by_at
    ON rooms (created_by, created_at) WHERE created_by IS NOT NULL;
