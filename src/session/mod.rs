//! The business rules of one authenticated connection: what each request
//! may do, and what the client gets back.
//!
//! Requests that need no database are answered at once; the others return a
//! future the connection runs before reading its next request, so one
//! connection's requests take effect in the order they were sent.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

use crate::auth::Identity;
use crate::protocol::{
    decode_with_ref, encode_dm_sync_ack, encode_error_for, encode_history, encode_join_ack,
    encode_leave_ack, encode_read_ack, encode_refresh_ack, encode_room_created, encode_rooms,
    encode_typing, valid_new_room_name, Frame, HistoryKind, JoinAck, Kind, Page as Paging, Ref,
    Request, Target, UserId,
};
use crate::rooms::Visibility;
use crate::router::Origin;
use crate::shard::Shard;
use crate::store::writer::PersistRequest;
use crate::store::{Created, RowSize, StoreError, Window};
use crate::userlimits::UserBudget;

pub mod edits;
pub mod reply;
mod rooms;

/// The content rule of every door (it lives in `protocol`).
pub use crate::protocol::check_content;

pub use reply::{Body, Page, Reply, ReplyStream};

/// A reply the connection must wait for (database work): frames to queue,
/// or a paged reply to write (see [`reply`]).
pub type Deferred = Pin<Box<dyn Future<Output = Reply>>>;

/// What handling one request produced.
pub enum Outcome {
    /// Send this frame now.
    Reply(Frame),
    /// Nothing to send now (a message was queued; its delivery is the ack).
    Queued,
    /// Wait for this, then send what it gives.
    Later(Deferred),
    /// Send this frame, then close the connection with 4001: the client
    /// tried to replace its token with another user's.
    CloseUnauthorized(Frame),
    /// Send this `refresh_ack`; the connection now ends at `expires_at`
    /// (Unix seconds) instead.
    Refreshed { frame: Frame, expires_at: i64 },
}

/// One connection's identity and its shard.
pub struct Session {
    shard: Rc<Shard>,
    origin: Origin,
    user: UserId,
    username: Arc<str>,
    expires_at: i64,
    /// The user's budget across all its connections (message rate).
    budget: Arc<UserBudget>,
}

const DB_UNAVAILABLE: &str = "database unavailable, try again";
/// What `create_room` past `--max-rooms-created-per-hour` gets.
pub const TOO_MANY_ROOMS_CREATED: &str = "too many rooms created; try again later";
/// What a request refused for rate gets (the per-connection limiter says the same).
pub const RATE_LIMITED: &str = "rate limited";

impl Session {
    /// The session of `identity`'s connection `origin` on `shard`, sending
    /// within the user's `budget`.
    pub fn new(
        shard: Rc<Shard>,
        origin: Origin,
        identity: &Identity,
        budget: Arc<UserBudget>,
    ) -> Session {
        Session {
            budget,
            shard,
            origin,
            user: identity.user_id,
            username: Arc::from(identity.username.as_str()),
            expires_at: identity.expires_at,
        }
    }

    /// When the token expires (Unix seconds): the connection closes then.
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }

    /// Handles one text frame.
    pub fn handle(&self, text: &str) -> Outcome {
        let (r, request) = decode_with_ref(text);
        let request = match request {
            Ok(request) => request,
            Err(e) => return error(&r, e.to_string()),
        };
        match request {
            Request::Join { room, since } => self.join(room, since, r),
            Request::Leave { room } => self.leave(room, r),
            Request::CreateRoom { room, visibility } => self.create_room(room, visibility, r),
            Request::Rooms => self.rooms(r),
            Request::Read { room, up_to } => self.read(room, up_to, r),
            Request::Message {
                room,
                content,
                client_id,
            } => self.message(&room, content, client_id, r),
            Request::Dm {
                to,
                content,
                client_id,
            } => self.dm(to, content, client_id, r),
            Request::RoomHistory { room, page } => self.room_history(room, page, r),
            Request::DmHistory { with, page } => self.dm_history(with, page, r),
            Request::DmSync { since } => self.dm_sync(since, r),
            Request::Typing { room } => self.typing(room, r),
            Request::Refresh { token } => self.refresh(&token, r),
            // --- issue 14: edits and deletes (`edits`) ---
            Request::Edit {
                id,
                content,
                client_id,
            } => self.edit(id, content, client_id, r),
            Request::Delete { id, client_id } => self.delete(id, client_id, r),
            // --- issue 14: room access (session/rooms.rs) ---
            request @ (Request::SetRole { .. }
            | Request::Invite { .. }
            | Request::Members { .. }
            | Request::Mute { .. }
            | Request::Unmute { .. }
            | Request::Kick { .. }
            | Request::Ban { .. }
            | Request::Unban { .. }) => self.room_access(request, r),
        }
    }

    fn typing(&self, room: String, r: Option<Ref>) -> Outcome {
        let Some(name) = self.shard.registry.borrow().member_room(self.user, &room) else {
            return error(&r, format!("join room '{room}' before typing in it"));
        };
        // Over the throttle: dropped silently, as typing is only a hint.
        if self
            .shard
            .presence
            .allow_typing(self.user, &room, Instant::now())
        {
            let frame = encode_typing(&room, self.user, &self.username);
            self.shard.notify_room(name, self.user, frame);
        }
        Outcome::Queued
    }

    fn refresh(&self, token: &str, r: Option<Ref>) -> Outcome {
        if token.len() > self.shard.config.max_token_bytes {
            return error(&r, "refresh refused: token too large");
        }
        match self.shard.credentials.verify(token) {
            Ok(identity) if identity.user_id == self.user => Outcome::Refreshed {
                frame: encode_refresh_ack(identity.expires_at, r.as_ref()),
                expires_at: identity.expires_at,
            },
            Ok(_) => Outcome::CloseUnauthorized(error_frame(
                &r,
                "refresh refused: the token is for another user",
            )),
            Err(e) => error(&r, format!("refresh refused: {e}")),
        }
    }

    fn join(&self, room: String, since: Option<i64>, r: Option<Ref>) -> Outcome {
        let registry = self.shard.registry.borrow();
        let member = registry.is_member(self.user, &room);
        if member && since.is_none() && self.shard.cluster.is_none() {
            let online = self.online(&room);
            let ack = JoinAck {
                recovered: None,
                online: online.as_deref(),
            };
            return Outcome::Reply(encode_join_ack(&room, ack, r.as_ref()));
        }
        if !member {
            if let Err(e) = self.room_cap(registry.room_count(self.user)) {
                return error(&r, e);
            }
        }
        // From this request on, nothing up to `since` reaches this
        // connection live (a lagging node's delivery of what it already has).
        if let Some(since) = since {
            registry.room_seen_through(self.origin.conn, &room, since);
        }
        drop(registry);
        let shard = self.shard.clone();
        let (user, conn, origin) = (self.user, self.origin.conn, self.origin);
        later_reply(async move {
            if !member {
                match shard.store.join_room(user, &room).await {
                    Ok(Some(joined)) if joined.banned => {
                        let why = rooms::banned(&room, joined.ban_until);
                        return frames(error_frame(&r, why));
                    }
                    Ok(Some(joined)) => {
                        shard.joined(user, &room, Some(joined.last));
                        if let Some(since) = since {
                            shard
                                .registry
                                .borrow()
                                .room_seen_through(conn, &room, since);
                        }
                        rooms::after_join(&shard, origin, user, &room, joined);
                    }
                    Ok(None) => {
                        return frames(error_frame(&r, format!("room '{room}' does not exist")))
                    }
                    Err(e) => return Reply::Frames(db_error(&shard, "join", &e, &r)),
                }
            }
            let online = shard.online_members(&room).await;
            let ack = JoinAck {
                recovered: None,
                online: online.as_deref(),
            };
            match since {
                None => frames(encode_join_ack(&room, ack, r.as_ref())),
                Some(since) => replay_room(shard.clone(), (user, conn), &room, since, ack, r).await,
            }
        })
    }

    fn leave(&self, room: String, r: Option<Ref>) -> Outcome {
        if !self.shard.registry.borrow().is_member(self.user, &room) {
            return error(&r, not_a_member(&room));
        }
        let shard = self.shard.clone();
        let (user, origin) = (self.user, self.origin);
        later(async move {
            match shard.store.leave_room(user, &room).await {
                Ok(left) => {
                    shard.left(user, &room);
                    if left {
                        rooms::after_leave(&shard, origin, user, &room);
                    }
                    vec![encode_leave_ack(&room, r.as_ref())]
                }
                Err(e) => db_error(&shard, "leave", &e, &r),
            }
        })
    }

    fn create_room(&self, room: String, visibility: Visibility, r: Option<Ref>) -> Outcome {
        if self.shard.config.no_client_room_create {
            return error(&r, "room creation by clients is disabled on this server");
        }
        if !valid_new_room_name(&room) {
            return error(
                &r,
                "invalid room name: use 1 to 64 ASCII letters, digits, '-', '_' or '.'",
            );
        }
        let rooms = self.shard.registry.borrow().room_count(self.user);
        if let Err(e) = self.room_cap(rooms) {
            return error(&r, e);
        }
        let shard = self.shard.clone();
        let user = self.user;
        later(async move {
            let cap = shard.config.max_rooms_created_per_hour;
            match shard.store.create_room(user, &room, visibility, cap).await {
                Ok(Created::Created) => {
                    // A new room: nothing stored in it yet.
                    shard.joined(user, &room, Some(0));
                    vec![encode_room_created(&room, visibility.as_str(), r.as_ref())]
                }
                Ok(Created::Exists) => {
                    vec![error_frame(&r, format!("room '{room}' already exists"))]
                }
                Ok(Created::TooMany) => vec![error_frame(&r, TOO_MANY_ROOMS_CREATED)],
                Err(e) => db_error(&shard, "create_room", &e, &r),
            }
        })
    }

    fn rooms(&self, r: Option<Ref>) -> Outcome {
        let shard = self.shard.clone();
        let user = self.user;
        later(async move {
            let config = &shard.config;
            match shard
                .store
                .rooms(user, config.unread_max, config.max_rooms_per_user)
                .await
            {
                Ok(rooms) => vec![encode_rooms(&rooms, r.as_ref())],
                Err(e) => db_error(&shard, "rooms", &e, &r),
            }
        })
    }

    fn read(&self, room: String, up_to: i64, r: Option<Ref>) -> Outcome {
        if !self.shard.registry.borrow().is_member(self.user, &room) {
            return error(&r, not_a_member(&room));
        }
        let shard = self.shard.clone();
        let user = self.user;
        later(async move {
            match shard.store.mark_read(user, &room, up_to).await {
                Ok(Some(position)) => vec![encode_read_ack(&room, position, r.as_ref())],
                Ok(None) => vec![error_frame(&r, not_a_member(&room))],
                Err(e) => db_error(&shard, "read", &e, &r),
            }
        })
    }

    fn message(
        &self,
        room: &str,
        content: String,
        client_id: Option<String>,
        r: Option<Ref>,
    ) -> Outcome {
        if let Err(e) = self.check_content(&content) {
            return error(&r, e);
        }
        if let Err(e) = self.user_rate() {
            return error(&r, e);
        }
        let Some((room, mute)) = self
            .shard
            .registry
            .borrow()
            .member_room_muted(self.user, room)
        else {
            return error(&r, format!("join room '{room}' before sending to it"));
        };
        if let Some(e) = rooms::muted(&room, mute) {
            return error(&r, e);
        }
        self.submit(Target::Room(room), content, client_id, r)
    }

    fn dm(
        &self,
        to: UserId,
        content: String,
        client_id: Option<String>,
        r: Option<Ref>,
    ) -> Outcome {
        if let Err(e) = self.check_content(&content) {
            return error(&r, e);
        }
        if let Err(e) = self.user_rate() {
            return error(&r, e);
        }
        if to == self.user || self.shard.known_users.borrow().contains(to) {
            return self.submit(Target::User(to), content, client_id, r);
        }
        let shard = self.shard.clone();
        let request = self.persist_request(Target::User(to), content, client_id, r.clone());
        later(async move {
            match shard.store.user_exists(to).await {
                Ok(true) => {
                    shard.known_users.borrow_mut().remember(to, None);
                    submit(&shard, request).err().into_iter().collect()
                }
                Ok(false) => vec![error_frame(&r, format!("user {to} does not exist"))],
                Err(e) => db_error(&shard, "dm", &e, &r),
            }
        })
    }

    fn room_history(&self, room: String, page: Paging, r: Option<Ref>) -> Outcome {
        let window = match self.window(page) {
            Ok(w) => w,
            Err(e) => return error(&r, e),
        };
        if !self.shard.registry.borrow().is_member(self.user, &room) {
            return error(&r, format!("join room '{room}' before reading its history"));
        }
        let shard = self.shard.clone();
        let user = self.user;
        later_reply(async move {
            match shard.store.room_index(&room, user, window).await {
                Ok(rows) => history(shard, HistoryKind::Room, rows, r).await,
                Err(e) => Reply::Frames(db_error(&shard, "room_history", &e, &r)),
            }
        })
    }

    fn dm_history(&self, with: UserId, page: Paging, r: Option<Ref>) -> Outcome {
        let window = match self.window(page) {
            Ok(w) => w,
            Err(e) => return error(&r, e),
        };
        let shard = self.shard.clone();
        let user = self.user;
        later_reply(async move {
            match shard.store.dm_index(user, with, window).await {
                Ok(rows) => history(shard, HistoryKind::Dm, rows, r).await,
                Err(e) => Reply::Frames(db_error(&shard, "dm_history", &e, &r)),
            }
        })
    }

    fn dm_sync(&self, since: i64, r: Option<Ref>) -> Outcome {
        let shard = self.shard.clone();
        let (user, conn) = (self.user, self.origin.conn);
        // As for `join` with `since`: nothing up to it follows live.
        if let Some(cursor) = shard.registry.borrow().dm_cursor(conn) {
            cursor.seen_through(since);
        }
        later_reply(async move {
            let max = shard.config.recovery_max;
            let missed = match shard
                .store
                .dm_since_index(user, since, limit_past(max))
                .await
            {
                Ok(m) => m,
                Err(e) => return Reply::Frames(db_error(&shard, "dm_sync", &e, &r)),
            };
            let recovered = missed.len() <= max;
            if !recovered || missed.is_empty() {
                return frames(encode_dm_sync_ack(recovered, r.as_ref()));
            }
            let lease = match ReplyStream::first_lease(&shard, &missed, &Body::Messages).await {
                Ok(lease) => lease,
                Err(e) => return frames(error_frame(&r, e.to_string())),
            };
            // From here to the stream, no await: the plan and the cursor
            // move together on the shard thread.
            let missed = match shard.registry.borrow().dm_cursor(conn) {
                Some(cursor) => cursor.plan_replay(missed, |m| m.id),
                None => missed,
            };
            let ack = encode_dm_sync_ack(true, r.as_ref());
            Reply::Stream(ReplyStream::new(
                shard.clone(),
                Some(ack),
                Body::Messages,
                missed,
                lease,
            ))
        })
    }

    /// Takes one message from the user's budget (shared by all its
    /// connections); over `--user-message-rate`, the message is refused.
    fn user_rate(&self) -> Result<(), &'static str> {
        if self.budget.take_message(std::time::Instant::now()) {
            return Ok(());
        }
        self.shard.metrics().rate_limited.inc();
        Err(RATE_LIMITED)
    }

    /// Refuses one more room to a user who follows `rooms` already.
    fn room_cap(&self, rooms: usize) -> Result<(), String> {
        let max = self.shard.config.max_rooms_per_user;
        if rooms >= max {
            return Err(format!("too many rooms (at most {max} per user)"));
        }
        Ok(())
    }

    /// The room's online members for `join_ack` (`None`: too many).
    fn online(&self, room: &str) -> Option<Vec<UserId>> {
        let max = self.shard.config.presence_max_members;
        self.shard.presence.online_in(room, max)
    }

    fn window(&self, page: Paging) -> Result<Window, &'static str> {
        Ok(Window {
            limit: self.shard.config.history_limit(page.limit)?,
            before: page.before,
            after: page.after,
        })
    }

    fn check_content(&self, content: &str) -> Result<(), String> {
        let max = self.shard.config.max_content;
        check_content(content, max)
    }

    pub(super) fn persist_request(
        &self,
        target: Target,
        content: String,
        client_id: Option<String>,
        reference: Option<Ref>,
    ) -> PersistRequest {
        PersistRequest {
            target,
            from: self.user,
            username: self.username.clone(),
            content,
            origin: self.origin,
            enqueued: Instant::now(),
            reference,
            client_id: client_id.map(String::into_boxed_str),
            kind: Kind::Message,
            reply: None,
        }
    }

    fn submit(
        &self,
        target: Target,
        content: String,
        client_id: Option<String>,
        r: Option<Ref>,
    ) -> Outcome {
        match submit(
            &self.shard,
            self.persist_request(target, content, client_id, r),
        ) {
            Ok(()) => Outcome::Queued,
            Err(frame) => Outcome::Reply(frame),
        }
    }
}

/// Replays the room's messages newer than `since` that connection `conn`
/// has not been sent live, after the `join_ack` that says whether it did.
/// Only ids and sizes are read here; the messages follow page by page.
async fn replay_room(
    shard: Rc<Shard>,
    (user, conn): (UserId, u64),
    room: &str,
    since: i64,
    ack: JoinAck<'_>,
    r: Option<Ref>,
) -> Reply {
    let max = shard.config.recovery_max;
    // Messages and edit/delete events alike: each is a row of the stream.
    let missed = match shard
        .store
        .room_since_index(room, user, since, limit_past(max))
        .await
    {
        Ok(m) => m,
        Err(e) => return Reply::Frames(db_error(&shard, "join", &e, &r)),
    };
    let recovered = missed.len() <= max;
    let ack = JoinAck {
        recovered: Some(recovered),
        ..ack
    };
    if !recovered || missed.is_empty() {
        return frames(encode_join_ack(room, ack, r.as_ref()));
    }
    // Refused for budget: nothing decided yet (the cursor is untouched).
    let lease = match ReplyStream::first_lease(&shard, &missed, &Body::Messages).await {
        Ok(lease) => lease,
        Err(e) => return frames(error_frame(&r, e.to_string())),
    };
    // From here to the stream, no await: the plan and the cursor move
    // together on the shard thread.
    let missed: Vec<RowSize> = match shard.registry.borrow().room_cursor(conn, room) {
        Some(cursor) => cursor.plan_replay(missed, |m| m.id),
        None => missed,
    };
    let ack = encode_join_ack(room, ack, r.as_ref());
    Reply::Stream(ReplyStream::new(
        shard.clone(),
        Some(ack),
        Body::Messages,
        missed,
        lease,
    ))
}

/// A history reply of `rows` (planned ids, oldest first), paged.
async fn history(shard: Rc<Shard>, kind: HistoryKind, rows: Vec<RowSize>, r: Option<Ref>) -> Reply {
    if rows.is_empty() {
        return frames(encode_history(kind, &[], r.as_ref()));
    }
    let body = Body::History {
        kind,
        reference: r.clone(),
    };
    match ReplyStream::first_lease(&shard, &rows, &body).await {
        Ok(lease) => Reply::Stream(ReplyStream::new(shard.clone(), None, body, rows, lease)),
        Err(e) => frames(error_frame(&r, e.to_string())),
    }
}

/// A query limit one past `max`, to tell "at most max" from "more".
fn limit_past(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX - 1) + 1
}

pub(super) fn submit(shard: &Shard, request: PersistRequest) -> Result<(), Frame> {
    let reference = request.reference.clone();
    shard
        .writers
        .submit(request)
        .map_err(|e| encode_error_for(&e.to_string(), reference.as_ref()))
}

fn later(work: impl Future<Output = Vec<Frame>> + 'static) -> Outcome {
    Outcome::Later(Box::pin(async move { Reply::Frames(work.await) }))
}

fn later_reply(work: impl Future<Output = Reply> + 'static) -> Outcome {
    Outcome::Later(Box::pin(work))
}

fn frames(frame: Frame) -> Reply {
    Reply::Frames(vec![frame])
}

fn error_frame(r: &Option<Ref>, message: impl AsRef<str>) -> Frame {
    encode_error_for(message.as_ref(), r.as_ref())
}

fn not_a_member(room: &str) -> String {
    format!("not a member of room '{room}'")
}

fn error(r: &Option<Ref>, message: impl AsRef<str>) -> Outcome {
    Outcome::Reply(error_frame(r, message))
}

fn db_error(shard: &Shard, what: &'static str, e: &StoreError, r: &Option<Ref>) -> Vec<Frame> {
    warn!(error = %e, request = what, "database error");
    shard.metrics().db_errors.inc();
    vec![error_frame(r, DB_UNAVAILABLE)]
}

#[cfg(test)]
mod tests;
