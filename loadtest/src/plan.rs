//! The run plan: validated parameters and the deterministic topology of a run
//! (which connection is which user, joins which room, sends to whom, lives in which worker).

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Message traffic shape shared by the room and dm scenarios.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Traffic {
    /// Total messages/s over all senders; 0 = saturation bounded by `inflight`.
    pub rate: f64,
    /// In-flight messages per sender in saturation mode.
    pub inflight: u32,
    /// Content size in bytes.
    pub payload: usize,
}

/// What a run does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scenario {
    /// Room fan-out.
    Room {
        /// Number of rooms.
        rooms: u32,
        /// Number of senders.
        senders: u32,
        /// Room name prefix.
        room_prefix: String,
        /// Traffic shape.
        traffic: Traffic,
    },
    /// Pairwise direct messages.
    Dm {
        /// Number of senders.
        senders: u32,
        /// Traffic shape.
        traffic: Traffic,
    },
    /// Connection storm.
    Connect {
        /// Close each connection right after its handshake.
        close: bool,
    },
    /// Idle connections for RSS measurement.
    Idle {
        /// Settle time in seconds before measuring.
        settle: f64,
    },
    /// Reconnect storm (issue 16): every connection joins its room of
    /// `room_size`, then all of them close and reconnect (with a `join`) at once.
    Reconnect {
        /// Members per room (connections `g*room_size ..` are room `g`).
        room_size: u32,
        /// Number of rooms (connections / room_size, rounded up).
        rooms: u32,
        /// Room name prefix.
        room_prefix: String,
    },
}

impl Scenario {
    /// Short name used in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Room { .. } => "room",
            Scenario::Dm { .. } => "dm",
            Scenario::Connect { .. } => "connect",
            Scenario::Idle { .. } => "idle",
            Scenario::Reconnect { .. } => "reconnect",
        }
    }

    /// Traffic shape, for the scenarios that send messages.
    pub fn traffic(&self) -> Option<&Traffic> {
        match self {
            Scenario::Room { traffic, .. } | Scenario::Dm { traffic, .. } => Some(traffic),
            _ => None,
        }
    }

    /// Mutable traffic shape (used by sweeps to set the rate).
    pub fn traffic_mut(&mut self) -> Option<&mut Traffic> {
        match self {
            Scenario::Room { traffic, .. } | Scenario::Dm { traffic, .. } => Some(traffic),
            _ => None,
        }
    }
}

/// Everything a worker needs to run its share of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunParams {
    /// Scenario and its parameters.
    pub scenario: Scenario,
    /// Validated loopback WebSocket URL.
    pub url: String,
    /// HS256 secret.
    pub jwt_secret: String,
    /// Send the token as a query parameter.
    pub token_in_query: bool,
    /// Total connections over all workers.
    pub connections: u32,
    /// User id of connection 0.
    pub user_id_base: i64,
    /// Warm-up seconds.
    pub warmup: f64,
    /// Measured seconds.
    pub duration: f64,
    /// Drain bound in seconds.
    pub drain: f64,
    /// Tokio threads per worker.
    pub threads: usize,
    /// Worker processes.
    pub procs: u32,
    /// Source addresses to spread connections over.
    pub source_ips: u8,
    /// Concurrent handshakes per worker.
    pub connect_concurrency: usize,
    /// Per-connection setup timeout in seconds.
    pub connect_timeout: f64,
}

impl RunParams {
    /// Global connection indices owned by worker `w` (contiguous, even-aligned so dm pairs stay together).
    pub fn worker_range(&self, w: u32) -> Range<u32> {
        worker_range(self.connections, self.procs, w)
    }

    /// Number of senders in the scenario (0 for connect/idle).
    pub fn senders(&self) -> u32 {
        match &self.scenario {
            Scenario::Room { senders, .. } | Scenario::Dm { senders, .. } => *senders,
            _ => 0,
        }
    }

    /// Whether connection `i` sends.
    pub fn is_sender(&self, i: u32) -> bool {
        i < self.senders()
    }

    /// Delivery group of connection `i`: its room, or its dm pair.
    pub fn group_of(&self, i: u32) -> u32 {
        match &self.scenario {
            Scenario::Room { rooms, .. } => i % rooms,
            Scenario::Dm { .. } => i / 2,
            Scenario::Reconnect { room_size, .. } => i / room_size.max(&1),
            _ => 0,
        }
    }

    /// Number of delivery groups.
    pub fn groups(&self) -> u32 {
        match &self.scenario {
            Scenario::Room { rooms, .. } | Scenario::Reconnect { rooms, .. } => *rooms,
            Scenario::Dm { .. } => self.connections.div_ceil(2),
            _ => 0,
        }
    }

    /// User id of connection `i`.
    pub fn user_id(&self, i: u32) -> i64 {
        self.user_id_base + i64::from(i)
    }

    /// Room name of group `g` in the room scenario.
    pub fn room_name(&self, g: u32) -> Option<String> {
        match &self.scenario {
            Scenario::Room {
                rooms, room_prefix, ..
            }
            | Scenario::Reconnect {
                rooms, room_prefix, ..
            } => Some(room_name(room_prefix, *rooms, g)),
            _ => None,
        }
    }

    /// All room names of the run (empty unless room scenario).
    pub fn room_names(&self) -> Vec<String> {
        match &self.scenario {
            Scenario::Room { rooms, .. } | Scenario::Reconnect { rooms, .. } => {
                (0..*rooms).filter_map(|g| self.room_name(g)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// DM partner of connection `i` (None for the odd one out).
    pub fn partner(&self, i: u32) -> Option<u32> {
        let p = i ^ 1;
        (p < self.connections).then_some(p)
    }
}

/// Room name for room `g` of a run with `rooms` rooms. The room count is part of the
/// name so that persisted memberships from runs with another room count never overlap.
pub fn room_name(prefix: &str, rooms: u32, g: u32) -> String {
    format!("{prefix}-r{rooms}-{g}")
}

/// Contiguous block of `total` indices for worker `w` of `workers`, block sizes even.
pub fn worker_range(total: u32, workers: u32, w: u32) -> Range<u32> {
    let workers = workers.max(1);
    let pairs = total.div_ceil(2);
    let per = pairs.div_ceil(workers);
    let start = (per * w * 2).min(total);
    let end = (per * (w + 1) * 2).min(total);
    start..end
}

/// Source address for connection `i` with `n` source addresses (None = let the kernel choose).
pub fn source_ip(i: u32, n: u8) -> Option<std::net::Ipv4Addr> {
    (n > 1).then(|| std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % u32::from(n)) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ranges_cover_everything_once_and_keep_pairs() {
        for total in [0u32, 1, 2, 7, 100, 1001] {
            for workers in 1..6 {
                let mut next = 0;
                for w in 0..workers {
                    let r = worker_range(total, workers, w);
                    assert_eq!(r.start, next);
                    assert!(r.start.is_multiple_of(2) || r.is_empty());
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn source_ips_round_robin() {
        assert_eq!(source_ip(5, 1), None);
        assert_eq!(source_ip(0, 3), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(source_ip(4, 3), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(source_ip(253, 254), Some("127.0.0.254".parse().unwrap()));
    }

    #[test]
    fn room_names_depend_on_room_count() {
        assert_eq!(room_name("lt", 10, 3), "lt-r10-3");
        assert_ne!(room_name("lt", 10, 3), room_name("lt", 5, 3));
    }
}
