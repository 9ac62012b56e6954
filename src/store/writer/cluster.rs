//! Cluster mode's retry loop: a batch is stored by one locking transaction
//! ([`BatchInserter::commit_cluster`](super::BatchInserter::commit_cluster));
//! a commit whose answer was lost is resolved (`txid_status`) before
//! anything else happens to the batch, so a row is never stored twice.

use std::time::{Duration, Instant};

use tracing::{info_span, warn, Instrument};

use super::batch::take_expired;
use super::{ClusterOutcome, PersistRequest, Writer, STUCK_CONNECTION};
use crate::store::is_transient;

/// How long past its deadline a batch whose commit answer was lost keeps
/// trying to learn the outcome before its senders are refused.
const UNRESOLVED_MAX: Duration = Duration::from_secs(30);

impl Writer {
    /// Cluster mode's [`persist_and_publish`](Self::persist_and_publish):
    /// the same deadlines and retries, with the batch stored by
    /// [`BatchInserter::commit_cluster`](super::BatchInserter::commit_cluster) and handed to the cluster link.
    /// A commit whose answer was lost is resolved (`txid_status`) before
    /// anything else happens to the batch, so a row is never stored twice.
    pub(super) async fn persist_and_publish_cluster(&mut self, batch: &mut Vec<PersistRequest>) {
        let span = info_span!("batch", rows = batch.len(), cluster = true);
        let started = Instant::now();
        let mut pending: Option<ClusterOutcome> = None;
        let mut backoff = Duration::from_millis(25);
        let timeout = self.settings.persist_timeout;
        loop {
            let now = Instant::now();
            let oldest = batch.iter().map(|r| r.enqueued + timeout).min();
            if pending.is_some() && oldest.is_some_and(|d| now > d + UNRESOLVED_MAX) {
                // The database stayed away: give up on knowing. Rows that
                // were stored after all reach the other members through
                // the cluster link's checks.
                warn!(
                    rows = batch.len(),
                    "commit outcome unknown; senders told not stored"
                );
                self.refuse(std::mem::take(batch)).await;
                break;
            }
            if pending.is_none() && batch.iter().any(|r| r.enqueued + timeout <= now) {
                let expired = take_expired(batch, &mut None, now, timeout);
                self.refuse_expired(expired, &span).await;
            }
            let Some(deadline) = batch.iter().map(|r| r.enqueued + timeout).min() else {
                break;
            };
            let budget = if pending.is_some() {
                deadline
                    .saturating_duration_since(now)
                    .max(STUCK_CONNECTION)
            } else {
                deadline.saturating_duration_since(now)
            };
            let attempt =
                tokio::time::timeout(budget, self.try_commit_cluster(batch, &mut pending))
                    .instrument(span.clone())
                    .await;
            let err = match attempt {
                Ok(Ok(ClusterOutcome {
                    ids,
                    prevs,
                    fates,
                    at,
                    ..
                })) => {
                    self.committed(batch, ids, fates, at, &prevs, started).await;
                    break;
                }
                Ok(Err(e)) => {
                    self.metrics().db_errors.inc();
                    e
                }
                Err(_) => {
                    // A transaction cut mid-way: start again on a new connection.
                    self.db = None;
                    continue;
                }
            };
            if !is_transient(&err) && pending.is_none() {
                self.refuse_batch(batch, &err, &span).await;
                break;
            }
            self.back_off(&err, &mut backoff, Duration::MAX, &span)
                .await;
        }
        self.router.flush();
    }

    /// One cluster-mode attempt: resolves a commit whose answer was lost,
    /// else stores the batch.
    async fn try_commit_cluster(
        &mut self,
        batch: &[PersistRequest],
        pending: &mut Option<ClusterOutcome>,
    ) -> Result<ClusterOutcome, tokio_postgres::Error> {
        self.connect().await?;
        let db = self.db.as_mut().expect("connected");
        if let Some(xid) = pending.as_ref().map(|p| p.xid) {
            loop {
                match db.resolve(xid).await? {
                    Some(true) => {
                        if let Some(outcome) = pending.take() {
                            return Ok(outcome);
                        }
                    }
                    Some(false) => {
                        *pending = None;
                        break;
                    }
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        db.commit_cluster(batch, pending).await
    }
}
