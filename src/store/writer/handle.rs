//! What the shards see of the writers: the request they queue, why queueing
//! fails, and the [`Writers`] handle that picks a writer per message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::mesh::{MailboxSender, PushError};
use crate::protocol::{Kind, Ref, StoredMessage, Target, UserId};
use crate::router::Origin;

/// A message waiting to be persisted.
#[derive(Debug)]
pub struct PersistRequest {
    /// Room or recipient.
    pub target: Target,
    /// Sender.
    pub from: UserId,
    /// Sender's username, as in the token.
    pub username: Arc<str>,
    /// Validated content.
    pub content: String,
    /// The sending connection, told if the message cannot be stored.
    pub origin: Origin,
    /// When it was queued; the persist timeout counts from here.
    pub enqueued: Instant,
    /// The request's `ref`, echoed on the sender's own copy.
    pub reference: Option<Ref>,
    /// The sender's idempotency key: unique per sender in storage.
    pub client_id: Option<Box<str>>,
    /// A message, or (issue 14) an edit or delete of a message of the same
    /// stream (`target`), committed by the stream's writer in id order with
    /// its messages. An edit's `content` is the new content; a delete's is
    /// empty. A kick or ban (issue 14, `Kind::Member`) is checked by
    /// `rooms::rules` and applied by the writer in its batch's transaction;
    /// its `content` is the reason (empty: none).
    pub kind: Kind,
    /// Issue 15: a request of the server API (not of a connection) is
    /// answered here instead of through `origin`: its [`Outcome`] once the
    /// batch is committed (or refused). `None` for a connection's request.
    pub reply: Option<tokio::sync::oneshot::Sender<Outcome>>,
}

/// Issue 15: what became of a request that carried a `reply` (a request
/// of the server API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored now, as this row (already published to its stream).
    Stored(StoredMessage),
    /// Its `client_id` was stored before: the original row (nothing new
    /// was stored or published).
    Duplicate(StoredMessage),
    /// Refused by the writer's re-check (the rule's text): a target deleted
    /// first, a kick of a non-member.
    Refused(String),
    /// Not stored: the database stayed unavailable past the persist timeout.
    NotStored,
}

/// Issue 14: why an edit or delete of `target` is refused because the
/// message is deleted (by the session's check, or by the writer's re-check
/// when a delete committed first).
pub fn refused_deleted(kind: Kind) -> String {
    match kind {
        Kind::Edit { target } => format!("message {target} is deleted and cannot be edited"),
        Kind::Delete { target } => format!("message {target} is already deleted"),
        Kind::Message => "message already stored".to_owned(),
        Kind::Member { user, .. } => format!("user {user} is not a member of the room"),
    }
}

/// Why a message was not queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The writer's queue is full.
    #[error("server busy, message not sent")]
    Busy,
    /// The writers have stopped (shutdown).
    #[error("server shutting down, message not sent")]
    Closed,
}

/// The shards' handle on the writers: it can only submit messages (and
/// ask whether the writers are healthy).
#[derive(Debug, Clone)]
pub struct Writers {
    /// Each writer's mailbox, in writer order.
    pub(super) queues: Arc<[MailboxSender<PersistRequest>]>,
    /// Each writer's health flag, in writer order (set by the writer).
    pub(super) healthy: Arc<[AtomicBool]>,
}

impl Writers {
    /// Queues a message on the writer that owns its room (or the DM writer).
    pub fn submit(&self, request: PersistRequest) -> Result<(), SubmitError> {
        let queue = &self.queues[writer_for(&request.target, self.queues.len())];
        queue.send(request).map_err(|e| match e {
            PushError::Full(_) => SubmitError::Busy,
            PushError::Closed(_) => SubmitError::Closed,
        })
    }

    /// Messages waiting in each writer's queue, in writer order.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.queues.iter().map(|q| q.len()).collect()
    }

    /// A handle on one queue of `capacity` with no writer thread behind
    /// it: unit tests read what shards submit from the returned receiver.
    #[cfg(test)]
    pub(crate) fn for_tests(capacity: usize) -> (Writers, crate::mesh::Mailbox<PersistRequest>) {
        let (tx, rx) = crate::mesh::mailbox(capacity);
        let writers = Writers {
            queues: Arc::new([tx]),
            healthy: Arc::new([AtomicBool::new(true)]),
        };
        (writers, rx)
    }

    /// True when every writer is connected and its last commit (if any) succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.iter().all(|h| h.load(Ordering::Acquire))
    }
}

/// Which writer persists messages for `target`: rooms are spread by a hash
/// of their name; all DMs go to writer 0 so a user's DM ids increase in
/// commit order.
pub fn writer_for(target: &Target, writers: usize) -> usize {
    match target {
        Target::Room(room) => (fnv1a(room.as_bytes()) % writers as u64) as usize,
        Target::User(_) => 0,
    }
}

/// FNV-1a, 64 bits: stable across runs and builds, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_spread_over_writers_and_dms_stay_on_writer_zero() {
        let mut seen = [0usize; 4];
        for i in 0..400 {
            let t = Target::Room(Arc::from(format!("room-{i}")));
            let w = writer_for(&t, 4);
            assert_eq!(w, writer_for(&t, 4), "stable");
            seen[w] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(writer_for(&Target::User(99), 4), 0);
        assert_eq!(writer_for(&Target::Room("x".into()), 1), 0);
    }
}
