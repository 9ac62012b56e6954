//! The result of one run: every figure, the stderr summary table and the JSON form.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::hist::{fmt_us, Percentiles};

/// All figures of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Target URL.
    pub url: String,
    /// Requested connections.
    pub connections: u32,
    /// Rooms (room scenario).
    pub rooms: Option<u32>,
    /// Senders.
    pub senders: u32,
    /// Target rate in messages/s (0 = saturation); None without traffic.
    pub rate: Option<f64>,
    /// In-flight bound per sender in saturation mode.
    pub inflight: Option<u32>,
    /// Payload bytes.
    pub payload: Option<usize>,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Drain bound in seconds.
    pub drain_limit_s: f64,
    /// Drain actually used in seconds.
    pub drain_s: f64,
    /// Tokio threads per worker.
    pub threads: usize,
    /// Worker processes.
    pub procs: u32,
    /// Source addresses.
    pub source_ips: u8,
    /// Connections set up.
    pub connections_ok: u64,
    /// Connections that failed to set up.
    pub connections_failed: u64,
    /// Connections still open at the end.
    pub connections_open_at_end: u64,
    /// Successful handshakes per second during setup.
    pub handshakes_per_s: f64,
    /// Handshake (TCP connect + upgrade) latency.
    pub handshake_us: Percentiles,
    /// Open-loop only: how late sends left the client after their scheduled time (a large
    /// lag means the client or TCP back-pressure, not only the server, delayed messages).
    pub send_lag_us: Option<Percentiles>,
    /// Messages sent in the measured window.
    pub sent: u64,
    /// Sent per second.
    pub sent_per_s: f64,
    /// Chat frames received in the measured window.
    pub delivered: u64,
    /// Delivered per second.
    pub delivered_per_s: f64,
    /// Latency samples (messages sent in the window and received before the end of the drain).
    pub latency_samples: u64,
    /// Median end-to-end latency.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Deliveries expected over the whole run (sent and accepted x joined members of the group).
    pub expected: u64,
    /// Unique deliveries received over the whole run.
    pub received_unique: u64,
    /// expected - received_unique (0 if negative).
    pub lost: u64,
    /// Duplicate deliveries.
    pub dup: u64,
    /// Out-of-order deliveries.
    pub out_of_order: u64,
    /// Chat frames not in our payload format.
    pub foreign: u64,
    /// All error events.
    pub errors: u64,
    /// Server `error` frames.
    pub server_errors: u64,
    /// Of which "busy".
    pub server_busy: u64,
    /// Failed sends.
    pub send_errors: u64,
    /// Connections lost after setup.
    pub disconnects: u64,
    /// Malformed frames.
    pub malformed: u64,
    /// Errors by kind.
    pub error_kinds: BTreeMap<String, u64>,
    /// A few error messages.
    pub error_samples: Vec<String>,
    /// Client CPU microseconds in the measured window (all worker processes).
    pub client_cpu_us: u64,
    /// Client CPU per delivered frame.
    pub client_cpu_us_per_frame: Option<f64>,
    /// Client CPU as percent of one core.
    pub client_cpu_pct: f64,
    /// Server CPU microseconds in the measured window.
    pub server_cpu_us: Option<u64>,
    /// Server CPU per delivered frame.
    pub server_cpu_us_per_frame: Option<f64>,
    /// Server CPU as percent of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server RSS before connecting (KiB).
    pub server_rss_kib_before: Option<u64>,
    /// Server RSS at the end of setup (idle: after settling) (KiB).
    pub server_rss_kib_after: Option<u64>,
    /// (after - before) / connections_ok (KiB).
    pub server_rss_kib_per_conn: Option<f64>,
    /// Connections per `X-Chat-Shard`.
    pub shards: BTreeMap<String, u64>,
    /// RLIMIT_NOFILE hard limit of this process.
    pub fd_hard_limit: u64,
    /// Open loop: the pacing thread's scheduling (`fifo`, `nice-20`, `normal`).
    pub pacer_priority: Option<String>,
    /// `presence` and `presence_batch` frames received from the start of the
    /// measured window (reconnect: of the storm), all connections.
    pub presence_frames: u64,
    /// Of which `presence_batch`.
    pub presence_batches: u64,
    /// Users' changes those frames carried.
    pub presence_changes: u64,
    /// presence_frames / connections_ok.
    pub presence_frames_per_client: Option<f64>,
    /// presence_changes / connections_ok.
    pub presence_changes_per_client: Option<f64>,
    /// Reconnect storm: reconnections (handshake + join) that succeeded.
    pub reconnects_ok: u64,
    /// Reconnect storm: reconnections that failed.
    pub reconnects_failed: u64,
    /// Reconnect storm: reconnections per second, from the storm's start to
    /// the last one's end.
    pub reconnect_handshakes_per_s: Option<f64>,
    /// Reconnect storm: latency of one reconnection (TCP connect, upgrade, join).
    pub reconnect_handshake_us: Option<Percentiles>,
}

fn rate_str(r: f64) -> String {
    format!("{:.0}/s", r)
}

impl RunReport {
    /// Multi-line human summary.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "  {k:<16} {v}");
        };
        let mut head = format!("{} x{} conns", self.scenario, self.connections);
        if let Some(r) = self.rooms {
            let _ = write!(head, ", {r} rooms");
        }
        if self.senders > 0 {
            let _ = write!(head, ", {} senders", self.senders);
        }
        if let Some(rate) = self.rate {
            if rate > 0.0 {
                let _ = write!(head, ", rate {}", rate_str(rate));
            } else {
                let _ = write!(
                    head,
                    ", saturation (inflight {})",
                    self.inflight.unwrap_or(1)
                );
            }
        }
        if let Some(p) = self.payload {
            let _ = write!(head, ", payload {p} B");
        }
        row("scenario", head);
        let shards: Vec<String> = self
            .shards
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        row(
            "connections",
            format!(
                "{} ok, {} failed, {} open at end  (shards {})",
                self.connections_ok,
                self.connections_failed,
                self.connections_open_at_end,
                shards.join(" ")
            ),
        );
        let h = &self.handshake_us;
        row(
            "handshakes",
            format!(
                "{:.0}/s  p50 {}  p90 {}  p99 {}  max {}",
                self.handshakes_per_s,
                fmt_us(h.p50_us),
                fmt_us(h.p90_us),
                fmt_us(h.p99_us),
                fmt_us(h.max_us)
            ),
        );
        if let (Some(rate), Some(h)) = (
            self.reconnect_handshakes_per_s,
            &self.reconnect_handshake_us,
        ) {
            row(
                "reconnects",
                format!(
                    "{} ok, {} failed, {rate:.0}/s  p50 {}  p99 {}  max {}",
                    self.reconnects_ok,
                    self.reconnects_failed,
                    fmt_us(h.p50_us),
                    fmt_us(h.p99_us),
                    fmt_us(h.max_us)
                ),
            );
        }
        if self.presence_frames > 0 || self.reconnect_handshakes_per_s.is_some() {
            row(
                "presence",
                format!(
                    "{} frames ({} batches) carrying {} changes; per client {:.1} frames, {:.1} changes",
                    self.presence_frames,
                    self.presence_batches,
                    self.presence_changes,
                    self.presence_frames_per_client.unwrap_or(0.0),
                    self.presence_changes_per_client.unwrap_or(0.0)
                ),
            );
        }
        if self.rate.is_some() {
            row(
                "sent",
                format!("{} ({})", self.sent, rate_str(self.sent_per_s)),
            );
            if let Some(l) = &self.send_lag_us {
                row(
                    "send lag",
                    format!(
                        "p50 {}  p99 {}  max {}  (behind schedule when sent; pacer {})",
                        fmt_us(l.p50_us),
                        fmt_us(l.p99_us),
                        fmt_us(l.max_us),
                        self.pacer_priority.as_deref().unwrap_or("-")
                    ),
                );
            }
            row(
                "delivered",
                format!("{} ({})", self.delivered, rate_str(self.delivered_per_s)),
            );
            row(
                "latency",
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                    fmt_us(self.p50_us),
                    fmt_us(self.p90_us),
                    fmt_us(self.p99_us),
                    fmt_us(self.p999_us),
                    fmt_us(self.max_us),
                    self.latency_samples
                ),
            );
            row(
                "integrity",
                format!(
                    "expected {}  received {}  lost {}  dup {}  out-of-order {}  foreign {}",
                    self.expected,
                    self.received_unique,
                    self.lost,
                    self.dup,
                    self.out_of_order,
                    self.foreign
                ),
            );
            row(
                "drain",
                format!("{:.1}s of {:.1}s", self.drain_s, self.drain_limit_s),
            );
        }
        row(
            "errors",
            format!(
                "{}  (server {} of which busy {}, send {}, disconnects {}, setup {})",
                self.errors,
                self.server_errors,
                self.server_busy,
                self.send_errors,
                self.disconnects,
                self.connections_failed
            ),
        );
        for (k, v) in &self.error_kinds {
            row("", format!("{k}: {v}"));
        }
        for e in self.error_samples.iter().take(3) {
            row("", format!("e.g. {e}"));
        }
        let per = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} us/frame"));
        row(
            "client cpu",
            format!(
                "{}  ({:.0}% of a core)",
                per(self.client_cpu_us_per_frame),
                self.client_cpu_pct
            ),
        );
        match self.server_cpu_pct {
            Some(pct) => row(
                "server cpu",
                format!(
                    "{}  ({pct:.0}% of a core)",
                    per(self.server_cpu_us_per_frame)
                ),
            ),
            None => row("server cpu", "- (give --server-pid)".into()),
        }
        if let (Some(b), Some(a)) = (self.server_rss_kib_before, self.server_rss_kib_after) {
            let per = self
                .server_rss_kib_per_conn
                .map_or("-".into(), |v| format!("{v:.1} KiB/conn"));
            row("server rss", format!("{b} KiB -> {a} KiB  ({per})"));
        }
        s
    }
}
