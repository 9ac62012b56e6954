//! Bounded, lock-free mailboxes between threads: the shard inboxes and the
//! writer queues.
//!
//! A mailbox is a bounded crossbeam channel plus a doorbell. Producers push
//! any number of items, then ring once; ringing an already-rung bell is one
//! atomic swap and nothing else, so a burst of events costs the target
//! runtime one wake-up, not one per event. Pushing never blocks: a full
//! mailbox is reported to the producer, which decides (answer "busy", or
//! retry later).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::Notify;

/// Wakes the consumer once per burst of pushes.
#[derive(Debug, Default)]
struct Doorbell {
    rung: AtomicBool,
    notify: Notify,
}

/// Why a push did not go in.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// The mailbox holds its capacity already.
    Full(T),
    /// The consumer is gone (shutting down).
    Closed(T),
}

/// The producing side of a mailbox; cheap to clone, one per producer.
#[derive(Debug)]
pub struct MailboxSender<T> {
    tx: Sender<T>,
    bell: Arc<Doorbell>,
}

impl<T> Clone for MailboxSender<T> {
    fn clone(&self) -> Self {
        MailboxSender {
            tx: self.tx.clone(),
            bell: self.bell.clone(),
        }
    }
}

/// The consuming side of a mailbox, owned by one thread.
#[derive(Debug)]
pub struct Mailbox<T> {
    rx: Receiver<T>,
    bell: Arc<Doorbell>,
}

/// Creates a mailbox holding at most `capacity` items.
pub fn mailbox<T>(capacity: usize) -> (MailboxSender<T>, Mailbox<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let bell = Arc::new(Doorbell::default());
    (
        MailboxSender {
            tx,
            bell: bell.clone(),
        },
        Mailbox { rx, bell },
    )
}

impl<T> MailboxSender<T> {
    /// Pushes without waking the consumer; call [`ring`](Self::ring) after the burst.
    pub fn push(&self, item: T) -> Result<(), PushError<T>> {
        self.tx.try_send(item).map_err(|e| match e {
            TrySendError::Full(v) => PushError::Full(v),
            TrySendError::Disconnected(v) => PushError::Closed(v),
        })
    }

    /// Wakes the consumer unless it was already woken and has not drained yet.
    pub fn ring(&self) {
        if !self.bell.rung.swap(true, Ordering::AcqRel) {
            self.bell.notify.notify_one();
        }
    }

    /// Pushes one item and rings.
    pub fn send(&self, item: T) -> Result<(), PushError<T>> {
        self.push(item)?;
        self.ring();
        Ok(())
    }

    /// Items waiting in the mailbox now.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

impl<T> Mailbox<T> {
    /// Waits until a producer rings, then re-arms the bell. Drain with
    /// [`try_pop`](Self::try_pop) after it returns: whatever is pushed from
    /// now on rings again.
    pub async fn rung(&self) {
        self.bell.notify.notified().await;
        // Acquire pairs with the producers' swap, making their pushes visible.
        self.bell.rung.swap(false, Ordering::AcqRel);
    }

    /// Takes the next item, if any.
    pub fn try_pop(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_reports_full() {
        let (tx, rx) = mailbox::<u32>(2);
        assert!(tx.push(1).is_ok());
        assert!(tx.push(2).is_ok());
        assert_eq!(tx.push(3), Err(PushError::Full(3)));
        assert_eq!(rx.try_pop(), Some(1));
        assert_eq!(rx.try_pop(), Some(2));
        assert_eq!(rx.try_pop(), None);
        drop(rx);
        assert_eq!(tx.push(4), Err(PushError::Closed(4)));
    }

    #[test]
    fn one_wake_per_burst_and_no_lost_wakeups() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = mailbox::<u32>(1024);
        let producer = std::thread::spawn(move || {
            for burst in 0..200u32 {
                for i in 0..5 {
                    while tx.push(burst * 5 + i).is_err() {
                        std::thread::yield_now();
                    }
                }
                tx.ring();
            }
        });
        let got = rt.block_on(async {
            let mut got = Vec::new();
            while got.len() < 1000 {
                tokio::time::timeout(std::time::Duration::from_secs(5), rx.rung())
                    .await
                    .expect("a push was never signalled");
                while let Some(v) = rx.try_pop() {
                    got.push(v);
                }
            }
            got
        });
        producer.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }
}
