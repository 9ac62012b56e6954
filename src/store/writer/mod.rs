//! The writer pool: dedicated threads that persist messages in batches and
//! only then publish them for delivery.
//!
//! Each writer owns one PostgreSQL connection and one bounded mailbox. It
//! takes up to `batch_max` queued messages (waiting `batch_linger` for more
//! when the batch is short), gives them ids from a block it reserved from
//! `messages_id_seq`, inserts them with one `INSERT ... SELECT FROM UNNEST`
//! statement, and after the commit encodes each message once and hands it
//! to the [`Router`]. A room always maps to the same writer and every DM goes
//! through writer 0, so ids increase in commit order within a room and
//! within each user's DMs, and delivery follows that order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use tokio_postgres::{Client, NoTls, Statement};
use tracing::{debug, info_span, warn, Instrument};

use super::is_transient;
use crate::cluster::Committed;
use crate::mesh::{mailbox, Mailbox, MailboxSender, PushError};
use crate::metrics::{Metrics, WriterMetrics};
use crate::protocol::{
    encode_error_for, encode_message, encode_message_for, Ref, StoredMessage, Target, UserId,
};
use crate::router::{Origin, OwnCopy, Router, Sent, ShardEvent};

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

/// The shards' handle on the writers: it can only submit messages (and
/// ask whether the writers are healthy).
#[derive(Debug, Clone)]
pub struct Writers {
    queues: Arc<[MailboxSender<PersistRequest>]>,
    healthy: Arc<[AtomicBool]>,
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

    /// Messages waiting in all writer queues.
    pub fn queued(&self) -> usize {
        self.queues.iter().map(|q| q.len()).sum()
    }

    /// Messages waiting in each writer's queue, in writer order.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.queues.iter().map(|q| q.len()).collect()
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

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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
pub fn spawn(
    count: usize,
    settings: WriterSettings,
    router: Router,
    link: Option<tokio::sync::mpsc::Sender<Committed>>,
) -> std::io::Result<(Writers, WriterPool)> {
    let stop = Arc::new(AtomicBool::new(false));
    let healthy: Arc<[AtomicBool]> = (0..count).map(|_| AtomicBool::new(false)).collect();
    let mut queues = Vec::with_capacity(count);
    let mut threads = Vec::with_capacity(count);
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
        threads.push(
            std::thread::Builder::new()
                .name(format!("writer-{index}"))
                .spawn(move || writer.run_on_own_runtime())?,
        );
    }
    let queues: Arc<[_]> = queues.into();
    Ok((
        Writers {
            queues: queues.clone(),
            healthy,
        },
        WriterPool {
            threads,
            stop,
            queues,
        },
    ))
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

/// One PostgreSQL connection with the writer's statements prepared: the
/// batch insert and the id reservation. Public so benchmarks measure the
/// very statement the writers run.
pub struct BatchInserter {
    client: Client,
    insert: Statement,
    next_ids: Statement,
    by_client_id: Statement,
}

/// What a cluster-mode batch transaction decided, kept until its commit is
/// known to have happened (a lost commit answer is resolved with
/// `txid_status`, never by inserting again).
#[derive(Debug, Clone)]
pub struct ClusterOutcome {
    /// The transaction, for `txid_status`.
    pub xid: i64,
    /// Ids given to the batch's rows, in batch order.
    pub ids: Vec<i64>,
    /// Each row's predecessors (see [`Committed::prev`]); `[0, 0]` for rows not stored.
    pub prevs: Vec<[i64; 2]>,
    /// Rows not stored (their `client_id` was), with what was stored under it.
    pub fates: Vec<Fate>,
    /// The batch's timestamp.
    pub at: DateTime<Utc>,
}

const TXID: &str = "SELECT txid_current()::int8";
const TXID_STATUS: &str = "SELECT txid_status($1::int8)";
const LOCK_ROOMS: &str =
    "SELECT name FROM rooms WHERE name = ANY($1::text[]) ORDER BY name FOR NO KEY UPDATE";
const LOCK_USERS: &str =
    "SELECT id FROM users WHERE id = ANY($1::int8[]) ORDER BY id FOR NO KEY UPDATE";

impl BatchInserter {
    /// Connects (driving the connection on the current runtime) and prepares.
    pub async fn connect(database_url: &str) -> Result<BatchInserter, tokio_postgres::Error> {
        let mut cfg: tokio_postgres::Config = database_url.parse()?;
        cfg.connect_timeout(Duration::from_secs(2));
        cfg.application_name("chat_server writer");
        let (client, connection) = cfg.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "writer connection ended");
            }
        });
        let (insert, next_ids, by_client_id) = tokio::try_join!(
            client.prepare(INSERT),
            client.prepare(NEXT_IDS),
            client.prepare(BY_CLIENT_ID)
        )?;
        Ok(BatchInserter {
            client,
            insert,
            next_ids,
            by_client_id,
        })
    }

    /// Sets `synchronous_commit` for this connection's commits. Off, a
    /// commit returns before its WAL is flushed: lower latency, but a
    /// PostgreSQL or OS crash may lose the last fraction of a second of
    /// acknowledged messages (a crash of this server loses nothing either way).
    pub async fn set_synchronous_commit(&self, on: bool) -> Result<(), tokio_postgres::Error> {
        let value = if on { "on" } else { "off" };
        self.client
            .batch_execute(&format!("SET synchronous_commit = {value}"))
            .await
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Reserves `n` fresh ids from `messages_id_seq`, ascending.
    pub async fn reserve_ids(&self, n: usize) -> Result<Vec<i64>, tokio_postgres::Error> {
        let want = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = self.client.query(&self.next_ids, &[&want]).await?;
        let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Inserts `batch` with the given ids and time in one statement (one
    /// transaction). Rows whose id is already stored are skipped, which
    /// makes a retry after an unknown outcome safe; so are rows whose
    /// (sender, `client_id`) is already stored. Returns the rows inserted.
    pub async fn insert(
        &self,
        batch: &[PersistRequest],
        ids: &[i64],
        at: DateTime<Utc>,
    ) -> Result<u64, tokio_postgres::Error> {
        let (from, to, room, content, client_id) = columns(batch);
        self.client
            .execute(
                &self.insert,
                &[&ids, &from, &to, &room, &content, &at, &client_id],
            )
            .await
    }

    /// Cluster mode: stores the batch in one transaction that locks its
    /// rooms and its DM users (sorted: rooms by name, then users by id, so
    /// concurrent batches on any node cannot deadlock), reads each stream's
    /// last id, takes ids from the sequence *inside* the lock and inserts.
    /// Within a stream, ids therefore increase in commit order across every
    /// node, and each row's predecessor is exact. `pending` is set just
    /// before the commit is sent: if its answer is lost, the caller asks
    /// [`resolve`](Self::resolve) instead of inserting again.
    pub async fn commit_cluster(
        &mut self,
        batch: &[PersistRequest],
        pending: &mut Option<ClusterOutcome>,
    ) -> Result<ClusterOutcome, tokio_postgres::Error> {
        let mut rooms: Vec<&str> = Vec::new();
        let mut users: Vec<UserId> = Vec::new();
        for r in batch {
            match &r.target {
                Target::Room(name) => rooms.push(name),
                Target::User(to) => {
                    users.push(r.from);
                    users.push(*to);
                }
            }
        }
        rooms.sort_unstable();
        rooms.dedup();
        users.sort_unstable();
        users.dedup();
        let tx = self.client.transaction().await?;
        let xid: i64 = tx.query_one(TXID, &[]).await?.get(0);
        if !rooms.is_empty() {
            tx.query(LOCK_ROOMS, &[&rooms]).await?;
        }
        if !users.is_empty() {
            tx.query(LOCK_USERS, &[&users]).await?;
        }
        // Read after the locks: every earlier commit of these streams is visible.
        let mut room_last: std::collections::HashMap<String, i64> = if rooms.is_empty() {
            Default::default()
        } else {
            tx.query(super::ROOM_LAST, &[&rooms])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        };
        let mut user_last: std::collections::HashMap<UserId, i64> = if users.is_empty() {
            Default::default()
        } else {
            tx.query(super::DM_LAST, &[&users])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        };
        let want = i64::try_from(batch.len()).unwrap_or(i64::MAX);
        let mut ids: Vec<i64> = tx
            .query(&self.next_ids, &[&want])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        ids.sort_unstable();
        let at = Utc::now().trunc_subsecs(6);
        let (from, to, room, content, client_id) = columns(batch);
        let inserted: std::collections::HashSet<i64> = tx
            .query(
                INSERT_RETURNING,
                &[&ids, &from, &to, &room, &content, &at, &client_id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut fates_out = Vec::new();
        if inserted.len() < batch.len() {
            let keys: Vec<(UserId, &str)> = batch
                .iter()
                .filter_map(|r| r.client_id.as_deref().map(|c| (r.from, c)))
                .collect();
            let from: Vec<UserId> = keys.iter().map(|k| k.0).collect();
            let cids: Vec<&str> = keys.iter().map(|k| k.1).collect();
            let found: Vec<(StoredMessage, String)> = tx
                .query(&self.by_client_id, &[&from, &cids])
                .await?
                .iter()
                .map(|r| (super::stored_message(r), r.get::<_, String>(7)))
                .collect();
            fates_out = fates(batch, &ids, found);
        }
        // Chain each stored row to its stream's previous message.
        let mut prevs = Vec::with_capacity(batch.len());
        for (r, id) in batch.iter().zip(&ids) {
            if !inserted.contains(id) {
                prevs.push([0, 0]);
                continue;
            }
            match &r.target {
                Target::Room(name) => {
                    let last = room_last.entry(name.to_string()).or_insert(0);
                    prevs.push([*last, *last]);
                    *last = *id;
                }
                Target::User(to) => {
                    let p_from = *user_last.get(&r.from).unwrap_or(&0);
                    user_last.insert(r.from, *id);
                    let p_to = if *to == r.from {
                        p_from
                    } else {
                        let p = *user_last.get(to).unwrap_or(&0);
                        user_last.insert(*to, *id);
                        p
                    };
                    prevs.push([p_from, p_to]);
                }
            }
        }
        let outcome = ClusterOutcome {
            xid,
            ids,
            prevs,
            fates: fates_out,
            at,
        };
        *pending = Some(outcome.clone());
        tx.commit().await?;
        Ok(outcome)
    }

    /// Whether a transaction whose commit answer was lost committed:
    /// `Some(true)` committed, `Some(false)` aborted (or unknown to the
    /// server: never committed), `None` still running.
    pub async fn resolve(&self, xid: i64) -> Result<Option<bool>, tokio_postgres::Error> {
        let status: Option<String> = self.client.query_one(TXID_STATUS, &[&xid]).await?.get(0);
        Ok(match status.as_deref() {
            Some("committed") => Some(true),
            Some("in progress") => None,
            _ => Some(false),
        })
    }

    /// The stored messages of these (sender, `client_id`) pairs.
    pub async fn by_client_id(
        &self,
        keys: &[(UserId, &str)],
    ) -> Result<Vec<(StoredMessage, String)>, tokio_postgres::Error> {
        let from: Vec<UserId> = keys.iter().map(|k| k.0).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let rows = self
            .client
            .query(&self.by_client_id, &[&from, &ids])
            .await?;
        Ok(rows
            .iter()
            .map(|r| (super::stored_message(r), r.get::<_, String>(7)))
            .collect())
    }
}

/// The batch as the insert's column arrays.
#[allow(clippy::type_complexity)]
fn columns(
    batch: &[PersistRequest],
) -> (
    Vec<UserId>,
    Vec<Option<UserId>>,
    Vec<Option<&str>>,
    Vec<&str>,
    Vec<Option<&str>>,
) {
    let mut from = Vec::with_capacity(batch.len());
    let mut to: Vec<Option<UserId>> = Vec::with_capacity(batch.len());
    let mut room: Vec<Option<&str>> = Vec::with_capacity(batch.len());
    let mut content = Vec::with_capacity(batch.len());
    let mut client_id: Vec<Option<&str>> = Vec::with_capacity(batch.len());
    for r in batch {
        client_id.push(r.client_id.as_deref());
        from.push(r.from);
        match &r.target {
            Target::Room(name) => {
                to.push(None);
                room.push(Some(&**name));
            }
            Target::User(u) => {
                to.push(Some(*u));
                room.push(None);
            }
        }
        content.push(r.content.as_str());
    }
    (from, to, room, content, client_id)
}

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

const INSERT: &str = "INSERT INTO messages \
          (id, from_user, to_user, room, content, \"timestamp\", client_id) \
     SELECT u.id, u.from_user, u.to_user, u.room, u.content, $6, u.client_id \
     FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[], $7::text[]) \
          AS u(id, from_user, to_user, room, content, client_id) \
     ON CONFLICT DO NOTHING";
const INSERT_RETURNING: &str = "INSERT INTO messages \
          (id, from_user, to_user, room, content, \"timestamp\", client_id) \
     SELECT u.id, u.from_user, u.to_user, u.room, u.content, $6, u.client_id \
     FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[], $7::text[]) \
          AS u(id, from_user, to_user, room, content, client_id) \
     ON CONFLICT DO NOTHING RETURNING id";
const BY_CLIENT_ID: &str = "SELECT m.id, m.from_user, u.username, m.content, m.\"timestamp\", \
            m.room, m.to_user, m.client_id \
     FROM messages m JOIN users u ON u.id = m.from_user \
     WHERE (m.from_user, m.client_id) IN (SELECT * FROM UNNEST($1::int8[], $2::text[]))";
const NEXT_IDS: &str = "SELECT nextval('messages_id_seq')::int8 FROM generate_series(1, $1::int8)";

/// An attempt with no answer for this long drops its connection.
const STUCK_CONNECTION: Duration = Duration::from_secs(1);

/// Cluster mode: how long past its deadline a batch whose commit answer was
/// lost keeps trying to learn the outcome before its senders are refused.
const UNRESOLVED_MAX: Duration = Duration::from_secs(30);

/// Ids and time given to a batch before its first insert attempt, kept
/// across retries so a retried insert is idempotent.
struct Assigned {
    ids: Vec<i64>,
    at: DateTime<Utc>,
}

impl Writer {
    fn run_on_own_runtime(self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("writer runtime");
        let span = info_span!("writer", index = self.index);
        rt.block_on(self.run().instrument(span));
    }

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
            self.persist_and_publish(&mut batch).await;
        }
        debug!("writer stopped");
    }

    fn fill(&self, batch: &mut Vec<PersistRequest>) {
        while batch.len() < self.settings.batch_max {
            match self.mailbox.try_pop() {
                Some(r) => batch.push(r),
                None => break,
            }
        }
    }

    /// Persists the batch, then publishes every message; tells the sender
    /// of every message that could not be stored in time.
    ///
    /// Transient failures are retried with back-off and the *same* ids
    /// (`ON CONFLICT (id) DO NOTHING` makes a retry after an unknown outcome
    /// idempotent). Each message is given up on at its own deadline
    /// (`enqueued + persist_timeout`); the rest keep their ids and go on.
    async fn persist_and_publish(&mut self, batch: &mut Vec<PersistRequest>) {
        if self.link.is_some() {
            return self.persist_and_publish_cluster(batch).await;
        }
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
                    self.set_healthy(true);
                    let m = self.metrics();
                    // Retried client_ids and lost rows were not stored now.
                    let skipped = fates.iter().filter(|f| !matches!(f, Fate::Stored)).count();
                    m.persisted.add((batch.len() - skipped) as u64);
                    m.batch_size.observe(batch.len() as f64);
                    m.commit_seconds.observe_duration(started.elapsed());
                    let _e = span.enter();
                    debug!(elapsed = ?started.elapsed(), "batch committed");
                    drop(_e);
                    let Assigned { ids, at } = assigned.take().expect("assigned before commit");
                    self.publish(batch.drain(..).zip(ids), fates, at, &[]).await;
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

    /// Cluster mode's [`persist_and_publish`](Self::persist_and_publish):
    /// the same deadlines and retries, with the batch stored by
    /// [`BatchInserter::commit_cluster`] and handed to the cluster link.
    /// A commit whose answer was lost is resolved (`txid_status`) before
    /// anything else happens to the batch, so a row is never stored twice.
    async fn persist_and_publish_cluster(&mut self, batch: &mut Vec<PersistRequest>) {
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
                Ok(Ok(outcome)) => {
                    self.set_healthy(true);
                    let m = self.metrics();
                    let skipped = outcome
                        .fates
                        .iter()
                        .filter(|f| !matches!(f, Fate::Stored))
                        .count();
                    m.persisted.add((batch.len() - skipped) as u64);
                    m.batch_size.observe(batch.len() as f64);
                    m.commit_seconds.observe_duration(started.elapsed());
                    let ClusterOutcome {
                        ids,
                        prevs,
                        fates,
                        at,
                        ..
                    } = outcome;
                    self.publish(batch.drain(..).zip(ids), fates, at, &prevs)
                        .await;
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
            match fates.next().unwrap_or(Fate::Stored) {
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
            }
            let sent = Sent {
                shard: req.origin.shard,
                at: req.enqueued,
            };
            let stored = StoredMessage {
                id,
                from_user: req.from,
                username: req.username,
                content: req.content,
                timestamp: at,
                target: req.target,
            };
            let frame = encode_message(&stored);
            let own = req.reference.map(|r| {
                Arc::new(OwnCopy {
                    origin: req.origin,
                    frame: encode_message_for(&stored, Some(&r)),
                })
            });
            let event = match stored.target {
                Target::Room(room) => ShardEvent::Room {
                    room,
                    id,
                    frame,
                    own,
                    sent,
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
                    let prev = prevs.get(i).copied().unwrap_or([0, 0]);
                    if let Err(refused) = link.send(Committed { event, prev }).await {
                        // The link is gone (shutdown): deliver here at least.
                        self.router.publish(refused.0.event).await;
                    }
                }
            }
        }
    }

    /// Refuses a whole batch the database rejected for good.
    async fn refuse_batch(
        &self,
        batch: &mut Vec<PersistRequest>,
        err: &tokio_postgres::Error,
        span: &tracing::Span,
    ) {
        span.in_scope(|| warn!(error = %err, rows = batch.len(), "batch refused by the database"));
        self.refuse(std::mem::take(batch)).await;
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

    /// Refuses the messages whose persist deadline passed, logging how many.
    async fn refuse_expired(&self, expired: Vec<PersistRequest>, span: &tracing::Span) {
        span.in_scope(|| {
            warn!(
                rows = expired.len(),
                "messages not stored within the persist timeout"
            )
        });
        self.refuse(expired).await;
    }

    /// Tells each sender its message was not stored (it is delivered to no one).
    async fn refuse(&self, requests: Vec<PersistRequest>) {
        const NOT_STORED: &str = "message not stored: database unavailable";
        let shared = encode_error_for(NOT_STORED, None);
        self.metrics().not_stored.add(requests.len() as u64);
        for req in requests {
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

    fn set_healthy(&self, healthy: bool) {
        self.healthy[self.index].store(healthy, Ordering::Release);
    }

    /// Inserts the batch (assigning ids and time on the first attempt) and
    /// tells, for each row, whether it is stored under its own id.
    async fn try_commit(
        &mut self,
        batch: &[PersistRequest],
        assigned: &mut Option<Assigned>,
    ) -> Result<Vec<Fate>, tokio_postgres::Error> {
        self.connect().await?;
        let db = self.db.as_ref().expect("connected");
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
        let inserted = db.insert(batch, ids, *at).await?;
        if inserted as usize == batch.len() || batch.iter().all(|r| r.client_id.is_none()) {
            // Every row is new, or was stored by an earlier attempt of this
            // very batch (only an id conflict can skip a row without a client_id).
            return Ok(Vec::new());
        }
        let keys: Vec<(UserId, &str)> = batch
            .iter()
            .filter_map(|r| r.client_id.as_deref().map(|c| (r.from, c)))
            .collect();
        let found = db.by_client_id(&keys).await?;
        Ok(fates(batch, ids, found))
    }
}

/// What became of one row of a committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Stored under the id it was given: deliver it.
    Stored,
    /// Its (sender, `client_id`) was already stored as this message: answer
    /// the sender with it and deliver nothing.
    Duplicate(StoredMessage),
    /// Neither inserted nor found (cannot happen while the unique index
    /// exists): tell the sender it was not stored.
    Lost,
}

/// Matches a batch whose insert skipped rows with what the database holds
/// for its `client_id`s: a row found under its own id was stored (now or by
/// an earlier attempt), one found under another id is a retry.
fn fates(batch: &[PersistRequest], ids: &[i64], found: Vec<(StoredMessage, String)>) -> Vec<Fate> {
    let stored: std::collections::HashMap<(UserId, String), StoredMessage> = found
        .into_iter()
        .map(|(m, client_id)| ((m.from_user, client_id), m))
        .collect();
    batch
        .iter()
        .zip(ids)
        .map(|(r, &id)| match &r.client_id {
            None => Fate::Stored,
            // Two sends with one client_id in one batch both find the row
            // the first one stored: the second is its duplicate.
            Some(c) => match stored.get(&(r.from, c.to_string())) {
                Some(m) if m.id == id => Fate::Stored,
                Some(m) => Fate::Duplicate(m.clone()),
                None => Fate::Lost,
            },
        })
        .collect()
}

/// Removes the requests whose deadline passed (and their ids, if assigned).
fn take_expired(
    batch: &mut Vec<PersistRequest>,
    assigned: &mut Option<Assigned>,
    now: Instant,
    timeout: Duration,
) -> Vec<PersistRequest> {
    let mut expired = Vec::new();
    let mut kept = Vec::with_capacity(batch.len());
    let mut kept_ids = Vec::with_capacity(batch.len());
    let ids = assigned.as_mut().map(|a| std::mem::take(&mut a.ids));
    for (i, req) in batch.drain(..).enumerate() {
        if req.enqueued + timeout <= now {
            expired.push(req);
        } else {
            kept.push(req);
            if let Some(ids) = &ids {
                kept_ids.push(ids[i]);
            }
        }
    }
    *batch = kept;
    if let Some(a) = assigned.as_mut() {
        a.ids = kept_ids;
    }
    expired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(enqueued: Instant) -> PersistRequest {
        PersistRequest {
            target: Target::User(1),
            from: 2,
            username: Arc::from("u"),
            content: "c".into(),
            origin: Origin { shard: 0, conn: 0 },
            enqueued,
            reference: None,
            client_id: None,
        }
    }

    #[test]
    fn skipped_rows_are_told_apart_by_client_id() {
        let t0 = Instant::now();
        let with_key = |key: &str| PersistRequest {
            client_id: Some(key.into()),
            ..request(t0)
        };
        let batch = vec![
            request(t0),
            with_key("a"),
            with_key("b"),
            with_key("a"),
            with_key("c"),
        ];
        let ids = [10, 11, 12, 13, 14];
        let msg = |id: i64| StoredMessage {
            id,
            from_user: 2,
            username: Arc::from("u"),
            content: "c".into(),
            timestamp: DateTime::<Utc>::UNIX_EPOCH,
            target: Target::User(1),
        };
        // "a" was stored as 11 by this batch, "b" long ago as 5; "c" is missing.
        let found = vec![(msg(11), "a".to_string()), (msg(5), "b".to_string())];
        let f = fates(&batch, &ids, found);
        assert_eq!(f[0], Fate::Stored);
        assert_eq!(f[1], Fate::Stored);
        assert_eq!(f[2], Fate::Duplicate(msg(5)));
        assert!(
            matches!(&f[3], Fate::Duplicate(m) if m.id == 11),
            "{:?}",
            f[3]
        );
        assert_eq!(f[4], Fate::Lost);
    }

    #[test]
    fn expired_requests_leave_with_their_ids() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(5);
        let mut batch = vec![
            request(t0),
            request(t0 + Duration::from_secs(2)),
            request(t0 + Duration::from_secs(1)),
        ];
        let mut assigned = Some(Assigned {
            ids: vec![10, 11, 12],
            at: Utc::now(),
        });
        let expired = take_expired(
            &mut batch,
            &mut assigned,
            t0 + Duration::from_millis(6100),
            timeout,
        );
        assert_eq!(expired.len(), 2);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].enqueued, t0 + Duration::from_secs(2));
        assert_eq!(assigned.unwrap().ids, vec![11]);
    }

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
