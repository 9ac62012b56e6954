//! Handshakes in progress: counted in the whole process and per client
//! address, so that sockets that never speak cannot take every descriptor.
//!
//! An accepted socket enters with [`PendingHandshakes::try_enter`] before
//! anything is read, and leaves when its [`PendingGuard`] drops (at the end
//! of its handshake: refused, answered, or registered as a connection).
//! The total is an atomic; the per-address counts are a map behind one of
//! [`STRIPES`] mutexes chosen by address, touched twice per socket (enter,
//! leave), never on the message path and never across an await (see
//! `docs/ARCHITECTURE.md`, "Invariants").

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Mutexes the per-address counts are spread over.
pub const STRIPES: usize = 16;

/// Why a socket was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingRefusal {
    /// The process holds `--max-pending-handshakes` already.
    Total,
    /// This address holds `--max-pending-handshakes-per-ip` already.
    PerIp,
}

/// The counts, shared by every shard.
#[derive(Debug)]
pub struct PendingHandshakes {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    stripes: Box<[Mutex<HashMap<IpAddr, u32>>]>,
    hasher: std::collections::hash_map::RandomState,
}

/// One socket's place among the pending handshakes; leaving is dropping it.
#[derive(Debug)]
pub struct PendingGuard {
    owner: Arc<PendingHandshakes>,
    ip: IpAddr,
}

impl PendingHandshakes {
    /// At most `max_total` in all and `max_per_ip` per address (0: no
    /// per-address cap).
    pub fn new(max_total: usize, max_per_ip: usize) -> PendingHandshakes {
        PendingHandshakes {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    /// Handshakes in progress now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn stripe(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let h = self.hasher.hash_one(ip);
        &self.stripes[(h as usize) % self.stripes.len()]
    }

    /// Counts a new socket from `ip`, or says which cap it meets.
    pub fn try_enter(self: &Arc<Self>, ip: IpAddr) -> Result<PendingGuard, PendingRefusal> {
        let ip = canonical(ip);
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(PendingRefusal::Total);
        }
        {
            let mut map = self
                .stripe(&ip)
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let n = map.entry(ip).or_insert(0);
            if self.max_per_ip > 0 && *n as usize >= self.max_per_ip {
                if *n == 0 {
                    map.remove(&ip);
                }
                drop(map);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(PendingRefusal::PerIp);
            }
            *n += 1;
        }
        Ok(PendingGuard {
            owner: self.clone(),
            ip,
        })
    }

    fn leave(&self, ip: IpAddr) {
        {
            let mut map = self
                .stripe(&ip)
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.owner.leave(self.ip);
    }
}

/// An IPv4 peer seen through an IPv6 socket counts as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_address_and_total_caps_and_leaving() {
        let p = Arc::new(PendingHandshakes::new(5, 2));
        let a1 = p.try_enter(ip("127.0.0.2")).unwrap();
        let _a2 = p.try_enter(ip("::ffff:127.0.0.2")).unwrap();
        assert_eq!(
            p.try_enter(ip("127.0.0.2")).unwrap_err(),
            PendingRefusal::PerIp
        );
        let _b = p.try_enter(ip("127.0.0.3")).unwrap();
        let _c = p.try_enter(ip("127.0.0.4")).unwrap();
        let _d = p.try_enter(ip("127.0.0.5")).unwrap();
        assert_eq!(p.total(), 5);
        assert_eq!(
            p.try_enter(ip("127.0.0.6")).unwrap_err(),
            PendingRefusal::Total
        );
        drop(a1);
        assert_eq!(p.total(), 4);
        let _a3 = p.try_enter(ip("127.0.0.2")).unwrap();
        assert_eq!(p.total(), 5);
    }

    #[test]
    fn zero_per_ip_means_no_per_address_cap() {
        let p = Arc::new(PendingHandshakes::new(3, 0));
        let g: Vec<_> = (0..3)
            .map(|_| p.try_enter(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(
            p.try_enter(ip("10.0.0.1")).unwrap_err(),
            PendingRefusal::Total
        );
        drop(g);
        assert_eq!(p.total(), 0);
        assert!(p.stripes.iter().all(|s| s.lock().unwrap().is_empty()));
    }
}
