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
    decode, encode_error, encode_history, encode_join_ack, Frame, HistoryKind, Request, Target,
    UserId,
};
use crate::router::Origin;
use crate::shard::Shard;
use crate::store::writer::PersistRequest;

/// A reply the connection must wait for (database work); `None`: nothing to send.
pub type Deferred = Pin<Box<dyn Future<Output = Option<Frame>>>>;

/// What handling one request produced.
pub enum Outcome {
    /// Send this frame now.
    Reply(Frame),
    /// Nothing to send now (a message was queued; its delivery is the ack).
    Queued,
    /// Wait for this, then send what it gives.
    Later(Deferred),
}

/// One connection's identity and its shard.
pub struct Session {
    shard: Rc<Shard>,
    origin: Origin,
    user: UserId,
    username: Arc<str>,
    expires_at: i64,
}

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
        let request = match decode(text) {
            Ok(r) => r,
            Err(e) => return error(e.to_string()),
        };
        match request {
            Request::Join { room } => self.join(room),
            Request::Message { room, content } => self.message(&room, content),
            Request::Dm { to, content } => self.dm(to, content),
            Request::RoomHistory { room, limit } => self.room_history(room, limit),
            Request::DmHistory { with, limit } => self.dm_history(with, limit),
        }
    }

    fn join(&self, room: String) -> Outcome {
        let registry = self.shard.registry.borrow();
        if registry.is_member(self.user, &room) {
            return Outcome::Reply(encode_join_ack(&room));
        }
        let max = self.shard.config.max_rooms_per_user;
        if registry.room_count(self.user) >= max {
            return error(format!("too many rooms (at most {max} per user)"));
        }
        drop(registry);
        let shard = self.shard.clone();
        let user = self.user;
        Outcome::Later(Box::pin(async move {
            match shard.store.join_room(user, &room).await {
                Ok(true) => {
                    let name: Arc<str> = Arc::from(room.as_str());
                    shard.registry.borrow_mut().join(user, name.clone());
                    shard.announce_join(user, name);
                    Some(encode_join_ack(&room))
                }
                Ok(false) => Some(encode_error(&format!("room '{room}' does not exist"))),
                Err(e) => {
                    warn!(error = %e, "join: database error");
                    shard.metrics().db_errors.inc();
                    Some(encode_error("database unavailable, try again"))
                }
            }
        }))
    }

    fn message(&self, room: &str, content: String) -> Outcome {
        if let Err(e) = self.check_content(&content) {
            return error(e);
        }
        let Some(room) = self.shard.registry.borrow().member_room(self.user, room) else {
            return error(format!("join room '{room}' before sending to it"));
        };
        self.submit(Target::Room(room), content)
    }

    fn dm(&self, to: UserId, content: String) -> Outcome {
        if let Err(e) = self.check_content(&content) {
            return error(e);
        }
        if to == self.user || self.shard.user_known(to) {
            return self.submit(Target::User(to), content);
        }
        let shard = self.shard.clone();
        let request = self.persist_request(Target::User(to), content);
        Outcome::Later(Box::pin(async move {
            match shard.store.user_exists(to).await {
                Ok(true) => {
                    shard.remember_user(to, None);
                    submit(&shard, request).err()
                }
                Ok(false) => Some(encode_error(&format!("user {to} does not exist"))),
                Err(e) => {
                    warn!(error = %e, "dm: database error");
                    shard.metrics().db_errors.inc();
                    Some(encode_error("database unavailable, try again"))
                }
            }
        }))
    }

    fn room_history(&self, room: String, limit: Option<i64>) -> Outcome {
        let limit = match self.shard.config.history_limit(limit) {
            Ok(l) => l,
            Err(e) => return error(e),
        };
        if !self.shard.registry.borrow().is_member(self.user, &room) {
            return error(format!("join room '{room}' before reading its history"));
        }
        let shard = self.shard.clone();
        Outcome::Later(Box::pin(async move {
            Some(match shard.store.room_history(&room, limit).await {
                Ok(messages) => encode_history(HistoryKind::Room, &messages),
                Err(e) => {
                    warn!(error = %e, "room_history: database error");
                    shard.metrics().db_errors.inc();
                    encode_error("database unavailable, try again")
                }
            })
        }))
    }

    fn dm_history(&self, with: UserId, limit: Option<i64>) -> Outcome {
        let limit = match self.shard.config.history_limit(limit) {
            Ok(l) => l,
            Err(e) => return error(e),
        };
        let shard = self.shard.clone();
        let user = self.user;
        Outcome::Later(Box::pin(async move {
            Some(match shard.store.dm_history(user, with, limit).await {
                Ok(messages) => encode_history(HistoryKind::Dm, &messages),
                Err(e) => {
                    warn!(error = %e, "dm_history: database error");
                    shard.metrics().db_errors.inc();
                    encode_error("database unavailable, try again")
                }
            })
        }))
    }

    fn check_content(&self, content: &str) -> Result<(), String> {
        let max = self.shard.config.max_content;
        check_content(content, max)
    }

    fn persist_request(&self, target: Target, content: String) -> PersistRequest {
        PersistRequest {
            target,
            from: self.user,
            username: self.username.clone(),
            content,
            origin: self.origin,
            enqueued: Instant::now(),
        }
    }

    fn submit(&self, target: Target, content: String) -> Outcome {
        match submit(&self.shard, self.persist_request(target, content)) {
            Ok(()) => Outcome::Queued,
            Err(frame) => Outcome::Reply(frame),
        }
    }
}

fn submit(shard: &Shard, request: PersistRequest) -> Result<(), Frame> {
    shard
        .writers
        .submit(request)
        .map_err(|e| encode_error(&e.to_string()))
}

fn error(message: impl AsRef<str>) -> Outcome {
    Outcome::Reply(encode_error(message.as_ref()))
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
    use super::check_content;

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
