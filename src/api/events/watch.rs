//! The feed's head as the API's waiting readers see it: ONE task of the
//! API runtime reads `feed_head` every `--feed-poll-ms` while at least one
//! `GET /v1/events?wait=` is waiting (none otherwise), and wakes them all
//! through a `watch` channel when it moves. So N waiters cost one cheap
//! query per poll, not N, and nothing is added to the writers' path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::metrics::Metrics;
use crate::store::Store;

/// The shared head watcher (cheap to clone).
#[derive(Clone)]
pub struct HeadWatch {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    every: Duration,
    head: watch::Sender<i64>,
    /// Rung when a waiter arrives, so the idle poller wakes up.
    arrived: Notify,
    /// At most `--feed-max-waiters` waiters at once.
    slots: Arc<Semaphore>,
    started: AtomicBool,
    /// Set when the API stops: waiters answer at once.
    closed: AtomicBool,
    metrics: Arc<Metrics>,
}

/// One waiting reader: receives the head until dropped.
pub struct Waiter {
    /// The last head the poller read (the last committed seq).
    pub head: watch::Receiver<i64>,
    _slot: OwnedSemaphorePermit,
}

impl HeadWatch {
    /// A watcher polling `store` every `every`, for at most `max_waiters`
    /// waiters at once. Its poller starts with the first waiter, on the
    /// runtime that waiter runs on.
    pub fn new(store: Store, every: Duration, max_waiters: usize, metrics: Arc<Metrics>) -> Self {
        HeadWatch {
            inner: Arc::new(Inner {
                store,
                every,
                head: watch::channel(0).0,
                arrived: Notify::new(),
                slots: Arc::new(Semaphore::new(max_waiters)),
                started: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                metrics,
            }),
        }
    }

    /// The API is stopping: wakes every waiter (they answer what they
    /// have), so a long poll never holds a graceful shutdown for `wait`.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.head.send_modify(|_| {});
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Registers a waiter (`None`: `--feed-max-waiters` are waiting already).
    pub fn wait(&self) -> Option<Waiter> {
        let slot = self.inner.slots.clone().try_acquire_owned().ok()?;
        if !self.inner.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(poll(self.inner.clone()));
        }
        let head = self.inner.head.subscribe();
        self.inner.arrived.notify_one();
        Some(Waiter { head, _slot: slot })
    }
}

/// The poller: reads the head while anyone waits, sleeps on `arrived`
/// otherwise. It lives as long as the API's runtime.
async fn poll(me: Arc<Inner>) {
    loop {
        if me.head.receiver_count() == 0 {
            me.arrived.notified().await;
            continue;
        }
        match me.store.feed_head().await {
            Ok(h) => {
                me.metrics.feed.head.set(h.seq);
                me.head.send_if_modified(|seen| {
                    let moved = *seen != h.seq;
                    *seen = h.seq;
                    moved
                });
            }
            Err(e) => warn!(error = %e, "event feed: reading the head failed"),
        }
        tokio::time::sleep(me.every).await;
    }
}
