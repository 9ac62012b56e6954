//! Limits per user, across all of a user's connections on this server (all
//! shards; per node in cluster mode): how many connections it holds, and
//! how fast it may send messages.
//!
//! One [`UserLimits`] is built at start-up and shared by every shard. Its
//! only lock is a striped map `user → Arc<UserBudget>`, taken when a
//! connection opens ([`UserLimits::open`]) and when it closes (dropping its
//! [`ConnectionSlot`]): never across an await, never per message. A
//! connection keeps its user's [`UserBudget`]; the per-message check
//! ([`UserBudget::take_message`]) is one lock-free compare-and-swap on an
//! atomic (a GCRA token bucket: one "theoretical arrival time").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::protocol::UserId;

/// Stripes of the user map: connection opens and closes of different users
/// rarely contend.
const STRIPES: usize = 64;

/// How often a stripe drops the budgets of users with no connection whose
/// message bucket has refilled.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The user already holds `--max-connections-per-user` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many connections for this user (at most {max})")]
pub struct TooManyConnections {
    /// The limit.
    pub max: usize,
}

/// The per-user limits of this server, shared by all shards.
#[derive(Debug)]
pub struct UserLimits {
    stripes: Box<[Mutex<Stripe>]>,
    max_connections: usize,
    /// Nanoseconds one message costs (0: no message limit).
    interval_ns: u64,
    /// Nanoseconds of credit a full bucket holds (`burst × interval`).
    tolerance_ns: u64,
    epoch: Instant,
}

#[derive(Debug)]
struct Stripe {
    users: HashMap<UserId, Arc<UserBudget>>,
    next_sweep: Instant,
}

/// One user's budget: its open connections and its message bucket.
/// Connections hold it in an `Arc`; the counters are atomics.
#[derive(Debug)]
pub struct UserBudget {
    /// Open connections (changed only under the stripe lock).
    connections: AtomicUsize,
    /// GCRA theoretical arrival time, in ns since [`UserLimits`]' epoch:
    /// the bucket is full when it is not after now.
    tat: AtomicU64,
    interval_ns: u64,
    tolerance_ns: u64,
    epoch: Instant,
}

/// A connection's claim on its user's connection count; dropping it
/// releases the count, whichever way the connection ends.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<UserLimits>,
    user: UserId,
    budget: Arc<UserBudget>,
}

impl UserLimits {
    /// The limits `config` asks for.
    pub fn new(config: &Config) -> UserLimits {
        UserLimits::with(
            config.max_connections_per_user,
            config.user_message_rate,
            config.user_message_burst,
        )
    }

    /// At most `max_connections` per user (0: no limit), `rate` messages a
    /// second with bursts of `burst` (rate 0: no limit).
    pub fn with(max_connections: usize, rate: u32, burst: u32) -> UserLimits {
        let epoch = Instant::now();
        let interval_ns = if rate == 0 {
            0
        } else {
            1_000_000_000 / u64::from(rate).max(1)
        };
        let stripes = (0..STRIPES)
            .map(|_| {
                Mutex::new(Stripe {
                    users: HashMap::new(),
                    next_sweep: epoch + SWEEP_EVERY,
                })
            })
            .collect();
        UserLimits {
            stripes,
            max_connections,
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1))),
            epoch,
        }
    }

    fn stripe(&self, user: UserId) -> MutexGuard<'_, Stripe> {
        let i = (user as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
        // A panic never happens under this lock; recover the map if it did.
        self.stripes[i as usize % STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more connection of `user`, or refuses it past the limit.
    pub fn open(self: &Arc<Self>, user: UserId) -> Result<ConnectionSlot, TooManyConnections> {
        let now = Instant::now();
        let mut stripe = self.stripe(user);
        if now >= stripe.next_sweep {
            stripe.next_sweep = now + SWEEP_EVERY;
            stripe
                .users
                .retain(|_, b| b.connections.load(Ordering::Relaxed) > 0 || !b.is_full(now));
        }
        let budget = stripe
            .users
            .entry(user)
            .or_insert_with(|| {
                Arc::new(UserBudget {
                    connections: AtomicUsize::new(0),
                    tat: AtomicU64::new(0),
                    interval_ns: self.interval_ns,
                    tolerance_ns: self.tolerance_ns,
                    epoch: self.epoch,
                })
            })
            .clone();
        let open = budget.connections.load(Ordering::Relaxed);
        if self.max_connections > 0 && open >= self.max_connections {
            return Err(TooManyConnections {
                max: self.max_connections,
            });
        }
        budget.connections.store(open + 1, Ordering::Relaxed);
        drop(stripe);
        Ok(ConnectionSlot {
            limits: self.clone(),
            user,
            budget,
        })
    }

    /// Open connections of `user` on this server.
    pub fn connections(&self, user: UserId) -> usize {
        self.stripe(user)
            .users
            .get(&user)
            .map_or(0, |b| b.connections.load(Ordering::Relaxed))
    }

    fn close(&self, user: UserId) {
        let now = Instant::now();
        let mut stripe = self.stripe(user);
        let Some(budget) = stripe.users.get(&user) else {
            return;
        };
        let left = budget.connections.load(Ordering::Relaxed).saturating_sub(1);
        budget.connections.store(left, Ordering::Relaxed);
        // A user who reconnects at once keeps its (partly spent) bucket;
        // the sweep drops it once it has refilled.
        if left == 0 && budget.is_full(now) {
            stripe.users.remove(&user);
        }
    }
}

impl UserBudget {
    fn now_ns(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn is_full(&self, now: Instant) -> bool {
        self.tat.load(Ordering::Relaxed) <= self.now_ns(now)
    }

    /// Takes one message from the user's bucket at `now`; false when the
    /// user is over its rate (the message is refused). Lock-free: one CAS,
    /// retried only when another connection of the user won the race.
    pub fn take_message(&self, now: Instant) -> bool {
        if self.interval_ns == 0 {
            return true;
        }
        let now = self.now_ns(now);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now) + self.interval_ns;
            if next - now > self.tolerance_ns {
                return false;
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }
}

impl ConnectionSlot {
    /// The user's shared budget (its message bucket).
    pub fn budget(&self) -> Arc<UserBudget> {
        self.budget.clone()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.close(self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_user_and_released_on_drop() {
        let limits = Arc::new(UserLimits::with(2, 0, 1));
        let a1 = limits.open(1).unwrap();
        let a2 = limits.open(1).unwrap();
        assert_eq!(limits.open(1).unwrap_err(), TooManyConnections { max: 2 });
        let _b = limits.open(2).expect("another user is not affected");
        drop(a1);
        assert_eq!(limits.connections(1), 1);
        let _a3 = limits.open(1).expect("a slot was released");
        drop(a2);
        assert_eq!(limits.connections(1), 1);
    }

    #[test]
    fn zero_means_no_connection_limit() {
        let limits = Arc::new(UserLimits::with(0, 0, 1));
        let slots: Vec<_> = (0..1000).map(|_| limits.open(7).unwrap()).collect();
        assert_eq!(limits.connections(7), 1000);
        drop(slots);
        assert_eq!(limits.connections(7), 0);
    }

    #[test]
    fn the_bucket_is_shared_by_every_connection_of_a_user() {
        let limits = Arc::new(UserLimits::with(0, 10, 5));
        let (sa, sb) = (limits.open(1).unwrap(), limits.open(1).unwrap());
        let (a, b) = (sa.budget(), sb.budget());
        let t0 = Instant::now();
        let allowed = (0..10)
            .filter(|i| if i % 2 == 0 { &a } else { &b }.take_message(t0))
            .count();
        assert_eq!(allowed, 5, "one burst for both connections");
        // 100 ms later one token is back; never more than the burst.
        assert!(a.take_message(t0 + Duration::from_millis(100)));
        assert!(!b.take_message(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| a.take_message(later)).count(), 5);
    }

    #[test]
    fn a_user_keeps_a_spent_bucket_across_a_reconnect() {
        let limits = Arc::new(UserLimits::with(0, 1, 2));
        let slot = limits.open(1).unwrap();
        let now = Instant::now();
        assert!(slot.budget().take_message(now));
        assert!(slot.budget().take_message(now));
        drop(slot);
        let slot = limits.open(1).unwrap();
        assert!(!slot.budget().take_message(now));
    }

    #[test]
    fn many_threads_never_take_more_than_the_burst() {
        let limits = Arc::new(UserLimits::with(0, 1, 1000));
        let slot = limits.open(1).unwrap();
        let budget = slot.budget();
        let now = Instant::now();
        let taken: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1000).filter(|_| budget.take_message(now)).count()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 1000);
    }
}
