-- Usernames unique under a look-alike key (issue 13): NFKC, full case
-- folding, trimmed, then the UTS #39 confusable skeleton, so "Alice",
-- "alice " and Cyrillic "аlice" cannot stand beside "alice".
--
-- The key is computed in Rust (`auth::username_key`), which SQL cannot
-- do, so this migration only adds the column and its UNIQUE index and
-- leaves the key NULL on every existing row; it cannot fail on existing
-- data. Right after the migrations, the server (and `chat_server
-- migrate`) fills the NULL keys in Rust, oldest account first
-- (`store::backfill_username_keys`): a row whose key another row already
-- holds keeps a NULL key. Such a user (the later of two look-alikes) is
-- refused at its next handshake with 409 "username already taken by
-- another user" until its token carries a name of its own; the key is
-- then set with it. NULLs never collide in a UNIQUE index.
ALTER TABLE users ADD COLUMN IF NOT EXISTS username_key TEXT;
-- (Not "users_username_key": V1's UNIQUE (username) constraint has that name.)
CREATE UNIQUE INDEX IF NOT EXISTS users_by_username_key ON users (username_key);
