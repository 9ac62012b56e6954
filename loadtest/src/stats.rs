//! Shared run counters (atomics in the hot path, plain snapshots on the wire) and the error log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters of one worker, updated with relaxed atomics.
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A snapshot of [`Counters`], mergeable across workers.
        #[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
        pub struct Counts { $($(#[$doc])* #[serde(default)] pub $name: u64,)* }

        impl Counters {
            /// Reads every counter.
            pub fn snapshot(&self) -> Counts {
                Counts { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl Counts {
            /// Adds `other` field by field.
            pub fn add(&mut self, other: &Counts) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// Connections whose setup (handshake, join) succeeded.
    connect_ok,
    /// Connections whose setup failed.
    connect_failed,
    /// Connections currently open (set up and not yet closed by the server).
    open,
    /// Messages sent over the whole run (warm-up included).
    sent,
    /// Messages whose send time fell in the measured window.
    sent_measured,
    /// Chat frames received over the whole run.
    delivered,
    /// Chat frames received during the measured window.
    delivered_measured,
    /// First receptions of a (sender, seq) at a receiver.
    unique,
    /// Repeated receptions.
    dup,
    /// First receptions older than one already seen.
    out_of_order,
    /// Chat frames whose content is not our payload format.
    foreign,
    /// `error` frames from the server.
    server_errors,
    /// `error` frames saying the server is busy (a subset of server_errors).
    server_busy,
    /// Failed sends.
    send_errors,
    /// Connections closed or broken by the server after setup.
    disconnects,
    /// Frames that are not JSON objects with a type.
    malformed,
    /// `presence` and `presence_batch` frames received from the start of
    /// the measured window (reconnect: from the storm's start).
    presence_frames,
    /// Of which `presence_batch`.
    presence_batches,
    /// Users' changes those frames carried (a `presence` carries one).
    presence_changes,
    /// Reconnect storm: connections reconnected (handshake and join).
    reconnect_ok,
    /// Reconnect storm: reconnections that failed.
    reconnect_failed,
}

impl Counts {
    /// All error events: failed setups, server error frames, send failures, disconnects, malformed frames.
    pub fn errors(&self) -> u64 {
        self.connect_failed
            + self.server_errors
            + self.send_errors
            + self.disconnects
            + self.malformed
    }
}

/// Most distinct error messages kept as samples.
const MAX_SAMPLES: usize = 8;

/// Error counts by kind plus a few sample messages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorLog {
    /// Count per error kind.
    pub kinds: BTreeMap<String, u64>,
    /// The first distinct messages seen.
    pub samples: Vec<String>,
}

impl ErrorLog {
    /// Counts one error of `kind` with its `message`.
    pub fn record(&mut self, kind: &str, message: String) {
        *self.kinds.entry(kind.to_string()).or_default() += 1;
        if self.samples.len() < MAX_SAMPLES && !self.samples.contains(&message) {
            self.samples.push(message);
        }
    }

    /// Merges another log into this one.
    pub fn merge(&mut self, other: &ErrorLog) {
        for (k, n) in &other.kinds {
            *self.kinds.entry(k.clone()).or_default() += n;
        }
        for s in &other.samples {
            if self.samples.len() < MAX_SAMPLES && !self.samples.contains(s) {
                self.samples.push(s.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_and_add() {
        let c = Counters::default();
        c.sent.fetch_add(3, Relaxed);
        c.disconnects.fetch_add(1, Relaxed);
        let mut total = c.snapshot();
        total.add(&c.snapshot());
        assert_eq!(total.sent, 6);
        assert_eq!(total.errors(), 2);
    }

    #[test]
    fn error_log_bounded() {
        let mut log = ErrorLog::default();
        for i in 0..20 {
            log.record("x", format!("m{i}"));
        }
        log.record("y", "m0".into());
        assert_eq!(log.kinds["x"], 20);
        assert_eq!(log.samples.len(), MAX_SAMPLES);
        let mut other = ErrorLog::default();
        other.merge(&log);
        assert_eq!(other.kinds["y"], 1);
    }
}
