//! Room access in PostgreSQL (issue 14): memberships with roles, mutes,
//! the audit log (`moderation_log`) and member lists. The rules themselves
//! are `crate::rooms::rules`; [`Store::moderate`] reads what they need,
//! asks the caller's decision and commits the change in one transaction.

use chrono::{DateTime, Utc};

use super::feed::{self, EventType, NewEvent};
use super::{Store, StoreError};
use crate::protocol::UserId;
use crate::rooms::{Action, Mute, Refused, Role};

/// A change to a member's standing in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Give the member this role.
    SetRole(Role),
    /// Make the user a member.
    Invite,
    /// Mute the member for this many seconds (`None`: until unmuted).
    Mute(Option<i64>),
    /// Lift the member's mute.
    Unmute,
    /// Lift the user's ban (issue 14; kicks and bans themselves are
    /// committed by the room's writer, in the room's stream).
    Unban,
}

impl Change {
    /// The rule this change is checked against.
    pub fn action(self) -> Action {
        match self {
            Change::SetRole(role) => Action::SetRole(role),
            Change::Invite => Action::Invite,
            Change::Mute(_) => Action::Mute,
            Change::Unmute => Action::Unmute,
            Change::Unban => Action::Unban,
        }
    }
}

/// What the rules are given: read in the transaction, with both
/// memberships locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The room exists.
    pub room_exists: bool,
    /// The actor's role (`None`: not a member, or an operator).
    pub actor: Option<Role>,
    /// The target's role (`None`: not a member).
    pub target: Option<Role>,
    /// The target has a `users` row.
    pub target_exists: bool,
    /// How many rooms the target belongs to.
    pub target_rooms: i64,
}

/// What a committed change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The role was set (`changed`: it differed).
    Role {
        /// False when the member had that role already (nothing written).
        changed: bool,
    },
    /// The user is now a member.
    Invited {
        /// The room's last stored message id, read after the membership
        /// was written (the cluster link's floor).
        last: i64,
        /// The invitee's mute in the room, if one holds (mutes outlive
        /// memberships).
        mute: Option<Mute>,
    },
    /// The member is muted.
    Muted(Mute),
    /// The mute was lifted (`changed`: one held).
    Unmuted {
        /// False when no mute held (nothing written).
        changed: bool,
    },
    /// The ban was lifted (`changed`: one held).
    Unbanned {
        /// False when no ban held (nothing written).
        changed: bool,
    },
}

/// One member of a room, as `members` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// The member's user id.
    pub user: UserId,
    /// Its username.
    pub username: String,
    /// Its role.
    pub role: Role,
    /// Its mute, if one holds.
    pub mute: Option<Mute>,
}

/// A `join`'s outcome for a room the user may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The room's last stored message id (0: none), read before the
    /// membership is registered on the shard.
    pub last: i64,
    /// True when this join made the user a member (false: it was one).
    pub new: bool,
    /// The user's mute in the room, if one holds.
    pub mute: Option<Mute>,
    /// Issue 14: a ban holds (the join was refused, nothing written).
    pub banned: bool,
    /// When that ban ends (`None`: until `unban`).
    pub ban_until: Option<DateTime<Utc>>,
}

/// A connecting user's active mutes, room by room.
pub type Mutes = Vec<(String, Mute)>;

const STANDING: &str = "SELECT EXISTS (SELECT 1 FROM rooms WHERE name = $1), \
            EXISTS (SELECT 1 FROM users WHERE id = $2), \
            (SELECT count(*) FROM room_members WHERE user_id = $2)";
/// Locks the actor's and the target's memberships, in user order (no deadlock).
const LOCK_MEMBERS: &str = "SELECT user_id, role FROM room_members \
     WHERE room = $1 AND user_id = ANY($2) ORDER BY user_id FOR UPDATE";
const SET_ROLE: &str = "UPDATE room_members SET role = $3 \
     WHERE room = $1 AND user_id = $2 AND role <> $3";
/// Makes $2 a member of $1 unless already one; an active ban holds (the
/// second column says so, and nothing is inserted).
const INVITE: &str = "WITH b AS (SELECT 1 FROM room_bans WHERE room = $1 AND user_id = $2 \
           AND (until IS NULL OR until > now())), \
     ins AS (INSERT INTO room_members (user_id, room) SELECT $2, $1 \
             WHERE NOT EXISTS (SELECT 1 FROM b) ON CONFLICT DO NOTHING RETURNING 1) \
     SELECT EXISTS (SELECT 1 FROM ins), EXISTS (SELECT 1 FROM b)";
const AFTER_INVITE: &str =
    "SELECT COALESCE((SELECT max(id) FROM messages WHERE room = $1), 0)::int8, \
            EXISTS (SELECT 1 FROM room_mutes WHERE room = $1 AND user_id = $2 \
                    AND (until IS NULL OR until > now())), \
            (SELECT until FROM room_mutes WHERE room = $1 AND user_id = $2)";
const MUTE: &str = "INSERT INTO room_mutes (room, user_id, until, muted_by) \
     VALUES ($1, $2, CASE WHEN $3::int8 IS NULL THEN NULL \
                          ELSE now() + $3::int8 * interval '1 second' END, $4) \
     ON CONFLICT (room, user_id) DO UPDATE \
       SET until = EXCLUDED.until, muted_by = EXCLUDED.muted_by, muted_at = now() \
     RETURNING until";
const UNMUTE: &str = "DELETE FROM room_mutes WHERE room = $1 AND user_id = $2 \
     RETURNING (until IS NULL OR until > now())";
const UNBAN: &str = "DELETE FROM room_bans WHERE room = $1 AND user_id = $2 \
     RETURNING (until IS NULL OR until > now())";
const AUDIT: &str =
    "INSERT INTO moderation_log (room, actor, action, target, role, until, reason) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
const MEMBERS: &str = "SELECT m.user_id, u.username, m.role, mu.user_id IS NOT NULL, mu.until \
     FROM room_members m JOIN users u ON u.id = m.user_id \
     LEFT JOIN room_mutes mu ON mu.room = m.room AND mu.user_id = m.user_id \
                            AND (mu.until IS NULL OR mu.until > now()) \
     WHERE m.room = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3";

/// A stored role name (the table's CHECK allows only these).
fn role_of(s: &str) -> Role {
    Role::parse(s).unwrap_or(Role::Member)
}

impl Store {
    /// Applies `change` to `target` in `room` for `by` (`None`: an
    /// operator) if `decide`, given both memberships (locked) and the
    /// target's row, allows it; the change and its `moderation_log` row
    /// commit together. A change that changes nothing writes nothing.
    pub async fn moderate(
        &self,
        room: &str,
        by: Option<UserId>,
        target: UserId,
        change: Change,
        reason: Option<&str>,
        decide: impl FnOnce(&Standing) -> Result<(), Refused>,
    ) -> Result<Result<Applied, Refused>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (standing, lock) =
            tokio::try_join!(tx.prepare_cached(STANDING), tx.prepare_cached(LOCK_MEMBERS))?;
        let row = tx.query_one(&standing, &[&room, &target]).await?;
        let users: Vec<UserId> = by.into_iter().chain([target]).collect();
        let members = tx.query(&lock, &[&room, &users]).await?;
        let role = |user: Option<UserId>| {
            let user = user?;
            members
                .iter()
                .find(|m| m.get::<_, UserId>(0) == user)
                .map(|m| role_of(m.get(1)))
        };
        let s = Standing {
            room_exists: row.get(0),
            actor: role(by),
            target: role(Some(target)),
            target_exists: row.get(1),
            target_rooms: row.get(2),
        };
        if let Err(refused) = decide(&s) {
            return Ok(Err(refused));
        }
        let (applied, audit) = match change {
            Change::SetRole(new) => {
                let stmt = tx.prepare_cached(SET_ROLE).await?;
                let n = tx.execute(&stmt, &[&room, &target, &new.as_str()]).await?;
                let changed = n > 0;
                (Applied::Role { changed }, changed.then_some(("role", None)))
            }
            Change::Invite => {
                let stmt = tx.prepare_cached(INVITE).await?;
                let row = tx.query_one(&stmt, &[&room, &target]).await?;
                let (inserted, banned): (bool, bool) = (row.get(0), row.get(1));
                if banned {
                    return Ok(Err(Refused::Banned));
                }
                if !inserted {
                    // Another invitation or a join won the race.
                    return Ok(Err(Refused::Rule(crate::rooms::Refusal::AlreadyAMember)));
                }
                let stmt = tx.prepare_cached(AFTER_INVITE).await?;
                let row = tx.query_one(&stmt, &[&room, &target]).await?;
                let mute = row.get::<_, bool>(1).then(|| Mute { until: row.get(2) });
                (
                    Applied::Invited {
                        last: row.get(0),
                        mute,
                    },
                    Some(("invited", None)),
                )
            }
            Change::Mute(seconds) => {
                let stmt = tx.prepare_cached(MUTE).await?;
                let row = tx
                    .query_one(&stmt, &[&room, &target, &seconds, &by])
                    .await?;
                let until: Option<DateTime<Utc>> = row.get(0);
                (Applied::Muted(Mute { until }), Some(("muted", until)))
            }
            Change::Unmute => {
                let stmt = tx.prepare_cached(UNMUTE).await?;
                let held = tx
                    .query_opt(&stmt, &[&room, &target])
                    .await?
                    .is_some_and(|r| r.get::<_, bool>(0));
                (
                    Applied::Unmuted { changed: held },
                    held.then_some(("unmuted", None)),
                )
            }
            Change::Unban => {
                let stmt = tx.prepare_cached(UNBAN).await?;
                let held = tx
                    .query_opt(&stmt, &[&room, &target])
                    .await?
                    .is_some_and(|r| r.get::<_, bool>(0));
                (
                    Applied::Unbanned { changed: held },
                    held.then_some(("unbanned", None)),
                )
            }
        };
        // Issue 15: the change's event, appended last (the feed's head is
        // the last lock this transaction takes).
        let event = match (change, applied) {
            (Change::SetRole(role), Applied::Role { changed: true }) => {
                Some((EventType::MemberRole, Some(role.as_str()), None))
            }
            (Change::Invite, Applied::Invited { .. }) => {
                Some((EventType::MemberAdded, Some(Role::Member.as_str()), None))
            }
            (Change::Mute(_), Applied::Muted(m)) => Some((EventType::MemberMuted, None, m.until)),
            (Change::Unmute, Applied::Unmuted { changed: true }) => {
                Some((EventType::MemberUnmuted, None, None))
            }
            (Change::Unban, Applied::Unbanned { changed: true }) => {
                Some((EventType::MemberUnbanned, None, None))
            }
            _ => None,
        };
        if let Some((action, until)) = audit {
            let role = match change {
                Change::SetRole(r) => Some(r.as_str()),
                _ => None,
            };
            let stmt = tx.prepare_cached(AUDIT).await?;
            tx.execute(
                &stmt,
                &[&room, &by, &action, &target, &role, &until, &reason],
            )
            .await?;
        }
        if let Some((kind, role, until)) = event {
            let mut e = NewEvent::member(kind, room, target, by);
            e.detail.role = role.map(str::to_owned);
            e.detail.until = until;
            e.detail.reason = reason.map(str::to_owned);
            let stmt = tx.prepare_cached(feed::sql::APPEND).await?;
            feed::append(&*tx, &stmt, &[e]).await?;
        }
        tx.commit().await?;
        Ok(Ok(applied))
    }

    /// Up to `limit` members of `room` with user ids above `after`, by id.
    pub async fn members(
        &self,
        room: &str,
        after: UserId,
        limit: i64,
    ) -> Result<Vec<MemberRow>, StoreError> {
        let client = self.reader().get().await?;
        let stmt = client.prepare_cached(MEMBERS).await?;
        let rows = client.query(&stmt, &[&room, &after, &limit]).await?;
        Ok(rows
            .iter()
            .map(|r| MemberRow {
                user: r.get(0),
                username: r.get(1),
                role: role_of(r.get(2)),
                mute: r.get::<_, bool>(3).then(|| Mute { until: r.get(4) }),
            })
            .collect())
    }
}

/// Turns the handshake's parallel arrays (rooms, until) into mutes.
pub(super) fn mutes(rooms: Vec<String>, until: Vec<Option<DateTime<Utc>>>) -> Mutes {
    rooms
        .into_iter()
        .zip(until)
        .map(|(room, until)| (room, Mute { until }))
        .collect()
}
