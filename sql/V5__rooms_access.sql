-- Rooms people can run (issue 14, access part): visibility, roles, mutes,
-- bans (table only: written by kick/ban, the next step) and the audit log.
--
-- Existing rooms stay public and ownerless: the defaults below apply to
-- every existing row, and no member gets a role above `member`.

ALTER TABLE rooms ADD COLUMN IF NOT EXISTS visibility TEXT NOT NULL DEFAULT 'public'
    CONSTRAINT rooms_visibility CHECK (visibility IN ('public', 'private'));

-- A member's role is part of its membership: leaving drops it.
ALTER TABLE room_members ADD COLUMN IF NOT EXISTS role TEXT NOT NULL DEFAULT 'member'
    CONSTRAINT room_members_role CHECK (role IN ('owner', 'moderator', 'member'));

-- `members` pages a room's members by user id; this index also serves
-- every lookup the room-only one did.
CREATE INDEX IF NOT EXISTS room_members_room_user ON room_members (room, user_id);
DROP INDEX IF EXISTS room_members_room;

-- Mutes are kept by (room, user), not by membership, so leaving and
-- joining again does not lift one. `until` NULL: until `unmute`.
-- `muted_by` NULL: an operator (the server API).
CREATE TABLE IF NOT EXISTS room_mutes (
    room        VARCHAR(64) NOT NULL REFERENCES rooms(name) ON UPDATE CASCADE ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    until       TIMESTAMPTZ,
    muted_by    BIGINT REFERENCES users(id) ON DELETE SET NULL,
    muted_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (room, user_id)
);
-- The handshake loads a user's mutes.
CREATE INDEX IF NOT EXISTS room_mutes_user ON room_mutes (user_id);

-- Bans, the same shape (kick/ban, committed in the room's stream by its
-- writer, are the next step; nothing writes this table yet). `event_id`:
-- the ban's id in the room's message stream.
CREATE TABLE IF NOT EXISTS room_bans (
    room        VARCHAR(64) NOT NULL REFERENCES rooms(name) ON UPDATE CASCADE ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    until       TIMESTAMPTZ,
    banned_by   BIGINT REFERENCES users(id) ON DELETE SET NULL,
    reason      TEXT,
    event_id    BIGINT,
    banned_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (room, user_id)
);
CREATE INDEX IF NOT EXISTS room_bans_user ON room_bans (user_id);

-- Every moderation action (who, what, whom, where, when, why, until what),
-- written in the transaction that makes the change; the server API will
-- page it by (room, id). No foreign keys: the log outlives rooms and users.
-- `actor` NULL: an operator. `action` is the `member` event's action.
-- `event_id`: for actions ordered in the room's stream (kick, ban), the
-- event's message id.
CREATE TABLE IF NOT EXISTS moderation_log (
    id          BIGSERIAL PRIMARY KEY,
    room        VARCHAR(64) NOT NULL,
    actor       BIGINT,
    action      TEXT NOT NULL CONSTRAINT moderation_log_action CHECK (action IN
                    ('invited', 'role', 'muted', 'unmuted', 'kicked', 'banned', 'unbanned')),
    target      BIGINT NOT NULL,
    role        TEXT,
    reason      TEXT,
    until       TIMESTAMPTZ,
    event_id    BIGINT,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS moderation_log_room_id ON moderation_log (room, id);
