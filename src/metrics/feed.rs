//! The event feed's and the webhook deliverer's metrics (issue 15):
//! values written off the hot path (the API's head poller, the feed
//! thread's retention and deliverer) and their families at scrape time.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::{counters, gauges, Fmt, Level, SharedCounter};

/// The event feed's and the webhook deliverer's values (written by the
/// API's head poller, the feed thread's retention and deliverer).
#[derive(Debug, Default)]
pub struct FeedMetrics {
    /// The last seq committed to the feed, as this node last read it.
    pub head: Level,
    /// 1 while this node holds the webhook lock and delivers, else 0.
    pub webhook_delivering: Level,
    /// The last seq the webhook acknowledged (the stored cursor).
    pub webhook_cursor: Level,
    /// Events committed and not yet acknowledged by the webhook.
    pub webhook_lag_events: Level,
    /// Age of the oldest event not yet acknowledged, in milliseconds (0: none).
    pub webhook_lag_ms: Level,
    /// Webhook POSTs sent (retries included).
    pub webhook_attempts: SharedCounter,
    /// Webhook POSTs that failed (non-2xx, timeout, refused, ...).
    pub webhook_failures: SharedCounter,
    /// Events acknowledged by the webhook.
    pub webhook_delivered: SharedCounter,
    /// Events retention deleted.
    pub purged: SharedCounter,
}

/// [`FeedMetrics`] read at one scrape.
#[derive(Debug)]
pub(super) struct FeedSnapshot {
    head: i64,
    delivering: i64,
    cursor: i64,
    lag_events: i64,
    lag_ms: i64,
    attempts: u64,
    failures: u64,
    delivered: u64,
    purged: u64,
}

impl FeedSnapshot {
    /// Reads every value of `m` now.
    pub(super) fn read(m: &FeedMetrics) -> FeedSnapshot {
        FeedSnapshot {
            head: m.head.get(),
            delivering: m.webhook_delivering.get(),
            cursor: m.webhook_cursor.get(),
            lag_events: m.webhook_lag_events.get(),
            lag_ms: m.webhook_lag_ms.get(),
            attempts: m.webhook_attempts.get(),
            failures: m.webhook_failures.get(),
            delivered: m.webhook_delivered.get(),
            purged: m.purged.get(),
        }
    }

    /// Encodes the feed's and the webhook's families.
    pub(super) fn encode(&self, e: &mut DescriptorEncoder) -> Fmt {
        let one = |v: i64| [(vec![], v)];
        let count = |v: u64| [(vec![], v)];
        gauges(
            e,
            "chat_feed_head",
            "The last seq committed to the event feed, as this node last read it.",
            one(self.head),
        )?;
        gauges(
            e,
            "chat_webhook_delivering",
            "1 while this node holds the webhook lock and delivers the feed.",
            one(self.delivering),
        )?;
        gauges(
            e,
            "chat_webhook_cursor",
            "The last seq the webhook acknowledged (its stored cursor).",
            one(self.cursor),
        )?;
        gauges(
            e,
            "chat_webhook_lag_events",
            "Events committed to the feed and not yet acknowledged by the webhook.",
            one(self.lag_events),
        )?;
        let mut family = e.encode_descriptor(
            "chat_webhook_lag",
            "Age of the oldest event not yet acknowledged by the webhook (0: none).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.lag_ms as f64 / 1000.0).encode(family.encode_family(&Vec::<(
            &str,
            String,
        )>::new(
        ))?)?;
        counters(
            e,
            "chat_webhook_attempts",
            "Webhook POSTs sent, retries included.",
            count(self.attempts),
        )?;
        counters(
            e,
            "chat_webhook_failures",
            "Webhook POSTs that failed (not 2xx, timed out, refused).",
            count(self.failures),
        )?;
        counters(
            e,
            "chat_webhook_delivered_events",
            "Events acknowledged by the webhook.",
            count(self.delivered),
        )?;
        counters(
            e,
            "chat_feed_purged_events",
            "Events deleted from the feed by retention.",
            count(self.purged),
        )
    }
}
