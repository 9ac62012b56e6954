//! Catching up from PostgreSQL: what NATS did not bring.
//!
//! [`Link::check`] compares every followed stream's last delivered id with
//! the stored one (periodically, after a NATS reconnection and after a new
//! subscription) and schedules a fill for each stream behind;
//! [`Link::sequence`] schedules one for a stream holding messages whose
//! predecessor is missing. [`Link::run_due_fills`] runs the fills that are
//! due: [`Link::fill`] reads the stream's stored messages after its last
//! delivered id and hands them to its sequencer.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::follow::user_stream_event;
use super::link::{Link, TICK};
use super::Stream;
use crate::protocol::{encode_message, StoredMessage};
use crate::router::{Sent, ShardEvent};
use crate::store::StoreError;

impl Link {
    /// Compares every followed stream's last delivered id with the stored
    /// one; schedules a fill for those behind (after `gap_wait`, so that a
    /// local message still on its way from a writer arrives with its own copy).
    pub(super) async fn check(&mut self) {
        self.check_due = false;
        let rooms: Vec<&str> = self
            .streams
            .keys()
            .filter_map(|s| match s {
                Stream::Room(r) => Some(&**r),
                Stream::User(_) => None,
            })
            .collect();
        let users: Vec<i64> = self
            .streams
            .keys()
            .filter_map(|s| match s {
                Stream::User(u) => Some(*u),
                Stream::Room(_) => None,
            })
            .collect();
        let mut behind = Vec::new();
        for chunk in rooms.chunks(self.settings.fill_max.max(1)) {
            match self.store.room_lasts(chunk).await {
                Ok(lasts) => behind.extend(
                    lasts
                        .into_iter()
                        .map(|(r, last)| (Stream::Room(Arc::from(r)), last)),
                ),
                Err(e) => {
                    warn!(error = %e, "cluster link: check failed");
                    self.check_due = true;
                    return;
                }
            }
        }
        for chunk in users.chunks(self.settings.fill_max.max(1)) {
            match self.store.dm_lasts(chunk).await {
                Ok(lasts) => behind.extend(lasts.into_iter().map(|(u, l)| (Stream::User(u), l))),
                Err(e) => {
                    warn!(error = %e, "cluster link: check failed");
                    self.check_due = true;
                    return;
                }
            }
        }
        let at = Instant::now() + self.settings.gap_wait;
        for (stream, stored) in behind {
            if let Some(f) = self.streams.get(&stream) {
                if stored > f.seq.last() {
                    self.fill_due.entry(stream).or_insert(at);
                }
            }
        }
    }

    /// Runs the fills that are due; a failed one is tried again after
    /// `gap_wait` (at least a tick).
    pub(super) async fn run_due_fills(&mut self) {
        let now = Instant::now();
        let due: Vec<Stream> = self
            .fill_due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for stream in due {
            self.fill_due.remove(&stream);
            if let Err(e) = self.fill(&stream).await {
                warn!(error = %e, subject = %stream.subject(), "cluster link: fill failed; retrying");
                self.fill_due
                    .insert(stream, Instant::now() + self.settings.gap_wait.max(TICK));
            }
        }
    }

    /// Reads every stored message of the stream after its last delivered
    /// id (in pages of `fill_max`) and delivers them in order.
    async fn fill(&mut self, stream: &Stream) -> Result<(), StoreError> {
        let limit = i64::try_from(self.settings.fill_max.max(1)).unwrap_or(i64::MAX);
        loop {
            let Some(last) = self.streams.get(stream).map(|f| f.seq.last()) else {
                return Ok(());
            };
            let stored: Vec<StoredMessage> = match stream {
                Stream::Room(room) => self.store.room_since(room, last, limit).await?,
                Stream::User(u) => self.store.dm_since(*u, last, limit).await?,
            };
            let full = stored.len() as i64 >= limit;
            let events: Vec<(i64, ShardEvent)> = stored
                .iter()
                .map(|m| (m.id, stored_event(stream, m)))
                .collect();
            let Some(f) = self.streams.get_mut(stream) else {
                return Ok(());
            };
            let n = events.len();
            let ready = f.seq.fill(events);
            let held = f.seq.held();
            debug!(subject = %stream.subject(), read = n, delivered = ready.len(), "filled");
            for event in ready {
                self.router.publish(event).await;
            }
            self.router.flush();
            if !full {
                if held > 0 {
                    // Held messages newer than what is stored cannot be:
                    // they were committed. Look again shortly.
                    self.fill_due
                        .insert(stream.clone(), Instant::now() + self.settings.gap_wait);
                }
                return Ok(());
            }
        }
    }
}

/// The shard event delivering a stored message to one stream's members.
fn stored_event(stream: &Stream, m: &StoredMessage) -> ShardEvent {
    let frame = encode_message(m);
    match stream {
        Stream::Room(room) => ShardEvent::Room {
            room: room.clone(),
            id: m.id,
            frame,
            own: None,
            sent: Sent::remote(),
            kick: match m.kind {
                crate::protocol::Kind::Member { user, .. } => Some(user),
                _ => None,
            },
        },
        Stream::User(u) => user_stream_event(*u, m.id, frame, None, Sent::remote()),
    }
}
