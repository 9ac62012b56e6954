//! How many descriptors the process may spend on what: the connection
//! ceiling per shard and the cap on pending handshakes, derived at start
//! from the open-files limit after a reserve for everything else.
//!
//! The reserve covers, per [`FdInputs`]: [`BASE_RESERVE`] (standard
//! streams, runtimes, signal pipes, the start-up database connection), per
//! shard its listener, its two pools (`--db-pool-size`,
//! `--db-read-pool-size`) and [`PER_RUNTIME`], each writer's connection and
//! runtime, the cluster link (NATS socket, its pool, its runtime), the
//! `/metrics` listener and its scrapes, and [`API_RESERVE`] for a future API
//! listener. What is left is split between pending handshakes (an eighth,
//! at most [`DEFAULT_PENDING_MAX`]) and connections (the rest, spread evenly
//! over the shards). A pure computation: `server::start` applies it.

/// Descriptors kept for the process itself whatever the configuration.
pub const BASE_RESERVE: u64 = 64;
/// Descriptors of one tokio runtime (epoll, wakers, timers).
pub const PER_RUNTIME: u64 = 4;
/// Descriptors of the cluster link: NATS socket, its pool of 2, its runtime.
pub const CLUSTER_RESERVE: u64 = 8;
/// Descriptors kept for a future API listener and its connections.
pub const API_RESERVE: u64 = 16;
/// Descriptors of the `/metrics` listener: its socket and its scrapes.
pub const METRICS_RESERVE: u64 = 1 + crate::metrics_port::MAX_SCRAPES as u64;
/// The derived pending-handshake cap never exceeds this.
pub const DEFAULT_PENDING_MAX: usize = 1024;

/// What the budget depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdInputs {
    /// The soft open-files limit after raising it.
    pub fd_limit: u64,
    /// Shards.
    pub shards: usize,
    /// `--db-pool-size`.
    pub db_pool_size: usize,
    /// `--db-read-pool-size`.
    pub db_read_pool_size: usize,
    /// Writer threads.
    pub writers: usize,
    /// Cluster mode (a NATS link).
    pub clustered: bool,
    /// A `/metrics` listener of its own.
    pub metrics_listener: bool,
    /// `--max-connections-per-shard` (0: derive).
    pub max_connections_per_shard: usize,
    /// `--max-pending-handshakes` (0: derive).
    pub max_pending_handshakes: usize,
}

/// The derived figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// Descriptors kept out of the connection budget.
    pub reserve: u64,
    /// Descriptors left for connections and pending handshakes.
    pub available: u64,
    /// Handshakes in progress allowed in the whole process.
    pub pending_handshakes: usize,
    /// Connections allowed per shard.
    pub connections_per_shard: usize,
    /// What the file limit allows per shard (the ceiling before any
    /// explicit setting).
    pub derived_per_shard: usize,
    /// An explicit `--max-connections-per-shard` was lowered to fit.
    pub clamped: bool,
    /// An explicit `--max-pending-handshakes` exceeds what the file limit
    /// leaves for it (honoured; descriptors may run out, accept backs off).
    pub pending_over_budget: bool,
}

impl FdBudget {
    /// Splits the file limit as the module documentation says.
    pub fn derive(i: FdInputs) -> FdBudget {
        let shards = i.shards.max(1) as u64;
        let writers = i.writers.max(1) as u64;
        let pools = (i.db_pool_size.max(1) + i.db_read_pool_size.max(1)) as u64;
        let reserve = BASE_RESERVE
            + shards * (1 + pools + PER_RUNTIME)
            + writers * (1 + PER_RUNTIME)
            + if i.clustered { CLUSTER_RESERVE } else { 0 }
            + if i.metrics_listener {
                METRICS_RESERVE
            } else {
                0
            }
            + API_RESERVE;
        let available = i.fd_limit.saturating_sub(reserve);
        let pending_share = usize::try_from(available / 8)
            .unwrap_or(usize::MAX)
            .clamp(1, DEFAULT_PENDING_MAX);
        let (pending_handshakes, pending_over_budget) = match i.max_pending_handshakes {
            0 => (pending_share, false),
            n => (n, n as u64 > available / 2),
        };
        // An explicit cap over budget is honoured, but never eats more
        // than half of the connections' share.
        let pending_in_budget = (pending_handshakes as u64).min(available / 2);
        let derived_per_shard =
            usize::try_from((available - pending_in_budget) / shards).unwrap_or(usize::MAX);
        let (connections_per_shard, clamped) = match i.max_connections_per_shard {
            0 => (derived_per_shard, false),
            n if n > derived_per_shard => (derived_per_shard, true),
            n => (n, false),
        };
        FdBudget {
            reserve,
            available,
            pending_handshakes,
            connections_per_shard,
            derived_per_shard,
            clamped,
            pending_over_budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(fd_limit: u64) -> FdInputs {
        FdInputs {
            fd_limit,
            shards: 2,
            db_pool_size: 4,
            db_read_pool_size: 4,
            writers: 1,
            clustered: false,
            metrics_listener: false,
            max_connections_per_shard: 0,
            max_pending_handshakes: 0,
        }
    }

    #[test]
    fn everything_fits_in_the_file_limit() {
        for limit in [200, 1024, 20_000, 1 << 20] {
            let b = FdBudget::derive(inputs(limit));
            let used = b.reserve + b.pending_handshakes as u64 + 2 * b.connections_per_shard as u64;
            assert!(used <= limit, "{limit}: {b:?}");
            assert!(b.connections_per_shard > 0, "{limit}: {b:?}");
        }
        let b = FdBudget::derive(inputs(20_000));
        assert_eq!(b.reserve, 64 + 2 * (1 + 8 + 4) + 5 + 16);
        assert_eq!(b.pending_handshakes, 1024);
        assert_eq!(b.connections_per_shard, (20_000 - 111 - 1024) / 2);
    }

    #[test]
    fn explicit_settings_win_within_the_limit() {
        let b = FdBudget::derive(FdInputs {
            max_connections_per_shard: 100_000,
            ..inputs(20_000)
        });
        assert!(b.clamped);
        assert_eq!(b.connections_per_shard, b.derived_per_shard);
        let b = FdBudget::derive(FdInputs {
            max_connections_per_shard: 2,
            max_pending_handshakes: 8,
            ..inputs(20_000)
        });
        assert_eq!((b.connections_per_shard, b.pending_handshakes), (2, 8));
        assert!(!b.clamped && !b.pending_over_budget);
        let b = FdBudget::derive(FdInputs {
            max_pending_handshakes: 100_000,
            ..inputs(1000)
        });
        assert!(b.pending_over_budget);
        assert_eq!(b.pending_handshakes, 100_000);
        assert!(b.connections_per_shard > 0);
    }

    #[test]
    fn a_tiny_limit_gives_no_connections_rather_than_underflow() {
        let b = FdBudget::derive(inputs(10));
        assert_eq!((b.available, b.connections_per_shard), (0, 0));
    }
}
