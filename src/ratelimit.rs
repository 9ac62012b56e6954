//! Per-connection request rate limiting: a token bucket, plus flood
//! detection for clients that keep going over the limit.

use std::time::Duration;

use tokio::time::Instant;

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allow,
    /// Over the limit: refuse this request with an error frame.
    Refuse,
    /// Over the limit, and the client was already told [`answered_max`]
    /// times in this streak: refuse this request without an answer, so a flooder's
    /// refusals cannot fill the socket ahead of its 1008 close frame.
    RefuseQuietly,
    /// Over the limit for longer than the flood allowance: close the connection.
    Disconnect,
}

/// A token bucket of `burst` tokens refilled at `rate` per second. A client
/// refused at least once a second for `flood_after` is flooding.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    flood_after: Duration,
    flood_started: Option<Instant>,
    last_refusal: Option<Instant>,
    /// Refusals answered in the current streak.
    answered: u32,
}

impl RateLimiter {
    /// A full bucket. `rate == 0` disables limiting.
    pub fn new(rate: u32, burst: u32, flood_after: Duration, now: Instant) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
            flood_after,
            flood_started: None,
            last_refusal: None,
            answered: 0,
        }
    }

    /// Takes one token for a request arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.rate == 0.0 {
            return Verdict::Allow;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        // A refusal more than a second after the previous one starts a new streak.
        let continues = self
            .last_refusal
            .is_some_and(|t| now.saturating_duration_since(t) <= Duration::from_secs(1));
        if !continues {
            self.flood_started = Some(now);
            self.answered = 0;
        }
        self.last_refusal = Some(now);
        let started = self.flood_started.unwrap_or(now);
        if now.saturating_duration_since(started) >= self.flood_after {
            Verdict::Disconnect
        } else if f64::from(self.answered) < answered_max(self.burst) {
            self.answered += 1;
            Verdict::Refuse
        } else {
            Verdict::RefuseQuietly
        }
    }
}

/// Refusals answered with an error frame per streak: the burst, at least
/// [`MIN_ANSWERED`]. A flooder's answers stay a bounded number of bytes.
pub fn answered_max(burst: f64) -> f64 {
    burst.max(f64::from(MIN_ANSWERED))
}

/// See [`answered_max`].
pub const MIN_ANSWERED: u32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10, 5, Duration::from_secs(3), t0);
        for _ in 0..5 {
            assert_eq!(l.check(t0), Verdict::Allow);
        }
        assert_eq!(l.check(t0), Verdict::Refuse);
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.check(t1), Verdict::Allow);
        assert_eq!(l.check(t1), Verdict::Refuse);
        // Never more than the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(l.check(t2), Verdict::Allow);
        }
        assert_eq!(l.check(t2), Verdict::Refuse);
    }

    #[test]
    fn sustained_flooding_disconnects_but_a_pause_forgives() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10, 1, Duration::from_secs(3), t0);
        let mut now = t0;
        let mut verdicts = Vec::new();
        // 100 requests a second for 4 seconds.
        for _ in 0..400 {
            verdicts.push(l.check(now));
            now += Duration::from_millis(10);
        }
        assert!(verdicts.contains(&Verdict::Allow));
        assert_eq!(verdicts.last(), Some(&Verdict::Disconnect));
        let first_disconnect = verdicts
            .iter()
            .position(|v| *v == Verdict::Disconnect)
            .unwrap();
        assert!(
            (290..=310).contains(&first_disconnect),
            "{first_disconnect}"
        );

        // Two seconds of silence: the next refusal starts a new streak.
        let mut l = RateLimiter::new(10, 1, Duration::from_secs(3), t0);
        let mut now = t0;
        for _ in 0..200 {
            assert_ne!(l.check(now), Verdict::Disconnect);
            now += Duration::from_millis(10);
        }
        now += Duration::from_secs(2);
        for _ in 0..200 {
            assert_ne!(l.check(now), Verdict::Disconnect);
            now += Duration::from_millis(10);
        }
    }

    #[test]
    fn a_streak_answers_at_most_a_burst_of_refusals() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10, 3, Duration::from_secs(60), t0);
        let count = |l: &mut RateLimiter, now, n| {
            let v: Vec<Verdict> = (0..n).map(|_| l.check(now)).collect();
            [Verdict::Allow, Verdict::Refuse, Verdict::RefuseQuietly]
                .map(|k| v.iter().filter(|&&x| x == k).count())
        };
        assert_eq!(count(&mut l, t0, 300), [3, 100, 197]);
        // A pause ends the streak: the next refusals are answered again.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(count(&mut l, t1, 10), [3, 7, 0]);
    }

    #[test]
    fn zero_rate_disables() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(0, 1, Duration::from_secs(1), t0);
        for _ in 0..10_000 {
            assert_eq!(l.check(t0), Verdict::Allow);
        }
    }
}
