//! What a writer tells after a batch: each committed message, encoded once,
//! to the router (or, in cluster mode, to the cluster link), and to each
//! sender whose message was not stored, an error.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::warn;

use super::batch::Fate;
use super::sql::ban_until;
use super::{Outcome, PersistRequest, Writer};
use crate::cluster::Committed;
use crate::protocol::{
    encode_access_ack, encode_error_for, encode_message, encode_message_for, Kind, StoredMessage,
    Target,
};
use crate::router::{Origin, OwnCopy, Sent, ShardEvent};

impl Writer {
    /// The success arm of both retry loops: the batch is committed with
    /// `ids` (in batch order) at `at`. Marks the writer healthy, counts the
    /// rows stored now (not retried `client_id`s nor lost rows), the batch
    /// and its time since `started`, then publishes it (`prevs`: each row's
    /// predecessors in cluster mode, empty in single-node mode).
    pub(super) async fn committed(
        &self,
        batch: &mut Vec<PersistRequest>,
        ids: Vec<i64>,
        fates: Vec<Fate>,
        at: DateTime<Utc>,
        prevs: &[[i64; 2]],
        started: Instant,
    ) {
        self.set_healthy(true);
        let m = self.metrics();
        // Retried client_ids and lost rows were not stored now.
        let skipped = fates.iter().filter(|f| !matches!(f, Fate::Stored)).count();
        m.persisted.add((batch.len() - skipped) as u64);
        m.batch_size.observe(batch.len() as f64);
        m.commit_seconds.observe_duration(started.elapsed());
        self.publish(batch.drain(..).zip(ids), fates, at, prevs)
            .await;
    }

    /// Encodes each committed message once and hands it to the router (in
    /// cluster mode, to the cluster link, with its predecessors `prevs`);
    /// a retried `client_id` gets its original back, to its sender only.
    async fn publish(
        &self,
        committed: impl Iterator<Item = (PersistRequest, i64)>,
        fates: Vec<Fate>,
        at: DateTime<Utc>,
        prevs: &[[i64; 2]],
    ) {
        let mut fates = fates.into_iter();
        for (i, (req, id)) in committed.enumerate() {
            let mut req = req;
            let fate = fates.next().unwrap_or(Fate::Stored);
            // Issue 15: a request of the server API is answered on its
            // channel; it has no connection (no own copy, no ack frame).
            if let Some(reply) = req.reply.take() {
                let outcome = match &fate {
                    Fate::Stored => None,
                    Fate::Duplicate(original) => Some(Outcome::Duplicate(original.clone())),
                    Fate::Lost => Some(Outcome::NotStored),
                    Fate::Refused(why) => Some(Outcome::Refused(why.clone())),
                };
                if let Some(outcome) = outcome {
                    if outcome == Outcome::NotStored {
                        self.metrics().not_stored.inc();
                    }
                    let _ = reply.send(outcome);
                    continue;
                }
                let stored = self
                    .publish_one(req, id, at, prevs.get(i).copied(), false)
                    .await;
                let _ = reply.send(Outcome::Stored(stored));
                continue;
            }
            match fate {
                Fate::Stored => {}
                Fate::Duplicate(original) => {
                    let frame = encode_message_for(&original, req.reference.as_ref());
                    let Origin { shard, conn } = req.origin;
                    self.router
                        .send_to(shard, ShardEvent::Conn { conn, frame })
                        .await;
                    continue;
                }
                Fate::Lost => {
                    self.refuse(vec![req]).await;
                    continue;
                }
                Fate::Refused(why) => {
                    let frame = encode_error_for(&why, req.reference.as_ref());
                    let Origin { shard, conn } = req.origin;
                    self.router
                        .send_to(shard, ShardEvent::Conn { conn, frame })
                        .await;
                    continue;
                }
            }
            self.publish_one(req, id, at, prevs.get(i).copied(), true)
                .await;
        }
    }

    /// Encodes one stored row once and hands it to the router (or the
    /// cluster link, with its predecessors `prev`); with `own`, the
    /// requester's own copy or ack goes to its connection. Returns the row.
    async fn publish_one(
        &self,
        req: PersistRequest,
        id: i64,
        at: DateTime<Utc>,
        prev: Option<[i64; 2]>,
        own: bool,
    ) -> StoredMessage {
        {
            let sent = Sent {
                shard: req.origin.shard,
                at: req.enqueued,
            };
            // Issue 14: a kick or ban is its `member` frame (a ban's end in
            // `edited_at`); its requester gets its ack instead, ref or not.
            let (kick, until) = match req.kind {
                Kind::Member { user, seconds, .. } => (Some(user), ban_until(at, seconds)),
                _ => (None, None),
            };
            let stored = StoredMessage {
                id,
                from_user: req.from,
                username: req.username,
                content: req.content,
                timestamp: at,
                target: req.target,
                // An edit or delete is encoded as its event frame.
                kind: req.kind,
                edited_at: until,
                deleted: false,
            };
            let frame = encode_message(&stored);
            let own = match (req.kind, &stored.target) {
                _ if !own => None,
                (Kind::Member { user, ban, .. }, Target::Room(room)) => Some(Arc::new(OwnCopy {
                    origin: req.origin,
                    frame: encode_access_ack(
                        if ban { "ban_ack" } else { "kick_ack" },
                        room,
                        user,
                        until,
                        req.reference.as_ref(),
                    ),
                })),
                _ => req.reference.map(|r| {
                    Arc::new(OwnCopy {
                        origin: req.origin,
                        frame: encode_message_for(&stored, Some(&r)),
                    })
                }),
            };
            let event = match stored.target.clone() {
                Target::Room(room) => ShardEvent::Room {
                    room,
                    id,
                    frame,
                    own,
                    sent,
                    kick,
                },
                Target::User(to) => ShardEvent::Users {
                    users: [stored.from_user, to],
                    id,
                    frame,
                    own,
                    sent,
                },
            };
            match &self.link {
                None => self.router.publish(event).await,
                Some(link) => {
                    let prev = prev.unwrap_or([0, 0]);
                    if let Err(refused) = link.send(Committed { event, prev }).await {
                        // The link is gone (shutdown): deliver here at least.
                        self.router.publish(refused.0.event).await;
                    }
                }
            }
            stored
        }
    }

    /// Refuses a whole batch the database rejected for good.
    pub(super) async fn refuse_batch(
        &self,
        batch: &mut Vec<PersistRequest>,
        err: &tokio_postgres::Error,
        span: &tracing::Span,
    ) {
        span.in_scope(|| warn!(error = %err, rows = batch.len(), "batch refused by the database"));
        self.refuse(std::mem::take(batch)).await;
    }

    /// Refuses the messages whose persist deadline passed, logging how many.
    pub(super) async fn refuse_expired(&self, expired: Vec<PersistRequest>, span: &tracing::Span) {
        span.in_scope(|| {
            warn!(
                rows = expired.len(),
                "messages not stored within the persist timeout"
            )
        });
        self.refuse(expired).await;
    }

    /// Tells each sender its message was not stored (it is delivered to no one).
    pub(super) async fn refuse(&self, requests: Vec<PersistRequest>) {
        const NOT_STORED: &str = "message not stored: database unavailable";
        let shared = encode_error_for(NOT_STORED, None);
        self.metrics().not_stored.add(requests.len() as u64);
        for mut req in requests {
            if let Some(reply) = req.reply.take() {
                let _ = reply.send(Outcome::NotStored);
                continue;
            }
            let Origin { shard, conn } = req.origin;
            let frame = match &req.reference {
                None => shared.clone(),
                Some(r) => encode_error_for(NOT_STORED, Some(r)),
            };
            self.router
                .send_to(shard, ShardEvent::Conn { conn, frame })
                .await;
        }
    }
}
