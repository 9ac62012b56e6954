//! What a shard does when `accept` fails (out of descriptors, mostly):
//! wait longer after each failure in a row, and log at a bounded rate with
//! the number of failures not logged. A pure type: the caller passes the
//! time and does the sleeping and logging.

use std::time::{Duration, Instant};

/// The first wait after a failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(10);
/// The longest wait.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// At most one log line per this interval per shard.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// Back-off and log-rate state of one accept loop.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
    last_log: Option<Instant>,
    suppressed: u64,
}

/// What to do after one failed `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptFailure {
    /// Wait this long before accepting again.
    pub delay: Duration,
    /// Log now, saying this many failures since the last line went unlogged
    /// (`None`: stay quiet).
    pub log: Option<u64>,
}

impl AcceptBackoff {
    /// A failure at `now`.
    pub fn failed(&mut self, now: Instant) -> AcceptFailure {
        let delay = match self.delay {
            None => FIRST_DELAY,
            Some(d) => (d * 2).min(MAX_DELAY),
        };
        self.delay = Some(delay);
        let due = self
            .last_log
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_EVERY);
        let log = if due {
            self.last_log = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        };
        AcceptFailure { delay, log }
    }

    /// An accepted socket: the next failure waits [`FIRST_DELAY`] again.
    /// (The log rate keeps its window: a flapping failure stays quiet.)
    pub fn succeeded(&mut self) {
        self.delay = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_to_the_cap_and_resets_on_success() {
        let mut b = AcceptBackoff::default();
        let t = Instant::now();
        let delays: Vec<u64> = (0..10)
            .map(|_| b.failed(t).delay.as_millis() as u64)
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(t).delay, FIRST_DELAY);
    }

    #[test]
    fn logs_once_per_interval_with_the_count_suppressed() {
        let mut b = AcceptBackoff::default();
        let t = Instant::now();
        assert_eq!(b.failed(t).log, Some(0));
        for i in 1..=50u64 {
            let at = t + Duration::from_millis(i * 90);
            assert_eq!(b.failed(at).log, None, "failure {i}");
        }
        b.succeeded();
        assert_eq!(b.failed(t + Duration::from_millis(4_999)).log, None);
        assert_eq!(b.failed(t + LOG_EVERY).log, Some(51));
        assert_eq!(b.failed(t + LOG_EVERY).log, None);
        assert_eq!(b.failed(t + LOG_EVERY * 2).log, Some(1));
    }
}
