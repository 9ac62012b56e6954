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
    encode_leave_ack, encode_message, encode_read_ack, encode_refresh_ack, encode_room_created,
    encode_rooms, encode_typing, valid_new_room_name, Frame, HistoryKind, JoinAck, Page, Ref,
    Request, StoredMessage, Target, UserId,
};
use crate::router::Origin;
use crate::shard::Shard;
use crate::store::writer::PersistRequest;
use crate::store::{StoreError, Window};

/// A reply the connection must wait for (database work): the frames to
/// send, in order (none: nothing to send).
pub type Deferred = Pin<Box<dyn Future<Output = Vec<Frame>>>>;

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
}

const DB_UNAVAILABLE: &str = "database unavailable, try again";

impl Session {
    /// The session of `identity`'s connection `origin` on `shard`.
    pub fn new(shard: Rc<Shard>, origin: Origin, identity: &Identity) -> Session {
        Session {
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
            Request::CreateRoom { room } => self.create_room(room, r),
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
        drop(registry);
        let shard = self.shard.clone();
        let (user, conn) = (self.user, self.origin.conn);
        later(async move {
            if !member {
                match shard.store.join_room(user, &room).await {
                    Ok(Some(last)) => shard.joined(user, &room, Some(last)),
                    Ok(None) => {
                        return vec![error_frame(&r, format!("room '{room}' does not exist"))]
                    }
                    Err(e) => return db_error(&shard, "join", &e, &r),
                }
            }
            let online = shard.online_members(&room).await;
            let ack = JoinAck {
                recovered: None,
                online: online.as_deref(),
            };
            match since {
                None => vec![encode_join_ack(&room, ack, r.as_ref())],
                Some(since) => replay_room(&shard, conn, &room, since, ack, r).await,
            }
        })
    }

    fn leave(&self, room: String, r: Option<Ref>) -> Outcome {
        if !self.shard.registry.borrow().is_member(self.user, &room) {
            return error(&r, not_a_member(&room));
        }
        let shard = self.shard.clone();
        let user = self.user;
        later(async move {
            match shard.store.leave_room(user, &room).await {
                Ok(_) => {
                    shard.left(user, &room);
                    vec![encode_leave_ack(&room, r.as_ref())]
                }
                Err(e) => db_error(&shard, "leave", &e, &r),
            }
        })
    }

    fn create_room(&self, room: String, r: Option<Ref>) -> Outcome {
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
            match shard.store.create_room(user, &room).await {
                Ok(true) => {
                    // A new room: nothing stored in it yet.
                    shard.joined(user, &room, Some(0));
                    vec![encode_room_created(&room, r.as_ref())]
                }
                Ok(false) => vec![error_frame(&r, format!("room '{room}' already exists"))],
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
        let Some(room) = self.shard.registry.borrow().member_room(self.user, room) else {
            return error(&r, format!("join room '{room}' before sending to it"));
        };
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

    fn room_history(&self, room: String, page: Page, r: Option<Ref>) -> Outcome {
        let window = match self.window(page) {
            Ok(w) => w,
            Err(e) => return error(&r, e),
        };
        if !self.shard.registry.borrow().is_member(self.user, &room) {
            return error(&r, format!("join room '{room}' before reading its history"));
        }
        let shard = self.shard.clone();
        later(async move {
            match shard.store.room_history(&room, window).await {
                Ok(messages) => vec![encode_history(HistoryKind::Room, &messages, r.as_ref())],
                Err(e) => db_error(&shard, "room_history", &e, &r),
            }
        })
    }

    fn dm_history(&self, with: UserId, page: Page, r: Option<Ref>) -> Outcome {
        let window = match self.window(page) {
            Ok(w) => w,
            Err(e) => return error(&r, e),
        };
        let shard = self.shard.clone();
        let user = self.user;
        later(async move {
            match shard.store.dm_history(user, with, window).await {
                Ok(messages) => vec![encode_history(HistoryKind::Dm, &messages, r.as_ref())],
                Err(e) => db_error(&shard, "dm_history", &e, &r),
            }
        })
    }

    fn dm_sync(&self, since: i64, r: Option<Ref>) -> Outcome {
        let shard = self.shard.clone();
        let (user, conn) = (self.user, self.origin.conn);
        later(async move {
            let max = shard.config.recovery_max;
            let missed = match shard.store.dm_since(user, since, limit_past(max)).await {
                Ok(m) => m,
                Err(e) => return db_error(&shard, "dm_sync", &e, &r),
            };
            let recovered = missed.len() <= max;
            let mut frames = vec![encode_dm_sync_ack(recovered, r.as_ref())];
            if recovered {
                let registry = shard.registry.borrow();
                let missed = match registry.dm_cursor(conn) {
                    Some(cursor) => cursor.plan_replay(missed, |m| m.id),
                    None => missed,
                };
                frames.extend(missed.iter().map(encode_message));
            }
            frames
        })
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

    fn window(&self, page: Page) -> Result<Window, &'static str> {
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

    fn persist_request(
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
async fn replay_room(
    shard: &Shard,
    conn: u64,
    room: &str,
    since: i64,
    ack: JoinAck<'_>,
    r: Option<Ref>,
) -> Vec<Frame> {
    let max = shard.config.recovery_max;
    let window = Window {
        limit: limit_past(max),
        before: None,
        after: Some(since),
    };
    let missed = match shard.store.room_history(room, window).await {
        Ok(m) => m,
        Err(e) => return db_error(shard, "join", &e, &r),
    };
    let recovered = missed.len() <= max;
    let ack = JoinAck {
        recovered: Some(recovered),
        ..ack
    };
    let mut frames = vec![encode_join_ack(room, ack, r.as_ref())];
    if recovered {
        let registry = shard.registry.borrow();
        let missed: Vec<StoredMessage> = match registry.room_cursor(conn, room) {
            Some(cursor) => cursor.plan_replay(missed, |m| m.id),
            None => missed,
        };
        frames.extend(missed.iter().map(encode_message));
    }
    frames
}

/// A query limit one past `max`, to tell "at most max" from "more".
fn limit_past(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX - 1) + 1
}

fn submit(shard: &Shard, request: PersistRequest) -> Result<(), Frame> {
    let reference = request.reference.clone();
    shard
        .writers
        .submit(request)
        .map_err(|e| encode_error_for(&e.to_string(), reference.as_ref()))
}

fn later(work: impl Future<Output = Vec<Frame>> + 'static) -> Outcome {
    Outcome::Later(Box::pin(work))
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

/// Checks message content: not empty, at most `max` characters, no NUL
/// (PostgreSQL text cannot hold it).
pub fn check_content(content: &str, max: usize) -> Result<(), String> {
    if content.is_empty() {
        return Err("content must not be empty".into());
    }
    // Byte length bounds character count from above: count only when needed.
    if content.len() > max && content.chars().count() > max {
        return Err(format!("content too long (at most {max} characters)"));
    }
    if content.contains('\0') {
        return Err("content must not contain NUL characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The session's rules on a real shard context (no threads, sockets or
    //! database): every request answered without a database round trip.
    use super::*;
    use crate::config::Config;
    use crate::mesh::Mailbox;
    use crate::router::ShardEvent;
    use crate::shard::outbox::Outbox;
    use crate::shard::testing;
    use crate::store::writer::PersistRequest;
    use serde_json::{json, Value};

    const ALICE: UserId = 7;

    struct Fixture {
        shard: Rc<Shard>,
        session: Session,
        inbox: Mailbox<ShardEvent>,
        writer: Mailbox<PersistRequest>,
    }

    /// A session of user 7 ("alice"), connection 0, member of `rooms`.
    fn fixture_with(config: Config, rooms: &[&str]) -> Fixture {
        let (shard, inbox, writer) = testing::shard(config);
        let outbox = Rc::new(Outbox::new(0, ALICE));
        shard
            .registry
            .borrow_mut()
            .register(outbox, rooms.iter().map(|r| Arc::from(*r)));
        let identity = Identity {
            user_id: ALICE,
            username: "alice".into(),
            expires_at: chrono::Utc::now().timestamp() + 3600,
        };
        let session = Session::new(shard.clone(), Origin { shard: 0, conn: 0 }, &identity);
        Fixture {
            shard,
            session,
            inbox,
            writer,
        }
    }

    fn fixture(rooms: &[&str]) -> Fixture {
        fixture_with(testing::config(), rooms)
    }

    /// The frame of an answer given at once.
    fn reply(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Reply(frame) => serde_json::from_str(frame.as_str()).expect("JSON frame"),
            Outcome::Queued => panic!("queued, expected a reply"),
            Outcome::Later(_) => panic!("deferred, expected a reply"),
            Outcome::CloseUnauthorized(_) => panic!("close, expected a reply"),
            Outcome::Refreshed { .. } => panic!("refreshed, expected a reply"),
        }
    }

    fn error_message(v: &Value) -> &str {
        assert_eq!(v["type"], "error", "{v}");
        v["data"]["message"].as_str().expect("message")
    }

    fn token(f: &Fixture, user: UserId, ttl: i64) -> String {
        let secret = f.shard.config.jwt_secret.as_deref().expect("secret");
        crate::auth::sign_hs256(secret.as_bytes(), user, "alice", ttl)
    }

    #[test]
    fn a_bad_request_is_an_error_that_keeps_its_ref() {
        let f = fixture(&[]);
        let v = reply(f.session.handle(r#"{"type":"nope","ref":"R1"}"#));
        assert!(error_message(&v).contains("nope"), "{v}");
        assert_eq!(v["ref"], "R1");
        let v = reply(f.session.handle("not json"));
        assert_eq!(v["type"], "error");
    }

    #[test]
    fn sending_needs_membership_and_valid_content() {
        let f = fixture(&["general"]);
        let v = reply(
            f.session
                .handle(r#"{"type":"message","room":"other","content":"hi","ref":3}"#),
        );
        assert_eq!(error_message(&v), "join room 'other' before sending to it");
        assert_eq!(v["ref"], 3);
        let v = reply(
            f.session
                .handle(r#"{"type":"message","room":"general","content":""}"#),
        );
        assert_eq!(error_message(&v), "content must not be empty");
        let long = "x".repeat(f.shard.config.max_content + 1);
        let v = reply(
            f.session
                .handle(&json!({"type":"message","room":"general","content":long}).to_string()),
        );
        assert!(error_message(&v).starts_with("content too long"), "{v}");
        assert!(f.writer.try_pop().is_none(), "nothing reached a writer");
    }

    #[test]
    fn a_members_message_goes_to_its_writer_with_its_keys() {
        let f = fixture(&["general"]);
        let outcome = f.session.handle(
            r#"{"type":"message","room":"general","content":"hi","client_id":"c-1","ref":"m1"}"#,
        );
        assert!(matches!(outcome, Outcome::Queued));
        let req = f.writer.try_pop().expect("queued for the writer");
        assert!(matches!(&req.target, Target::Room(r) if &**r == "general"));
        assert_eq!(
            (req.from, &*req.username, req.content.as_str()),
            (ALICE, "alice", "hi")
        );
        assert_eq!(req.client_id.as_deref(), Some("c-1"));
        assert_eq!(req.reference, Some(Ref::Text("m1".into())));
        assert_eq!(req.origin, Origin { shard: 0, conn: 0 });
    }

    #[test]
    fn a_dm_to_oneself_or_a_known_user_needs_no_lookup() {
        let f = fixture(&[]);
        let to_self = format!(r#"{{"type":"dm","to":{ALICE},"content":"note"}}"#);
        assert!(matches!(f.session.handle(&to_self), Outcome::Queued));
        f.shard.known_users.borrow_mut().remember(8, None);
        assert!(matches!(
            f.session.handle(r#"{"type":"dm","to":8,"content":"hi"}"#),
            Outcome::Queued
        ));
        assert!(
            matches!(
                f.session.handle(r#"{"type":"dm","to":9,"content":"hi"}"#),
                Outcome::Later(_)
            ),
            "an unknown user is looked up first"
        );
        let targets: Vec<Target> = std::iter::from_fn(|| f.writer.try_pop())
            .map(|r| r.target)
            .collect();
        assert_eq!(targets, vec![Target::User(ALICE), Target::User(8)]);
    }

    #[test]
    fn room_creation_rules() {
        let f = fixture(&[]);
        let v = reply(
            f.session
                .handle(r#"{"type":"create_room","room":"no spaces"}"#),
        );
        assert!(error_message(&v).starts_with("invalid room name"), "{v}");

        let mut config = testing::config();
        config.no_client_room_create = true;
        let f = fixture_with(config, &[]);
        let v = reply(f.session.handle(r#"{"type":"create_room","room":"fine"}"#));
        assert_eq!(
            error_message(&v),
            "room creation by clients is disabled on this server"
        );

        let mut config = testing::config();
        config.max_rooms_per_user = 1;
        let f = fixture_with(config, &["general"]);
        let v = reply(
            f.session
                .handle(r#"{"type":"create_room","room":"second"}"#),
        );
        assert_eq!(error_message(&v), "too many rooms (at most 1 per user)");
        let v = reply(f.session.handle(r#"{"type":"join","room":"second"}"#));
        assert_eq!(error_message(&v), "too many rooms (at most 1 per user)");
    }

    #[test]
    fn a_member_rejoining_is_answered_at_once_with_who_is_online() {
        let f = fixture(&["general"]);
        f.shard.presence.connected(ALICE, &[Arc::from("general")]);
        let v = reply(
            f.session
                .handle(r#"{"type":"join","room":"general","ref":1}"#),
        );
        assert_eq!(v["type"], "join_ack", "{v}");
        assert_eq!(v["data"]["room"], "general");
        assert_eq!(v["data"]["online"], json!([ALICE]));
        assert_eq!(v["ref"], 1);
        // A join with `since` replays from the database: deferred.
        assert!(matches!(
            f.session
                .handle(r#"{"type":"join","room":"general","since":0}"#),
            Outcome::Later(_)
        ));
    }

    #[test]
    fn requests_on_a_room_need_membership() {
        let f = fixture(&["general"]);
        for (request, expected) in [
            (r#"{"type":"leave","room":"x"}"#, "not a member of room 'x'"),
            (
                r#"{"type":"read","room":"x","up_to":5}"#,
                "not a member of room 'x'",
            ),
            (
                r#"{"type":"room_history","room":"x"}"#,
                "join room 'x' before reading its history",
            ),
            (
                r#"{"type":"typing","room":"x"}"#,
                "join room 'x' before typing in it",
            ),
        ] {
            let v = reply(f.session.handle(request));
            assert_eq!(error_message(&v), expected, "{request}");
        }
    }

    #[test]
    fn typing_is_a_notice_through_the_shards_own_inbox() {
        let f = fixture(&["general"]);
        assert!(matches!(
            f.session.handle(r#"{"type":"typing","room":"general"}"#),
            Outcome::Queued
        ));
        match f.inbox.try_pop() {
            Some(ShardEvent::Notice {
                room,
                except,
                frame,
            }) => {
                assert_eq!((&*room, except), ("general", ALICE));
                assert!(
                    frame.as_str().contains(r#""type":"typing""#),
                    "{}",
                    frame.as_str()
                );
            }
            other => panic!("expected a notice, got {other:?}"),
        }
        // Throttled: a second one at once is dropped silently.
        assert!(matches!(
            f.session.handle(r#"{"type":"typing","room":"general"}"#),
            Outcome::Queued
        ));
        assert!(f.inbox.try_pop().is_none());
    }

    #[test]
    fn refresh_accepts_only_a_valid_token_of_the_same_user() {
        let f = fixture(&[]);
        let v = reply(
            f.session
                .handle(r#"{"type":"refresh","token":"garbage","ref":"t"}"#),
        );
        assert!(error_message(&v).starts_with("refresh refused: "), "{v}");
        assert_eq!(v["ref"], "t");

        let other = token(&f, ALICE + 1, 600);
        let request = json!({"type":"refresh","token":other}).to_string();
        assert!(matches!(
            f.session.handle(&request),
            Outcome::CloseUnauthorized(_)
        ));

        let fresh = token(&f, ALICE, 7200);
        let request = json!({"type":"refresh","token":fresh}).to_string();
        match f.session.handle(&request) {
            Outcome::Refreshed { frame, expires_at } => {
                assert!(expires_at > chrono::Utc::now().timestamp() + 3600);
                assert!(frame.as_str().contains("refresh_ack"));
            }
            _ => panic!("expected a refresh_ack"),
        }
    }

    #[test]
    fn a_history_page_needs_a_positive_limit() {
        let f = fixture(&["general"]);
        let request = json!({"type":"room_history","room":"general","limit": 0, "ref": 2});
        let v = reply(f.session.handle(&request.to_string()));
        assert_eq!(error_message(&v), "limit must be a positive integer");
        assert_eq!(v["ref"], 2);
    }

    #[test]
    fn content_rules() {
        assert!(check_content("", 10).is_err());
        assert!(check_content("0123456789", 10).is_ok());
        assert!(check_content("01234567890", 10).is_err());
        // 10 characters, 20 bytes: within a 10-character limit.
        assert!(check_content(&"é".repeat(10), 10).is_ok());
        assert!(check_content(&"é".repeat(11), 10).is_err());
        assert!(check_content("a\0b", 10).is_err());
    }
}
