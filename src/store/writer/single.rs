//! Single-node mode's retry loop: a batch gets ids from the writer's
//! reserved block and a time before its first attempt, and keeps them
//! through every retry, so that `ON CONFLICT DO NOTHING` makes a retry after
//! an unknown outcome idempotent.

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use tracing::{debug, info_span, Instrument};

use super::batch::{has_events, take_expired, Assigned, Fate};
use super::{PersistRequest, Writer, STUCK_CONNECTION};
use crate::store::is_transient;

impl Writer {
    /// Persists the batch, then publishes every message; tells the sender
    /// of every message that could not be stored in time.
    ///
    /// Transient failures are retried with back-off and the *same* ids
    /// (`ON CONFLICT (id) DO NOTHING` makes a retry after an unknown outcome
    /// idempotent). Each message is given up on at its own deadline
    /// (`enqueued + persist_timeout`); the rest keep their ids and go on.
    pub(super) async fn persist_and_publish(&mut self, batch: &mut Vec<PersistRequest>) {
        let span = info_span!("batch", rows = batch.len());
        let started = Instant::now();
        let mut assigned: Option<Assigned> = None;
        let mut backoff = Duration::from_millis(25);
        let timeout = self.settings.persist_timeout;
        loop {
            let now = Instant::now();
            if batch.iter().any(|r| r.enqueued + timeout <= now) {
                let expired = take_expired(batch, &mut assigned, now, timeout);
                self.refuse_expired(expired, &span).await;
            }
            let Some(deadline) = batch.iter().map(|r| r.enqueued + timeout).min() else {
                break;
            };
            let attempt_started = Instant::now();
            let attempt = tokio::time::timeout(
                deadline.saturating_duration_since(now),
                self.try_commit(batch, &mut assigned),
            )
            .instrument(span.clone())
            .await;
            let err = match attempt {
                Ok(Ok(fates)) => {
                    span.in_scope(|| debug!(elapsed = ?started.elapsed(), "batch committed"));
                    let Assigned { ids, at } = assigned.take().expect("assigned before commit");
                    self.committed(batch, ids, fates, at, &[], started).await;
                    break;
                }
                Ok(Err(e)) => {
                    self.metrics().db_errors.inc();
                    e
                }
                // No answer by the earliest deadline: outcome unknown; the
                // loop refuses what expired and retries the rest with the
                // same ids. Only a connection that stayed silent for a while
                // is dropped: one that merely ran out of a short budget
                // (an overloaded queue) is healthy, and reconnecting per
                // batch would make the overload worse.
                Err(_) => {
                    self.metrics().db_errors.inc();
                    if attempt_started.elapsed() >= STUCK_CONNECTION {
                        self.db = None;
                    }
                    continue;
                }
            };
            if !is_transient(&err) {
                self.refuse_batch(batch, &err, &span).await;
                break;
            }
            let until_deadline = deadline.saturating_duration_since(Instant::now());
            self.back_off(&err, &mut backoff, until_deadline, &span)
                .await;
        }
        self.router.flush();
    }

    /// Inserts the batch (assigning ids and time on the first attempt) and
    /// tells, for each row, whether it is stored under its own id.
    async fn try_commit(
        &mut self,
        batch: &[PersistRequest],
        assigned: &mut Option<Assigned>,
    ) -> Result<Vec<Fate>, tokio_postgres::Error> {
        self.connect().await?;
        let db = self.db.as_mut().expect("connected");
        if assigned.is_none() {
            if self.ids.len() < batch.len() {
                let fresh = db
                    .reserve_ids(batch.len().max(self.settings.batch_max))
                    .await?;
                self.ids.extend(fresh);
            }
            let ids = self.ids.drain(..batch.len()).collect();
            // Stored with microsecond precision; send exactly what is stored.
            let at = Utc::now().trunc_subsecs(6);
            *assigned = Some(Assigned { ids, at });
        }
        let Assigned { ids, at } = assigned.as_ref().expect("just assigned");
        if has_events(batch) {
            // Issue 14: edits and deletes are applied with their event rows,
            // in the transaction that inserts the batch's messages.
            return db.insert_with_events(batch, ids, *at).await;
        }
        let inserted = db.insert(batch, ids, *at).await?;
        if inserted as usize == batch.len() || batch.iter().all(|r| r.client_id.is_none()) {
            // Every row is new, or was stored by an earlier attempt of this
            // very batch (only an id conflict can skip a row without a client_id).
            return Ok(Vec::new());
        }
        db.fates(batch, ids).await
    }
}
