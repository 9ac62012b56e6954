//! The server-wide budget of reply bytes in flight: every page of a replay
//! (`join` with `since`, `dm_sync`) or of a history reply holds a
//! [`Lease`] on its estimated bytes from before its rows are read until it
//! has been written to the socket. One budget is shared by every shard
//! (`tokio::sync::Semaphore` is `Sync` and works across runtimes); it is
//! taken once per page, never per live message.
//!
//! A page larger than the whole budget is still served: it takes every
//! permit (the byte gauge then shows its real size), so the bytes in flight
//! never exceed the budget plus one page.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Why a reply could not have its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The budget stayed full for the whole wait: the request is refused.
    #[error("server busy: try again")]
    Busy,
}

/// Bytes in flight, their high-water mark and refusals: what `/metrics`
/// shows of the budget. Written by every shard (atomics, once per page).
#[derive(Debug, Default)]
pub struct ReplyGauges {
    in_flight: AtomicU64,
    high_water: AtomicU64,
    refused: AtomicU64,
}

impl ReplyGauges {
    /// Reply bytes held by pages now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The most reply bytes ever held at once since start.
    pub fn high_water(&self) -> u64 {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Requests refused because the budget stayed full for the wait bound.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn add(&self, bytes: u64) {
        let now = self.in_flight.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.high_water.fetch_max(now, Ordering::Relaxed);
    }

    fn sub(&self, bytes: u64) {
        self.in_flight.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The budget: `total` bytes of replies in flight across the process.
#[derive(Debug)]
pub struct ReplyBudget {
    permits: Semaphore,
    total: u32,
    wait: Duration,
    gauges: Arc<ReplyGauges>,
}

/// Bytes held by one page; given back when dropped.
#[derive(Debug)]
pub struct Lease {
    budget: Arc<ReplyBudget>,
    permits: u32,
    bytes: u64,
}

impl Lease {
    /// The bytes this lease counts in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.permits.add_permits(self.permits as usize);
        self.budget.gauges.sub(self.bytes);
    }
}

impl ReplyBudget {
    /// A budget of `total` bytes (at most `u32::MAX`, at least 1); a
    /// request waits at most `wait` for its first page. `gauges` is where
    /// the bytes in flight are shown.
    pub fn new(total: u64, wait: Duration, gauges: Arc<ReplyGauges>) -> Arc<ReplyBudget> {
        let total = u32::try_from(total.max(1)).unwrap_or(u32::MAX);
        Arc::new(ReplyBudget {
            permits: Semaphore::new(total as usize),
            total,
            wait,
            gauges,
        })
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> u64 {
        u64::from(self.total)
    }

    /// The budget's gauges.
    pub fn gauges(&self) -> &ReplyGauges {
        &self.gauges
    }

    /// Takes `bytes` (clamped to the whole budget), waiting at most the
    /// configured bound: what a request's first page does, so that a
    /// request the budget cannot serve in time is refused before anything
    /// was sent for it.
    pub async fn acquire(self: &Arc<Self>, bytes: u64) -> Result<Lease, BudgetError> {
        match tokio::time::timeout(self.wait, self.acquire_waiting(bytes)).await {
            Ok(lease) => Ok(lease),
            Err(_) => {
                self.gauges.refused.fetch_add(1, Ordering::Relaxed);
                Err(BudgetError::Busy)
            }
        }
    }

    /// Takes `bytes` (clamped to the whole budget), waiting as long as it
    /// takes: what the later pages of a reply already under way do (the
    /// semaphore is fair, and every lease is given back once its page is
    /// written or its connection ends).
    pub async fn acquire_waiting(self: &Arc<Self>, bytes: u64) -> Lease {
        let permits = u32::try_from(bytes.min(u64::from(self.total))).unwrap_or(self.total);
        // The semaphore is never closed.
        if let Ok(permit) = self.permits.acquire_many(permits).await {
            permit.forget();
        }
        self.gauges.add(bytes);
        Lease {
            budget: self.clone(),
            permits,
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: u64, wait_ms: u64) -> Arc<ReplyBudget> {
        ReplyBudget::new(
            total,
            Duration::from_millis(wait_ms),
            Arc::new(ReplyGauges::default()),
        )
    }

    #[tokio::test]
    async fn leases_count_in_flight_and_give_back_on_drop() {
        let b = budget(100, 20);
        let l1 = b.acquire(60).await.unwrap();
        let l2 = b.acquire(40).await.unwrap();
        assert_eq!(b.gauges().in_flight(), 100);
        assert_eq!(
            b.acquire(1).await.unwrap_err(),
            BudgetError::Busy,
            "full: refused after the wait"
        );
        assert_eq!(b.gauges().refused(), 1);
        drop(l1);
        assert_eq!(b.gauges().in_flight(), 40);
        let l3 = b.acquire(60).await.unwrap();
        drop((l2, l3));
        assert_eq!(b.gauges().in_flight(), 0);
        assert_eq!(b.gauges().high_water(), 100);
    }

    #[tokio::test]
    async fn a_page_larger_than_the_budget_is_served_alone() {
        let b = budget(100, 20);
        let big = b.acquire(250).await.unwrap();
        assert_eq!(b.gauges().in_flight(), 250);
        assert!(b.acquire(1).await.is_err(), "it holds every permit");
        drop(big);
        let small = b.acquire(100).await.unwrap();
        assert_eq!(small.bytes(), 100);
        assert!(
            b.gauges().high_water() <= b.total() + 250,
            "at most the budget plus one page"
        );
    }

    #[tokio::test]
    async fn a_waiter_gets_the_bytes_when_a_lease_ends() {
        let b = budget(10, 5_000);
        let held = b.acquire(10).await.unwrap();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.acquire(5).await.map(|l| l.bytes()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(5));
    }
}
