//! The streams the link follows, and their order.
//!
//! [`Link::reconcile`] makes the followed streams match the node's
//! [`Interest`](super::Interest): it subscribes to the subject of each newly
//! wanted stream and starts its [`Sequencer`] at the stream's floor (read
//! from PostgreSQL when no shard supplied one), and drops the streams no
//! longer wanted (unsubscribing). [`Link::sequence`] puts each committed
//! message, local or remote, through the sequencer of every followed stream
//! it belongs to, delivers what became ready and schedules a fill for a
//! stream left holding messages (the fill itself: `fill`).

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle as TaskHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::link::Link;
use super::remote::forward;
use super::sequencer::Sequencer;
use super::wire::Remote;
use super::{Committed, Stream};
use crate::protocol::{Frame, UserId};
use crate::router::{OwnCopy, Sent, ShardEvent};
use crate::store::StoreError;

/// A followed stream: its subscription and its order.
pub(super) struct Followed {
    /// The stream's order on this node.
    pub(super) seq: Sequencer,
    /// The task forwarding what the subscription receives (aborting it
    /// drops the subscriber, which unsubscribes).
    pub(super) forwarder: TaskHandle<()>,
}

/// A DM as one user's stream delivers it: `users: [user, user]`, so that a
/// node hosting both users orders each one's DMs on its own.
pub(super) fn user_stream_event(
    user: UserId,
    id: i64,
    frame: Frame,
    own: Option<Arc<OwnCopy>>,
    sent: Sent,
) -> ShardEvent {
    ShardEvent::Users {
        users: [user, user],
        id,
        frame,
        own,
        sent,
    }
}

impl Link {
    /// Puts one committed message (local or remote) through the sequencer
    /// of each followed stream it belongs to.
    pub(super) async fn sequence(
        &mut self,
        c: Committed,
        local: bool,
        nats: &async_nats::Client,
        remote_tx: &mpsc::Sender<Remote>,
    ) {
        let mut parts: Vec<(Stream, i64, i64, ShardEvent)> = Vec::with_capacity(2);
        match c.event {
            ShardEvent::Room { ref room, id, .. } => {
                let stream = Stream::Room(room.clone());
                parts.push((stream, id, c.prev[0], c.event));
            }
            ShardEvent::Users {
                users: [from, to],
                id,
                frame,
                own,
                sent,
            } => {
                let event = user_stream_event(from, id, frame.clone(), own, sent);
                parts.push((Stream::User(from), id, c.prev[0], event));
                if to != from {
                    // Observed once, with the sender's stream.
                    let event = user_stream_event(to, id, frame, None, Sent::remote());
                    parts.push((Stream::User(to), id, c.prev[1], event));
                }
            }
            other => {
                // Never sent to the link; deliver as it is.
                self.router.publish(other).await;
                return;
            }
        }
        for (stream, id, prev, event) in parts {
            if local && !self.streams.contains_key(&stream) && self.interest.contains(&stream) {
                // A member appeared a moment ago: follow it before ordering.
                self.reconcile(nats, remote_tx).await;
            }
            let Some(followed) = self.streams.get_mut(&stream) else {
                continue;
            };
            let ready = followed.seq.offer(id, prev, event);
            let held = followed.seq.held();
            for event in ready {
                self.router.publish(event).await;
            }
            if held == 0 {
                self.fill_due.remove(&stream);
            } else if held >= self.settings.fill_max {
                self.fill_due.insert(stream, Instant::now());
            } else {
                let at = Instant::now() + self.settings.gap_wait;
                self.fill_due.entry(stream).or_insert(at);
            }
        }
    }

    /// Follows what the shards need and stops following the rest.
    pub(super) async fn reconcile(
        &mut self,
        nats: &async_nats::Client,
        remote_tx: &mpsc::Sender<Remote>,
    ) {
        self.reconcile_due = false;
        let wanted = self.interest.take_snapshot();
        let wanted_set: HashSet<&Stream> = wanted.iter().map(|w| &w.0).collect();
        let gone: Vec<Stream> = self
            .streams
            .keys()
            .filter(|s| !wanted_set.contains(s))
            .cloned()
            .collect();
        for stream in gone {
            if let Some(f) = self.streams.remove(&stream) {
                // Dropping the subscriber unsubscribes.
                f.forwarder.abort();
                self.fill_due.remove(&stream);
                debug!(subject = %stream.subject(), "unsubscribed");
            }
        }
        for (stream, floor) in wanted {
            if self.streams.contains_key(&stream) {
                continue;
            }
            let last = match floor {
                Some(f) => f,
                None => match self.stored_last(&stream).await {
                    Ok(l) => l,
                    Err(e) => {
                        warn!(error = %e, "cluster link: cannot read a stream's last id; retrying");
                        self.reconcile_due = true;
                        continue;
                    }
                },
            };
            let subject = stream.subject();
            let subscriber = match nats.subscribe(subject.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, %subject, "cluster link: subscribe failed; retrying");
                    self.interest.restore_floor(&stream, floor);
                    self.reconcile_due = true;
                    continue;
                }
            };
            let forwarder = tokio::spawn(forward(
                subscriber,
                remote_tx.clone(),
                nats.clone(),
                self.settings.presence.clone(),
            ));
            debug!(%subject, last, "subscribed");
            self.streams.insert(
                stream,
                Followed {
                    seq: Sequencer::new(last),
                    forwarder,
                },
            );
            // What was published before the subscription took effect is
            // caught by the next comparison with PostgreSQL.
            self.check_due = true;
        }
    }

    /// The stream's last stored id (0: none), where a newly followed
    /// stream starts when no shard gave a floor.
    async fn stored_last(&self, stream: &Stream) -> Result<i64, StoreError> {
        match stream {
            Stream::Room(r) => Ok(self
                .store
                .room_lasts(&[r])
                .await?
                .first()
                .map_or(0, |x| x.1)),
            Stream::User(u) => Ok(self.store.dm_lasts(&[*u]).await?.first().map_or(0, |x| x.1)),
        }
    }
}
