//! Counters and histograms for `GET /metrics` (Prometheus / OpenMetrics
//! text, encoded by the `prometheus-client` crate).
//!
//! Counting costs nothing noticeable on the hot path: every value has one
//! writer thread (its shard or its writer), lives in that thread's own
//! cache-line-aligned block, and is bumped with a relaxed load and store (no
//! locked instruction, no allocation). A scrape, on whichever shard receives
//! it, reads every block and sums or labels them; queue depths are read from
//! the queues themselves at that moment.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::budget::ReplyGauges;

pub use crate::handshake::Refusal;
pub use feed::FeedMetrics;

use feed::FeedSnapshot;

mod feed;

/// The `Content-Type` of the scrape response.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A monotonic count written by exactly one thread (see the module docs).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`. Only the owning thread may call this: a relaxed load and
    /// store, not an atomic read-modify-write.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A level (e.g. open connections) written by exactly one thread.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v + 1, Ordering::Relaxed);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v - 1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A fixed-bucket histogram written by exactly one thread.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds, ascending; an implicit `+Inf` bucket follows.
    bounds: &'static [f64],
    /// Non-cumulative counts, one per bound plus `+Inf`.
    buckets: Box<[Counter]>,
    /// Sum of observations, as `f64` bits.
    sum: AtomicU64,
}

/// A consistent-enough copy of a histogram, for encoding.
#[derive(Debug, Clone, Default)]
struct HistogramSnapshot {
    sum: f64,
    count: u64,
    /// Cumulative counts per upper bound (the last is `+Inf`).
    buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records one observation (owning thread only).
    #[inline]
    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].inc();
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed)) + v;
        self.sum.store(sum.to_bits(), Ordering::Relaxed);
    }

    /// Records a duration, in seconds.
    #[inline]
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, c) in self.buckets.iter().enumerate() {
            cumulative += c.get();
            buckets.push((self.bounds.get(i).copied().unwrap_or(f64::MAX), cumulative));
        }
        HistogramSnapshot {
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
            count: cumulative,
            buckets,
        }
    }
}

impl HistogramSnapshot {
    fn merge(&mut self, other: &HistogramSnapshot) {
        if self.buckets.is_empty() {
            *self = other.clone();
            return;
        }
        self.sum += other.sum;
        self.count += other.count;
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
    }
}

/// Rows per batch insert.
const BATCH_SIZE_BOUNDS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
/// Seconds: commit latency and delivery latency.
const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// One shard's counters; written by the shard thread only.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Handshakes that opened a WebSocket.
    pub handshakes_accepted: Counter,
    /// Refused handshakes, indexed like [`Refusal::ALL`].
    refused: [Counter; Refusal::ALL.len()],
    /// WebSocket data frames read from clients.
    pub frames_in: Counter,
    /// WebSocket frames written to clients.
    pub frames_out: Counter,
    /// Of those, frames the shard's flusher wrote straight to the socket,
    /// without waking the connection's task (issue 16).
    pub frames_out_direct: Counter,
    /// Direct writes that could not finish (the socket was full, or the
    /// connection task was writing) and went to the connection task.
    pub direct_handoffs: Counter,
    /// Connections closed because their outbox overflowed.
    pub slow_consumers: Counter,
    /// Requests refused by the per-connection rate limit.
    pub rate_limited: Counter,
    /// Connections closed for flooding past the rate limit.
    pub flood_disconnects: Counter,
    /// Database errors met by this shard (handshakes, joins, histories, checks).
    pub db_errors: Counter,
    /// Failed `accept` calls (out of descriptors, mostly).
    pub accept_errors: Counter,
    /// Seconds from a message's arrival on this shard (queued for its
    /// writer) to its frame being queued on its sender's connection, after
    /// the commit and the trip through this shard's inbox.
    pub delivery_seconds: LatencyHistogram,
}

/// A [`Histogram`] over the latency buckets (seconds).
#[derive(Debug)]
pub struct LatencyHistogram(Histogram);

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(Histogram::new(LATENCY_BOUNDS))
    }
}

impl std::ops::Deref for LatencyHistogram {
    type Target = Histogram;
    fn deref(&self) -> &Histogram {
        &self.0
    }
}

impl ShardMetrics {
    /// Counts a refused handshake.
    #[inline]
    pub fn refused(&self, reason: Refusal) {
        self.refused[reason as usize].inc();
    }
}

/// One writer's counters; written by the writer thread only.
#[derive(Debug)]
#[repr(align(128))]
pub struct WriterMetrics {
    /// Messages committed.
    pub persisted: Counter,
    /// Messages given up on (not stored; their senders were told).
    pub not_stored: Counter,
    /// Failed database attempts (connect, reserve, insert).
    pub db_errors: Counter,
    /// Rows per committed batch.
    pub batch_size: Histogram,
    /// Seconds from a batch's first attempt to its commit.
    pub commit_seconds: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            persisted: Counter::default(),
            not_stored: Counter::default(),
            db_errors: Counter::default(),
            batch_size: Histogram::new(BATCH_SIZE_BOUNDS),
            commit_seconds: Histogram::new(LATENCY_BOUNDS),
        }
    }
}

/// A level set by whichever thread last read it (a plain atomic store).
#[derive(Debug, Default)]
pub struct Level(AtomicI64);

impl Level {
    /// Sets the level.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current level.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A count bumped by any thread (an atomic add: off the hot path).
#[derive(Debug, Default)]
pub struct SharedCounter(AtomicU64);

impl SharedCounter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every shard's and writer's counters; shared (`Arc`) by all threads.
#[derive(Debug)]
pub struct Metrics {
    shards: Box<[ShardMetrics]>,
    writers: Box<[WriterMetrics]>,
    /// This node's name and whether it runs in cluster mode (`chat_node_info`).
    node: (String, bool),
    /// The reply budget's bytes in flight, high-water mark and refusals.
    pub replies: Arc<ReplyGauges>,
    /// The event feed and its webhook.
    pub feed: FeedMetrics,
}

impl Metrics {
    /// Zeroed counters for `shards` shards and `writers` writers.
    pub fn new(shards: usize, writers: usize) -> Metrics {
        Metrics {
            shards: (0..shards.max(1))
                .map(|_| ShardMetrics::default())
                .collect(),
            writers: (0..writers.max(1))
                .map(|_| WriterMetrics::default())
                .collect(),
            node: (String::new(), false),
            replies: Arc::default(),
            feed: FeedMetrics::default(),
        }
    }

    /// Names the node in `chat_node_info{node, cluster}` (cluster mode or not).
    pub fn with_node(mut self, node: &str, clustered: bool) -> Metrics {
        self.node = (node.to_owned(), clustered);
        self
    }

    /// Shard `index`'s block (the last one if out of range).
    pub fn shard(&self, index: usize) -> &ShardMetrics {
        &self.shards[index.min(self.shards.len() - 1)]
    }

    /// Writer `index`'s block (the last one if out of range).
    pub fn writer(&self, index: usize) -> &WriterMetrics {
        &self.writers[index.min(self.writers.len() - 1)]
    }

    /// Encodes every metric in the OpenMetrics text format. `inbox_depths`
    /// are the events waiting in each shard's inbox, `writer_depths` the
    /// messages waiting in each writer's queue, read just now.
    pub fn render(&self, inbox_depths: Vec<usize>, writer_depths: Vec<usize>) -> String {
        let snapshot = Snapshot::take(self, inbox_depths, writer_depths);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snapshot));
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Every value read at one scrape.
#[derive(Debug)]
struct Snapshot {
    node: (String, bool),
    shards: Vec<ShardSnapshot>,
    writers: Vec<WriterSnapshot>,
    inbox_depths: Vec<usize>,
    writer_depths: Vec<usize>,
    batch_size: HistogramSnapshot,
    commit_seconds: HistogramSnapshot,
    delivery_seconds: HistogramSnapshot,
    replies: (u64, u64, u64),
    feed: FeedSnapshot,
}

#[derive(Debug)]
struct ShardSnapshot {
    connections: i64,
    accepted: u64,
    refused: [u64; Refusal::ALL.len()],
    frames_in: u64,
    frames_out: u64,
    frames_out_direct: u64,
    direct_handoffs: u64,
    slow_consumers: u64,
    rate_limited: u64,
    flood_disconnects: u64,
    db_errors: u64,
    accept_errors: u64,
}

#[derive(Debug)]
struct WriterSnapshot {
    persisted: u64,
    not_stored: u64,
    db_errors: u64,
}

impl Snapshot {
    fn take(m: &Metrics, inbox_depths: Vec<usize>, writer_depths: Vec<usize>) -> Snapshot {
        let mut delivery_seconds = HistogramSnapshot::default();
        let shards = m
            .shards
            .iter()
            .map(|s| {
                delivery_seconds.merge(&s.delivery_seconds.snapshot());
                ShardSnapshot {
                    connections: s.connections.get(),
                    accepted: s.handshakes_accepted.get(),
                    refused: std::array::from_fn(|i| s.refused[i].get()),
                    frames_in: s.frames_in.get(),
                    frames_out: s.frames_out.get(),
                    frames_out_direct: s.frames_out_direct.get(),
                    direct_handoffs: s.direct_handoffs.get(),
                    slow_consumers: s.slow_consumers.get(),
                    rate_limited: s.rate_limited.get(),
                    flood_disconnects: s.flood_disconnects.get(),
                    db_errors: s.db_errors.get(),
                    accept_errors: s.accept_errors.get(),
                }
            })
            .collect();
        let mut batch_size = HistogramSnapshot::default();
        let mut commit_seconds = HistogramSnapshot::default();
        let writers = m
            .writers
            .iter()
            .map(|w| {
                batch_size.merge(&w.batch_size.snapshot());
                commit_seconds.merge(&w.commit_seconds.snapshot());
                WriterSnapshot {
                    persisted: w.persisted.get(),
                    not_stored: w.not_stored.get(),
                    db_errors: w.db_errors.get(),
                }
            })
            .collect();
        Snapshot {
            node: m.node.clone(),
            shards,
            writers,
            inbox_depths,
            writer_depths,
            batch_size,
            commit_seconds,
            delivery_seconds,
            replies: (
                m.replies.in_flight(),
                m.replies.high_water(),
                m.replies.refused(),
            ),
            feed: FeedSnapshot::read(&m.feed),
        }
    }
}

type Fmt = Result<(), std::fmt::Error>;

/// One sample of a family: its labels and its value.
type Sample<V> = (Vec<(&'static str, String)>, V);

/// Encodes one counter family with one sample per `(labels, value)`.
fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = Sample<u64>>,
) -> Fmt {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes one gauge family with one sample per `(labels, value)`.
fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = Sample<i64>>,
) -> Fmt {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    h: &HistogramSnapshot,
) -> Fmt {
    // prometheus-client sums the counts it is given into cumulative ones:
    // hand it each bucket's own count (passing the snapshot's cumulative
    // counts made every bucket past the first too high, up to
    // `+Inf` > `_count`).
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let own = cumulative - below;
            below = cumulative;
            (bound, own)
        })
        .collect();
    if let Some(last) = buckets.last_mut() {
        last.0 = f64::INFINITY;
    }
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Histogram)?;
    metric
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum, h.count, &buckets, None)
}

fn by_shard(i: usize) -> Vec<(&'static str, String)> {
    vec![("shard", i.to_string())]
}

fn by_writer(i: usize) -> Vec<(&'static str, String)> {
    vec![("writer", i.to_string())]
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Fmt {
        let shards = || self.shards.iter().enumerate();
        let writers = || self.writers.iter().enumerate();
        gauges(
            &mut e,
            "chat_node_info",
            "This node: its --node-id and whether it runs in cluster mode (value 1).",
            [(
                vec![
                    ("node", self.node.0.clone()),
                    ("cluster", self.node.1.to_string()),
                ],
                1,
            )],
        )?;
        gauges(
            &mut e,
            "chat_connections",
            "Open WebSocket connections, per shard.",
            shards().map(|(i, s)| (by_shard(i), s.connections)),
        )?;
        let (in_flight, high_water, refused) = self.replies;
        gauges(
            &mut e,
            "chat_reply_bytes_in_flight",
            "Reply bytes (replay and history pages) read and not yet written, all shards.",
            [(vec![], i64::try_from(in_flight).unwrap_or(i64::MAX))],
        )?;
        gauges(
            &mut e,
            "chat_reply_bytes_in_flight_max",
            "The most reply bytes in flight at once since start (at most --reply-budget-bytes plus one page).",
            [(vec![], i64::try_from(high_water).unwrap_or(i64::MAX))],
        )?;
        counters(
            &mut e,
            "chat_reply_budget_refused",
            "Replay and history requests refused with `server busy` after waiting --reply-budget-wait-ms.",
            [(vec![], refused)],
        )?;
        counters(
            &mut e,
            "chat_handshakes_accepted",
            "Handshakes that opened a WebSocket, per shard.",
            shards().map(|(i, s)| (by_shard(i), s.accepted)),
        )?;
        counters(
            &mut e,
            "chat_handshakes_refused",
            "Refused WebSocket handshakes, per shard and reason.",
            shards().flat_map(|(i, s)| {
                Refusal::ALL.iter().map(move |r| {
                    (
                        vec![("shard", i.to_string()), ("reason", r.label().to_owned())],
                        s.refused[*r as usize],
                    )
                })
            }),
        )?;
        counters(
            &mut e,
            "chat_frames_in",
            "WebSocket data frames read from clients, per shard.",
            shards().map(|(i, s)| (by_shard(i), s.frames_in)),
        )?;
        counters(
            &mut e,
            "chat_frames_out",
            "WebSocket frames written to clients, per shard.",
            shards().map(|(i, s)| (by_shard(i), s.frames_out)),
        )?;
        counters(
            &mut e,
            "chat_frames_out_direct",
            "Of chat_frames_out, frames written straight from the delivery pass (no connection task woken), per shard.",
            shards().map(|(i, s)| (by_shard(i), s.frames_out_direct)),
        )?;
        counters(
            &mut e,
            "chat_direct_handoffs",
            "Direct writes handed to the connection's task (socket full, or the task was writing), per shard.",
            shards().map(|(i, s)| (by_shard(i), s.direct_handoffs)),
        )?;
        counters(
            &mut e,
            "chat_slow_consumer_disconnects",
            "Connections closed because they did not read fast enough, per shard.",
            shards().map(|(i, s)| (by_shard(i), s.slow_consumers)),
        )?;
        counters(
            &mut e,
            "chat_rate_limited_requests",
            "Requests refused by the per-connection rate limit, per shard.",
            shards().map(|(i, s)| (by_shard(i), s.rate_limited)),
        )?;
        counters(
            &mut e,
            "chat_accept_errors",
            "Failed accepts (out of descriptors, mostly), per shard.",
            shards().map(|(i, s)| (by_shard(i), s.accept_errors)),
        )?;
        counters(
            &mut e,
            "chat_rate_limit_disconnects",
            "Connections closed for flooding past the rate limit, per shard.",
            shards().map(|(i, s)| (by_shard(i), s.flood_disconnects)),
        )?;
        counters(
            &mut e,
            "chat_db_errors",
            "Database errors, per shard pool and per writer.",
            shards()
                .map(|(i, s)| {
                    (
                        vec![("component", "shard".to_owned()), ("index", i.to_string())],
                        s.db_errors,
                    )
                })
                .chain(writers().map(|(i, w)| {
                    (
                        vec![("component", "writer".to_owned()), ("index", i.to_string())],
                        w.db_errors,
                    )
                })),
        )?;
        counters(
            &mut e,
            "chat_messages_persisted",
            "Messages committed to PostgreSQL, per writer.",
            writers().map(|(i, w)| (by_writer(i), w.persisted)),
        )?;
        counters(
            &mut e,
            "chat_messages_not_stored",
            "Messages given up on after the persist timeout (senders told), per writer.",
            writers().map(|(i, w)| (by_writer(i), w.not_stored)),
        )?;
        gauges(
            &mut e,
            "chat_writer_queue_depth",
            "Messages waiting for each writer.",
            self.writer_depths
                .iter()
                .enumerate()
                .map(|(i, d)| (by_writer(i), *d as i64)),
        )?;
        gauges(
            &mut e,
            "chat_shard_inbox_depth",
            "Events waiting in each shard's cross-shard inbox.",
            self.inbox_depths
                .iter()
                .enumerate()
                .map(|(i, d)| (by_shard(i), *d as i64)),
        )?;
        histogram(
            &mut e,
            "chat_batch_size",
            "Rows per committed insert batch.",
            None,
            &self.batch_size,
        )?;
        histogram(
            &mut e,
            "chat_commit_latency",
            "Time from a batch's first insert attempt to its commit.",
            Some(&Unit::Seconds),
            &self.commit_seconds,
        )?;
        histogram(
            &mut e,
            "chat_delivery_latency",
            "Time from a message's arrival on its shard to its frame being queued on the sender's connection (after the commit and the shard inbox).",
            Some(&Unit::Seconds),
            &self.delivery_seconds,
        )?;
        self.feed.encode(&mut e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_sum() {
        let h = Histogram::new(&[1.0, 10.0]);
        h.observe(0.5);
        h.observe(3.0);
        h.observe(3.0);
        h.observe(50.0);
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.sum, 56.5);
        assert_eq!(s.buckets.iter().map(|b| b.1).collect::<Vec<_>>(), [1, 3, 4]);
    }

    #[test]
    fn renders_openmetrics_with_every_family() {
        let m = Metrics::new(2, 1).with_node("node-a", true);
        assert!(m
            .render(vec![0, 0], vec![0])
            .contains("chat_node_info{node=\"node-a\",cluster=\"true\"} 1"));
        m.shard(0).connections.inc();
        m.shard(1).frames_in.add(5);
        m.shard(1).refused(Refusal::ExpiredToken);
        m.writer(0).persisted.add(3);
        m.writer(0).batch_size.observe(3.0);
        m.writer(0).batch_size.observe(30.0);
        m.writer(0).batch_size.observe(30.0);
        m.writer(0)
            .commit_seconds
            .observe_duration(Duration::from_millis(3));
        m.feed.head.set(9);
        m.feed.webhook_lag_ms.set(1500);
        m.feed.webhook_failures.add(2);
        let text = m.render(vec![0, 7], vec![2]);
        for line in [
            "chat_connections{shard=\"0\"} 1",
            "chat_frames_in_total{shard=\"1\"} 5",
            "chat_handshakes_refused_total{shard=\"1\",reason=\"expired_token\"} 1",
            "chat_messages_persisted_total{writer=\"0\"} 3",
            "chat_shard_inbox_depth{shard=\"1\"} 7",
            "chat_writer_queue_depth{writer=\"0\"} 2",
            // Cumulative, each observation counted once: `+Inf` = count.
            "chat_batch_size_bucket{le=\"1.0\"} 0",
            "chat_batch_size_bucket{le=\"5.0\"} 1",
            "chat_batch_size_bucket{le=\"20.0\"} 1",
            "chat_batch_size_bucket{le=\"50.0\"} 3",
            "chat_batch_size_bucket{le=\"1000.0\"} 3",
            "chat_batch_size_bucket{le=\"+Inf\"} 3",
            "chat_batch_size_count 3",
            "chat_commit_latency_seconds_count 1",
            "chat_delivery_latency_seconds_bucket{le=\"+Inf\"} 0",
            "chat_feed_head 9",
            "chat_webhook_lag_seconds 1.5",
            "chat_webhook_failures_total 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
