//! Open-loop send schedule: message n of the whole run is due at `start + n / rate`;
//! sender j of S sends messages j, j + S, j + 2S, ...

/// The fixed send times of one sender.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start_ns: u64,
    end_ns: u64,
    period_ns: f64,
    slot: u64,
    stride: u64,
}

impl Schedule {
    /// Schedule of sender `slot` of `senders` sharing `rate` messages/s from `start_ns` until `end_ns` (exclusive).
    pub fn new(start_ns: u64, end_ns: u64, rate: f64, slot: u32, senders: u32) -> Schedule {
        Schedule {
            start_ns,
            end_ns,
            period_ns: 1e9 / rate,
            slot: u64::from(slot),
            stride: u64::from(senders.max(1)),
        }
    }

    /// Due time (Unix nanos) of this sender's k-th message, or None past the end.
    pub fn at(&self, k: u64) -> Option<u64> {
        let n = self.slot + k * self.stride;
        let t = self.start_ns + (n as f64 * self.period_ns) as u64;
        (t < self.end_ns).then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_rate_over_senders() {
        let (start, end) = (1_000_000_000, 3_000_000_000);
        let senders = 7;
        let mut times = Vec::new();
        for j in 0..senders {
            let s = Schedule::new(start, end, 1000.0, j, senders);
            let mut k = 0;
            while let Some(t) = s.at(k) {
                times.push(t);
                k += 1;
            }
        }
        assert_eq!(times.len(), 2000);
        times.sort();
        // Evenly spaced at 1 ms.
        for w in times.windows(2) {
            let d = w[1] - w[0];
            assert!((999_999..=1_000_001).contains(&d), "{d}");
        }
        assert_eq!(times[0], start);
    }

    #[test]
    fn per_sender_period() {
        let s = Schedule::new(0, u64::MAX, 100.0, 3, 10);
        assert_eq!(s.at(0), Some(30_000_000));
        assert_eq!(s.at(1), Some(130_000_000));
    }

    #[test]
    fn ends() {
        let s = Schedule::new(0, 10_000_000, 1000.0, 0, 1);
        assert_eq!(s.at(9), Some(9_000_000));
        assert_eq!(s.at(10), None);
    }
}
