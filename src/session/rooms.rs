//! The WebSocket door to room access (issue 14): `set_role`, `invite`,
//! `members`, `mute`, `unmute`, and the member events of `join`/`leave`.
//! The rules are `crate::rooms` (`rooms::act` checks and commits); this
//! file turns requests into calls and outcomes into frames and shard events.

use chrono::Utc;

use super::{db_error, error, error_frame, later, Outcome, Session};
use crate::protocol::{
    encode_access_ack, encode_members, Frame, Kind, MemberInfo, Ref, Request, Target, UserId,
};
use crate::rooms::{self, Mute, MuteChange};
use crate::router::Origin;
use crate::shard::Shard;
use crate::store::{Applied, Change, Joined};

impl Session {
    /// Dispatches a room access request (`Request::SetRole`, `Invite`,
    /// `Members`, `Mute`, `Unmute`; anything else is not one).
    pub(super) fn room_access(&self, request: Request, r: Option<Ref>) -> Outcome {
        match request {
            Request::SetRole { room, user, role } => {
                self.access(room, user, Change::SetRole(role), r)
            }
            Request::Invite { room, user } => self.access(room, user, Change::Invite, r),
            Request::Members { room, after, limit } => self.members(room, after, limit, r),
            Request::Mute {
                room,
                user,
                seconds,
            } => self.access(room, user, Change::Mute(seconds), r),
            Request::Unmute { room, user } => self.access(room, user, Change::Unmute, r),
            Request::Kick { room, user, reason } => self.kick(room, user, false, None, reason, r),
            Request::Ban {
                room,
                user,
                seconds,
                reason,
            } => self.kick(room, user, true, seconds, reason, r),
            Request::Unban { room, user } => self.access(room, user, Change::Unban, r),
            _ => error(&r, "not a room access request"),
        }
    }

    /// `set_role`, `invite`, `mute` and `unmute`: checked and committed by
    /// `rooms::act`, then announced; answered `<request>_ack`.
    fn access(&self, room: String, target: UserId, change: Change, r: Option<Ref>) -> Outcome {
        let shard = self.shard.clone();
        let (by, origin) = (self.user, self.origin);
        later(async move {
            let max = shard.config.max_rooms_per_user;
            match rooms::act(&shard.store, &room, Some(by), target, change, max).await {
                Ok(Ok(applied)) => vec![announce(
                    &shard,
                    Some(origin),
                    &room,
                    Some(by),
                    target,
                    change,
                    applied,
                    r.as_ref(),
                )],
                Ok(Err(refused)) => vec![error_frame(&r, refused.message(&room, target))],
                Err(e) => db_error(&shard, change.action().name(), &e, &r),
            }
        })
    }

    /// `kick` and `ban`: queued on the room's writer, which checks the
    /// rules (`rooms::decide`, on the memberships it locks) and commits the
    /// event in the room's stream with the membership's end, the ban and
    /// the audit row; every shard then applies it in id order
    /// (`Shard::apply`). The requester's copy of the event is its
    /// `kick_ack` / `ban_ack`; a refusal comes back as an error.
    fn kick(
        &self,
        room: String,
        target: UserId,
        ban: bool,
        seconds: Option<i64>,
        reason: Option<String>,
        r: Option<Ref>,
    ) -> Outcome {
        if let Some(reason) = &reason {
            if let Err(e) = super::check_content(reason, self.shard.config.max_content) {
                return error(&r, format!("reason: {e}"));
            }
        }
        let Some(name) = self.shard.registry.borrow().member_room(self.user, &room) else {
            return error(&r, rooms::Refusal::NotAMember.message(&room, target));
        };
        let mut request = self.persist_request(
            Target::Room(name),
            reason.unwrap_or_default(),
            None,
            r.clone(),
        );
        request.kind = Kind::Member {
            user: target,
            ban,
            seconds,
        };
        match super::submit(&self.shard, request) {
            Ok(()) => Outcome::Queued,
            Err(frame) => Outcome::Reply(frame),
        }
    }

    /// `members`: a page of the room's members, by user id (members only:
    /// to anyone else a room, private or missing, gets the same error).
    fn members(
        &self,
        room: String,
        after: Option<UserId>,
        limit: Option<i64>,
        r: Option<Ref>,
    ) -> Outcome {
        let limit = match self.shard.config.members_limit(limit) {
            Ok(limit) => limit,
            Err(e) => return error(&r, e),
        };
        if !self.shard.registry.borrow().is_member(self.user, &room) {
            return error(&r, format!("join room '{room}' before listing its members"));
        }
        let shard = self.shard.clone();
        later(async move {
            match shard
                .store
                .members(&room, after.unwrap_or(0), limit + 1)
                .await
            {
                Ok(mut rows) => {
                    let more = rows.len() as i64 > limit;
                    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                    let now = Utc::now();
                    let list: Vec<MemberInfo> = rows
                        .into_iter()
                        .map(|m| {
                            let mute = m.mute.filter(|m| m.active_at(now));
                            MemberInfo {
                                user: m.user,
                                username: m.username,
                                role: m.role.as_str(),
                                muted: mute.is_some(),
                                muted_until: mute.and_then(|m| m.until),
                            }
                        })
                        .collect();
                    vec![encode_members(&room, &list, more, r.as_ref())]
                }
                Err(e) => db_error(&shard, "members", &e, &r),
            }
        })
    }
}

/// The refusal of a `message` from a muted member, if the mute holds now.
pub(super) fn muted(room: &str, mute: Option<Mute>) -> Option<String> {
    let mute = mute.filter(|m| m.active_at(Utc::now()))?;
    Some(match mute.until {
        Some(until) => format!(
            "you are muted in room '{room}' until {}",
            until.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
        None => format!("you are muted in room '{room}'"),
    })
}

/// The refusal of a `join` while a ban holds (ending at `until`).
pub(super) fn banned(room: &str, until: Option<chrono::DateTime<Utc>>) -> String {
    match until {
        Some(until) => format!(
            "you are banned from room '{room}' until {}",
            until.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
        None => format!("you are banned from room '{room}'"),
    }
}

/// After a `join` the store accepted (the user is registered already):
/// loads the user's mute here at once and on its other shards, and tells
/// the room when the membership is new (issue 16: only the user's own
/// connections when the room is over the cap, `rooms::effects::audience`).
pub(super) fn after_join(shard: &Shard, origin: Origin, user: UserId, room: &str, joined: Joined) {
    let mute = match joined.mute {
        Some(m) => MuteChange::Muted(m),
        None => MuteChange::Unchanged,
    };
    shard.registry.borrow_mut().set_mute(user, room, mute);
    // Only a new membership has a frame to tell: a member's re-join (every
    // reconnect) skips the count and its lock on the presence table.
    let audience = if joined.new {
        own_audience(shard, room, user)
    } else {
        rooms::effects::Audience::Room
    };
    let fx = rooms::effects::joined(room, user, joined.new, mute, audience);
    if fx.tells() {
        shard.member_event(room, user, fx.mute, fx.frame, fx.audience, Some(origin));
    }
}

/// After a `leave`: tells the room (issue 16: unless over the cap) and the
/// user's other connections.
pub(super) fn after_leave(shard: &Shard, origin: Origin, user: UserId, room: &str) {
    let fx = rooms::effects::left(room, user, own_audience(shard, room, user));
    shard.member_event(room, user, fx.mute, fx.frame, fx.audience, Some(origin));
}

/// Who hears `user`'s own join or leave of `room` (issue 16).
fn own_audience(shard: &Shard, room: &str, user: UserId) -> rooms::effects::Audience {
    let max = shard.config.presence_max_members;
    rooms::effects::audience(&shard.presence, room, user, max)
}

/// Makes a committed change take effect (subscriptions, cached mutes) and
/// tells the room's members and the target's connections; returns the ack.
#[allow(clippy::too_many_arguments)]
fn announce(
    shard: &Shard,
    origin: Option<Origin>,
    room: &str,
    by: Option<UserId>,
    target: UserId,
    change: Change,
    applied: Applied,
    r: Option<&Ref>,
) -> Frame {
    let kind = match change {
        Change::SetRole(_) => "set_role_ack",
        Change::Invite => "invite_ack",
        Change::Mute(_) => "mute_ack",
        Change::Unmute => "unmute_ack",
        Change::Unban => "unban_ack",
    };
    let fx = rooms::effects::of(room, by, target, change, applied);
    if let Some(last) = fx.joined {
        // Every connection of the invitee follows the room from now on.
        shard.joined(target, room, Some(last));
    }
    if fx.mute != MuteChange::Unchanged {
        shard.registry.borrow_mut().set_mute(target, room, fx.mute);
    }
    if fx.tells() {
        shard.member_event(room, target, fx.mute, fx.frame, fx.audience, origin);
    }
    encode_access_ack(kind, room, target, fx.until, r)
}
