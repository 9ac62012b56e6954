-- Kicks and bans (issue 14, moderation part): a kick or ban is an event of
-- the room's stream, a row of `messages` with its own id from
-- messages_id_seq, committed by the room's writer in the transaction that
-- ends the membership, writes `room_bans` (a ban) and the `moderation_log`
-- row (with `event_id`, the row's id).
--
-- kind: 3 a kick, 4 a ban of user `target` by `from_user` (content: the
--       reason, empty for none; edited_at: when a ban ends, NULL: until
--       `unban` or a kick).
-- Histories and unread counts read kind 0 only; a replay (`join` with
-- `since`) and the cluster gap fill include these rows as `member` frames.
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_kind;
ALTER TABLE messages ADD CONSTRAINT messages_kind
    CHECK ((kind = 0 AND target IS NULL) OR (kind IN (1, 2, 3, 4) AND target IS NOT NULL))
    NOT VALID; -- older rows satisfy it; no scan of the table under lock
