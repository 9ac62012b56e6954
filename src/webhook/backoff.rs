//! The webhook's retry delays: "full jitter" exponential back-off (a
//! uniform delay between 0 and `min(cap, base * 2^n)`), so that retries
//! of several servers do not arrive in step.

use std::time::Duration;

/// The first ceiling (doubled at each failure up to the cap).
pub const BASE: Duration = Duration::from_millis(100);

/// The delays of one failing batch.
#[derive(Debug, Clone)]
pub struct Backoff {
    cap: Duration,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// Delays capped at `cap`, seeded from the clock.
    pub fn new(cap: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff::seeded(cap, seed)
    }

    /// Delays capped at `cap`, from `seed` (tests).
    pub fn seeded(cap: Duration, seed: u64) -> Backoff {
        Backoff {
            cap,
            failures: 0,
            rng: seed | 1,
        }
    }

    /// The ceiling of the next delay.
    pub fn ceiling(&self) -> Duration {
        let doubled = BASE.saturating_mul(1u32 << self.failures.min(20));
        doubled.min(self.cap)
    }

    /// The delay after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        // xorshift64*: plenty for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let fraction = (r >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(fraction)
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_below_the_ceiling() {
        let cap = Duration::from_secs(2);
        let mut b = Backoff::seeded(cap, 42);
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling);
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.ceiling(), BASE);
        // Jittered: not all the same.
        let mut b = Backoff::seeded(Duration::from_secs(30), 7);
        let delays: std::collections::HashSet<_> = (0..10)
            .map(|_| {
                b.reset();
                b.next_delay()
            })
            .collect();
        assert!(delays.len() > 5);
    }
}
