-- Edits and deletes (issue 14): an edit or a delete is a row of its
-- message's stream (the room, or the DM pair), with its own id from
-- messages_id_seq, committed by the stream's writer like a message.
--
-- kind: 0 a message, 1 an edit of `target` (content: the new content),
--       2 a delete of `target` (content: empty).
-- A message's own row holds its current state: the edited content and
-- `edited_at`, or, once deleted, `deleted` with its content erased (and
-- the content of every edit of it erased too).
-- Every column has a constant default, so adding them rewrites no row,
-- and plain messages are inserted exactly as before.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS kind SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS target BIGINT;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS edited_at TIMESTAMPTZ;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS deleted BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE messages ADD CONSTRAINT messages_kind
    CHECK ((kind = 0 AND target IS NULL) OR (kind IN (1, 2) AND target IS NOT NULL))
    NOT VALID; -- every older row is a message; no scan of the table under lock

-- A delete erases the content of the target's edits: found by this index
-- (partial: plain messages, target NULL, never enter it).
CREATE INDEX IF NOT EXISTS messages_target ON messages (target) WHERE target IS NOT NULL;
