//! The writer pool: dedicated threads that persist messages in batches and
//! only then publish them for delivery.
//!
//! Each writer is one OS thread with its own single-threaded tokio runtime,
//! one PostgreSQL connection and one bounded mailbox. It takes up to
//! `batch_max` queued messages (waiting `batch_linger` for more when the
//! batch is short), stores them, and after the commit encodes each message
//! once and hands it on. Failures are retried with back-off; each message is
//! given up on at its own deadline (`enqueued + persist_timeout`), and its
//! sender is told it was not stored. A (sender, `client_id`) already stored
//! is answered to its sender with the original message ([`Fate`]).
//!
//! # Single-node mode
//!
//! A room always maps to the same writer (by a hash of its name) and every
//! DM goes through writer 0. A writer reserves ids in blocks from
//! `messages_id_seq`, gives a batch its ids and time before the first
//! attempt, and inserts it with one `INSERT ... SELECT FROM UNNEST ... ON
//! CONFLICT DO NOTHING` statement. So ids increase in commit order within a
//! room and within each user's DMs, and delivery through the [`Router`]
//! follows that order. A retry keeps the same ids and time, which makes a
//! retry after an unknown outcome idempotent.
//!
//! # Cluster mode
//!
//! Several nodes write the same streams, so a block reserved ahead would not
//! follow commit order. Each batch is one transaction that locks its rooms,
//! then its DM users (sorted, always in that order, so batches on any node
//! cannot deadlock), reads each stream's last id, draws the batch's ids from
//! the sequence *inside* the lock and inserts; each stored row is chained to
//! its stream's previous message (its predecessors). The transaction id is
//! kept before `COMMIT` is sent, so a commit whose answer was lost is
//! resolved with `txid_status`, never by inserting again. Committed messages
//! are handed, with their predecessors, to the cluster link, which orders
//! them with other nodes' messages and delivers them.
//!
//! # Layout
//!
//! - `mod.rs` (here): [`spawn`], [`WriterPool`], [`WriterSettings`] and the
//!   writer thread: its run loop (fill, linger), its connection and health,
//!   the back-off shared by both modes.
//! - `handle`: what shards use: [`PersistRequest`], [`SubmitError`],
//!   [`Writers`], [`writer_for`].
//! - `batch`: pure helpers over a batch: the insert's columns, [`Fate`],
//!   expired rows, a cluster batch's streams and predecessors.
//! - `sql`: [`BatchInserter`] and its statements: the single-node insert,
//!   the cluster transaction ([`ClusterOutcome`]) and its resolution, one
//!   `client_id` lookup for both.
//! - `single`: single-node mode's retry loop.
//! - `cluster`: cluster mode's retry loop.
//! - `publish`: after a batch: the success arm both loops share (metrics,
//!   then publishing what was committed), and refusing what was not stored.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, info_span, warn, Instrument};

use crate::cluster::Committed;
use crate::mesh::{mailbox, Mailbox, MailboxSender};
use crate::metrics::{Metrics, WriterMetrics};
use crate::router::Router;

mod batch;
mod cluster;
mod handle;
mod publish;
mod single;
mod sql;

pub use batch::Fate;
pub use handle::{refused_deleted, writer_for, Outcome, PersistRequest, SubmitError, Writers};
pub use sql::{BatchInserter, ClusterOutcome};

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// PostgreSQL connection string.
    pub database_url: String,
    /// Most rows per insert.
    pub batch_max: usize,
    /// Wait for more rows when a batch is short.
    pub batch_linger: Duration,
    /// Give up on a message not committed this long after it was queued.
    pub persist_timeout: Duration,
    /// Capacity of each writer's queue.
    pub queue: usize,
    /// Wait for the WAL flush at each commit (PostgreSQL `synchronous_commit`).
    pub synchronous_commit: bool,
    /// Counters; writer `i` writes only its own block.
    pub metrics: Arc<Metrics>,
}

/// The running writer threads; stopping drains what is queued first.
#[derive(Debug)]
pub struct WriterPool {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    queues: Arc<[MailboxSender<PersistRequest>]>,
}

/// Starts `count` writer threads publishing through `router` or, in
/// cluster mode, handing committed messages to the cluster `link`.
///
/// Returns once every writer has built its runtime. Fails if a thread could
/// not be started or its runtime could not be built; the writers already
/// started are then stopped (and joined) first.
pub fn spawn(
    count: usize,
    settings: WriterSettings,
    router: Router,
    link: Option<tokio::sync::mpsc::Sender<Committed>>,
) -> std::io::Result<(Writers, WriterPool)> {
    let stop = Arc::new(AtomicBool::new(false));
    let healthy: Arc<[AtomicBool]> = (0..count).map(|_| AtomicBool::new(false)).collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut queues = Vec::with_capacity(count);
    let mut threads = Vec::with_capacity(count);
    let mut started = Ok(());
    for index in 0..count {
        let (tx, rx) = mailbox(settings.queue);
        queues.push(tx);
        let writer = Writer {
            index,
            mailbox: rx,
            router: router.clone(),
            link: link.clone(),
            settings: settings.clone(),
            stop: stop.clone(),
            healthy: healthy.clone(),
            db: None,
            ids: VecDeque::new(),
        };
        let ready = ready_tx.clone();
        match std::thread::Builder::new()
            .name(format!("writer-{index}"))
            .spawn(move || writer.run_on_own_runtime(ready))
        {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                started = Err(e);
                break;
            }
        }
    }
    drop(ready_tx);
    // Each started thread answers once, when its runtime is built (or not).
    for _ in 0..threads.len() {
        if started.is_err() {
            break;
        }
        started = match ready_rx.recv() {
            Ok(answer) => answer,
            Err(_) => Err(std::io::Error::other("a writer thread exited")),
        };
    }
    let queues: Arc<[_]> = queues.into();
    let pool = WriterPool {
        threads,
        stop,
        queues: queues.clone(),
    };
    if let Err(e) = started {
        pool.stop_and_join();
        return Err(e);
    }
    Ok((Writers { queues, healthy }, pool))
}

impl WriterPool {
    /// Asks every writer to persist and publish what is queued, then exit;
    /// waits for them.
    pub fn stop_and_join(self) {
        self.stop.store(true, Ordering::Release);
        for q in self.queues.iter() {
            q.ring();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One writer thread's state: its mailbox, its connection and, in
/// single-node mode, the ids it reserved.
struct Writer {
    index: usize,
    mailbox: Mailbox<PersistRequest>,
    router: Router,
    /// Cluster mode: committed messages go to the cluster link, which
    /// orders them with other nodes' and delivers them.
    link: Option<tokio::sync::mpsc::Sender<Committed>>,
    settings: WriterSettings,
    stop: Arc<AtomicBool>,
    /// This writer's entry in [`Writers::healthy`].
    healthy: Arc<[AtomicBool]>,
    db: Option<BatchInserter>,
    /// Ids reserved from the sequence, ascending.
    ids: VecDeque<i64>,
}

/// An attempt with no answer for this long drops its connection.
const STUCK_CONNECTION: Duration = Duration::from_secs(1);

impl Writer {
    /// The thread's body: builds its runtime, tells `ready` whether that
    /// worked (as shards do), and runs [`run`](Self::run) on it.
    fn run_on_own_runtime(self, ready: std::sync::mpsc::Sender<std::io::Result<()>>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let error = format!("writer {}: runtime: {e}", self.index);
                let _ = ready.send(Err(std::io::Error::new(e.kind(), error)));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        drop(ready);
        let span = info_span!("writer", index = self.index);
        rt.block_on(self.run().instrument(span));
    }

    /// Batches what the mailbox holds (lingering when a batch is short) and
    /// persists each batch, until stopped with an empty mailbox.
    async fn run(mut self) {
        // Connect up front so that readiness reflects the database at once.
        if let Err(e) = self.connect().await {
            warn!(error = %e, "writer could not connect yet; will retry with the first batch");
        }
        let mut batch: Vec<PersistRequest> = Vec::with_capacity(self.settings.batch_max);
        loop {
            self.fill(&mut batch);
            if batch.is_empty() {
                if self.stop.load(Ordering::Acquire) {
                    break;
                }
                if self.db.is_none() {
                    // Disconnected after a failure: while idle, try again
                    // every second so that readiness recovers by itself.
                    tokio::select! {
                        () = self.mailbox.rung() => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {
                            let _ = self.connect().await;
                        }
                    }
                } else {
                    self.mailbox.rung().await;
                }
                continue;
            }
            if batch.len() < self.settings.batch_max
                && !self.settings.batch_linger.is_zero()
                && !self.stop.load(Ordering::Acquire)
            {
                tokio::time::sleep(self.settings.batch_linger).await;
                self.fill(&mut batch);
            }
            if self.link.is_some() {
                self.persist_and_publish_cluster(&mut batch).await;
            } else {
                self.persist_and_publish(&mut batch).await;
            }
        }
        debug!("writer stopped");
    }

    /// Tops the batch up from the mailbox, without waiting.
    fn fill(&self, batch: &mut Vec<PersistRequest>) {
        while batch.len() < self.settings.batch_max {
            match self.mailbox.try_pop() {
                Some(r) => batch.push(r),
                None => break,
            }
        }
    }

    /// After a transient failure: drops the connection, marks the writer
    /// unhealthy, sleeps `backoff` (at most `cap`) and doubles it (up to 1 s).
    async fn back_off(
        &mut self,
        err: &tokio_postgres::Error,
        backoff: &mut Duration,
        cap: Duration,
        span: &tracing::Span,
    ) {
        self.db = None;
        self.set_healthy(false);
        span.in_scope(
            || warn!(error = %err, retry_in = ?*backoff, "database unavailable, retrying batch"),
        );
        tokio::time::sleep((*backoff).min(cap)).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(1));
    }

    /// Connects unless connected; keeps the health flag in step.
    async fn connect(&mut self) -> Result<(), tokio_postgres::Error> {
        if self.db.as_ref().is_some_and(|db| !db.is_closed()) {
            return Ok(());
        }
        self.db = None;
        let result = async {
            let db = BatchInserter::connect(&self.settings.database_url).await?;
            if !self.settings.synchronous_commit {
                db.set_synchronous_commit(false).await?;
            }
            Ok(db)
        }
        .await;
        self.set_healthy(result.is_ok());
        self.db = Some(result?);
        debug!("writer connected");
        Ok(())
    }

    /// This writer's counters.
    fn metrics(&self) -> &WriterMetrics {
        self.settings.metrics.writer(self.index)
    }

    /// Sets this writer's entry in [`Writers::healthy`].
    fn set_healthy(&self, healthy: bool) {
        self.healthy[self.index].store(healthy, Ordering::Release);
    }
}
