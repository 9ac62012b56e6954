//! The webhook deliverer (issue 15): POSTs the event feed to
//! `--webhook-url` in seq order, in batches of at most `--webhook-batch`
//! events (a JSON array), signed ([`sign`]), with `X-Chat-Seq: FIRST-LAST`.
//!
//! - Exactly one node delivers a URL at a time: the deliverer holds a
//!   session-level advisory lock on its own PostgreSQL connection, and uses
//!   that same connection to read the feed and store the cursor. When the
//!   node dies its connection closes, the lock is released, and another
//!   node's deliverer (trying every [`LOCK_RETRY`]) takes over from the
//!   stored cursor.
//! - A 2xx advances the cursor (`webhook_cursors`, keyed by URL); anything
//!   else, a timeout (`--webhook-timeout`) or a refused connection retries
//!   the SAME body after a full-jitter exponential delay capped at
//!   `--webhook-backoff-max` ([`backoff`]), indefinitely. So an event is
//!   never skipped; it may be POSTed more than once (a 2xx whose cursor
//!   update is lost, a take-over), so receivers deduplicate by `seq`.
//! - A URL configured for the first time starts at the feed's head.
//! - Events deleted by retention before they were delivered are logged as
//!   an error and skipped: the cursor moves to the oldest seq kept.

pub mod backoff;
pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use tracing::{debug_span, error, info, info_span, warn, Instrument};

use crate::metrics::Metrics;
use crate::store::feed::{self, upkeep, Event, ReadError};
use backoff::Backoff;

/// How often a node that does not hold the lock tries to take it.
pub const LOCK_RETRY: Duration = Duration::from_millis(500);

/// Most bytes of a 2xx answer's body read (the rest is dropped with the
/// connection).
const MAX_ANSWER_READ: usize = 64 * 1024;

/// What the deliverer needs.
#[derive(Clone)]
pub struct Settings {
    /// Where to POST (also the cursor's key).
    pub url: String,
    /// The HMAC key of `X-Chat-Signature`.
    pub secret: String,
    /// Most events per POST.
    pub batch: u32,
    /// Time one POST may take.
    pub timeout: Duration,
    /// The longest delay between two attempts.
    pub backoff_max: Duration,
    /// How often the feed is read when everything was delivered.
    pub poll: Duration,
    /// The database (the deliverer's own connection).
    pub database_url: String,
}

/// Why a delivery session ended (the deliverer starts a new one).
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The database failed or the connection (and so the lock) was lost.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// Connecting failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The lock's connection closed while a batch was being retried.
    #[error("the lock's database connection closed")]
    LockLost,
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Delivers forever (until the future is dropped): one session at a time,
/// a new one a moment after a session fails.
pub async fn run(settings: Settings, metrics: Arc<Metrics>) {
    // reqwest's rustls has no crypto provider of its own (no aws-lc
    // build): the process-wide default is `ring`, as for the server's TLS.
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut pause = Backoff::new(Duration::from_secs(5));
    loop {
        let session =
            session(&settings, &metrics).instrument(info_span!("webhook", url = %settings.url));
        if let Err(e) = session.await {
            warn!(url = %settings.url, error = %e, "webhook deliverer: session ended; starting again");
        }
        metrics.feed.webhook_delivering.set(0);
        tokio::time::sleep(pause.next_delay().max(Duration::from_millis(100))).await;
    }
}

/// One session: connect, wait for the lock, then deliver from the stored
/// cursor until something fails.
async fn session(s: &Settings, metrics: &Metrics) -> Result<(), DeliverError> {
    let http = reqwest::Client::builder()
        .timeout(s.timeout)
        .connect_timeout(s.timeout)
        // A redirect is not an acknowledgement (and the body is not
        // re-sent elsewhere): 3xx is retried like any other failure.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let db = crate::store::connect(&s.database_url).await?;
    while !upkeep::try_webhook_lock(&db, &s.url).await? {
        tokio::time::sleep(LOCK_RETRY).await;
    }
    let mut cursor = upkeep::cursor(&db, &s.url).await?;
    metrics.feed.webhook_delivering.set(1);
    metrics.feed.webhook_cursor.set(cursor);
    info!(url = %s.url, cursor, "webhook: this node delivers");
    let mut backoff = Backoff::new(s.backoff_max);
    loop {
        let events = match feed::read(&db, cursor, i64::from(s.batch)).await {
            Ok(events) => events,
            Err(ReadError::Gone { oldest, .. }) => {
                error!(
                    url = %s.url,
                    cursor,
                    oldest,
                    lost = oldest - 1 - cursor,
                    "webhook: events were deleted by retention before they were delivered; \
                     SKIPPING to the oldest kept (raise --feed-retention or fix the receiver)"
                );
                cursor = oldest - 1;
                upkeep::set_cursor(&db, &s.url, cursor).await?;
                continue;
            }
            Err(ReadError::Db(e)) => return Err(e.into()),
            Err(ReadError::Pool(_)) => return Err(DeliverError::LockLost),
        };
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            // Nothing committed past the cursor when the read ran.
            metrics.feed.head.set(cursor);
            metrics.feed.webhook_lag_events.set(0);
            metrics.feed.webhook_lag_ms.set(0);
            tokio::time::sleep(s.poll).await;
            continue;
        };
        let head = feed::head(&db).await?.seq;
        metrics.feed.head.set(head);
        metrics.feed.webhook_lag_events.set(head - cursor);
        let (first_seq, last_seq, oldest_at) = (first.seq, last.seq, first.at);
        post(s, &http, &db, &events, &mut backoff, metrics, oldest_at)
            .instrument(debug_span!(
                "webhook_batch",
                first = first_seq,
                last = last_seq
            ))
            .await?;
        upkeep::set_cursor(&db, &s.url, last_seq).await?;
        let delivered = u64::try_from(last_seq - cursor).unwrap_or(0);
        cursor = last_seq;
        metrics.feed.webhook_cursor.set(cursor);
        metrics.feed.webhook_delivered.add(delivered);
        metrics.feed.webhook_lag_events.set((head - cursor).max(0));
        if head <= cursor {
            metrics.feed.webhook_lag_ms.set(0);
        }
        tracing::debug!(
            first = first_seq,
            last = last_seq,
            "webhook: batch acknowledged"
        );
    }
}

/// POSTs `events` until a 2xx, retrying the same body after each failure.
async fn post(
    s: &Settings,
    http: &reqwest::Client,
    db: &Client,
    events: &[Event],
    backoff: &mut Backoff,
    metrics: &Metrics,
    oldest_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), DeliverError> {
    let (first, last) = match (events.first(), events.last()) {
        (Some(f), Some(l)) => (f.seq, l.seq),
        _ => return Ok(()),
    };
    let body = match serde_json::to_vec(events) {
        Ok(b) => bytes::Bytes::from(b),
        Err(e) => unreachable!("events serialize: {e}"),
    };
    let signature = sign::signature(s.secret.as_bytes(), &body);
    let seq = format!("{first}-{last}");
    backoff.reset();
    loop {
        if db.is_closed() {
            // Another node may hold the lock now: stop before posting.
            return Err(DeliverError::LockLost);
        }
        // While failing, the head moves on: keep the lag in events true.
        if let Ok(h) = feed::head(db).await {
            metrics.feed.head.set(h.seq);
            metrics.feed.webhook_lag_events.set(h.seq - (first - 1));
        }
        let lag = chrono::Utc::now() - oldest_at;
        metrics
            .feed
            .webhook_lag_ms
            .set(lag.num_milliseconds().max(0));
        metrics.feed.webhook_attempts.add(1);
        let sent = http
            .post(&s.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::SIGNATURE_HEADER, &signature)
            .header(sign::SEQ_HEADER, &seq)
            .body(body.clone())
            .send()
            .await;
        let failure = match sent {
            Ok(mut r) if r.status().is_success() => {
                // Read a little of the answer (bounded), so the
                // connection can be reused for the next batch.
                let mut read = 0;
                while let Ok(Some(chunk)) = r.chunk().await {
                    read += chunk.len();
                    if read > MAX_ANSWER_READ {
                        break;
                    }
                }
                return Ok(());
            }
            Ok(r) => format!("status {}", r.status()),
            Err(e) if e.is_timeout() => format!("timed out after {:?}", s.timeout),
            Err(e) => format!("{e}"),
        };
        metrics.feed.webhook_failures.add(1);
        let delay = backoff.next_delay();
        warn!(url = %s.url, seq = %seq, failure, retry_in = ?delay, "webhook: delivery failed; retrying the same batch");
        tokio::time::sleep(delay).await;
    }
}
