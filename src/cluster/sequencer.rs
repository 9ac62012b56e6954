//! Per-stream ordering of what reaches a node: deliver a message when its
//! predecessor was delivered, hold it while a predecessor is missing, drop
//! what was delivered already.
//!
//! Cluster writers give every message the id of its predecessor in each
//! stream (`prev`), read under a row lock of the room (of both users, for a
//! DM) in the transaction that stores it, with ids drawn from the sequence
//! inside that same transaction: within a stream, ids increase in commit
//! order across all nodes, and `prev` is exactly the stream's previous
//! message. So, with `last` the last id delivered here:
//!
//! - `id <= last`: already delivered (a NATS copy of a filled message, or
//!   a DM received on both of its users' subjects): dropped;
//! - `prev <= last < id`: next in order: delivered, `last = id`, then every
//!   held message that became next;
//! - `prev > last`: something between is missing: held until it arrives or
//!   a fill from PostgreSQL (every stored id in `(last, upto]`, in order)
//!   supplies it.

use std::collections::BTreeMap;

use crate::router::ShardEvent;

/// The ordering state of one stream on this node.
#[derive(Debug)]
pub struct Sequencer {
    last: i64,
    /// Held messages by id: (prev, event).
    held: BTreeMap<i64, (i64, ShardEvent)>,
}

impl Sequencer {
    /// A stream whose messages up to `last` need no delivery here.
    pub fn new(last: i64) -> Sequencer {
        Sequencer {
            last,
            held: BTreeMap::new(),
        }
    }

    /// The last id delivered (or known not to need delivery).
    pub fn last(&self) -> i64 {
        self.last
    }

    /// How many messages wait for a predecessor.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The range a fill must read, `(last, upto]`, when messages are held.
    pub fn gap(&self) -> Option<(i64, i64)> {
        self.held.keys().next_back().map(|&upto| (self.last, upto))
    }

    /// Offers a message; returns what is now deliverable, in order.
    pub fn offer(&mut self, id: i64, prev: i64, event: ShardEvent) -> Vec<ShardEvent> {
        let mut out = Vec::new();
        if id <= self.last {
            return out;
        }
        if prev > self.last {
            self.held.insert(id, (prev, event));
            return out;
        }
        self.last = id;
        out.push(event);
        self.release(&mut out);
        out
    }

    /// Applies stored messages read from PostgreSQL: every stored id of the
    /// stream after `last` up to the read's end, in increasing order.
    /// Held copies are preferred (they may carry the sender's own copy).
    pub fn fill(&mut self, stored: Vec<(i64, ShardEvent)>) -> Vec<ShardEvent> {
        let mut out = Vec::new();
        for (id, event) in stored {
            if id <= self.last {
                continue;
            }
            let event = match self.held.remove(&id) {
                Some((_, held)) => held,
                None => event,
            };
            self.last = id;
            out.push(event);
        }
        self.release(&mut out);
        out
    }

    /// Moves the stream on to `last` without delivering (nothing needs
    /// the messages up to it here); returns what became deliverable.
    pub fn skip_to(&mut self, last: i64) -> Vec<ShardEvent> {
        let mut out = Vec::new();
        if last > self.last {
            self.last = last;
        }
        self.release(&mut out);
        out
    }

    fn release(&mut self, out: &mut Vec<ShardEvent>) {
        while let Some(entry) = self.held.first_entry() {
            let id = *entry.key();
            let prev = entry.get().0;
            if id <= self.last {
                entry.remove();
            } else if prev <= self.last {
                let (_, event) = entry.remove();
                self.last = id;
                out.push(event);
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;
    use std::sync::Arc;

    fn ev(id: i64) -> ShardEvent {
        ShardEvent::Room {
            room: Arc::from("r"),
            id,
            frame: Frame::from(format!("{id}")),
            own: None,
            sent: crate::router::Sent::remote(),
            kick: None,
        }
    }

    fn ids(events: &[ShardEvent]) -> Vec<i64> {
        events
            .iter()
            .map(|e| match e {
                ShardEvent::Room { id, .. } => *id,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn in_order_messages_pass_and_duplicates_drop() {
        let mut s = Sequencer::new(10);
        assert_eq!(ids(&s.offer(12, 10, ev(12))), vec![12]);
        assert_eq!(ids(&s.offer(12, 10, ev(12))), Vec::<i64>::new());
        assert_eq!(ids(&s.offer(9, 3, ev(9))), Vec::<i64>::new());
        assert_eq!(ids(&s.offer(30, 12, ev(30))), vec![30]);
        assert_eq!(s.last(), 30);
    }

    #[test]
    fn out_of_order_messages_wait_for_their_predecessor() {
        let mut s = Sequencer::new(10);
        assert!(s.offer(30, 20, ev(30)).is_empty());
        assert!(s.offer(40, 30, ev(40)).is_empty());
        assert_eq!(s.gap(), Some((10, 40)));
        assert_eq!(ids(&s.offer(20, 10, ev(20))), vec![20, 30, 40]);
        assert_eq!(s.gap(), None);
    }

    #[test]
    fn a_fill_supplies_what_never_came_and_keeps_held_copies() {
        let mut s = Sequencer::new(10);
        let held = ShardEvent::Room {
            room: Arc::from("r"),
            id: 30,
            frame: Frame::from("held"),
            own: None,
            sent: crate::router::Sent::remote(),
            kick: None,
        };
        assert!(s.offer(30, 20, held).is_empty());
        assert!(s.offer(50, 40, ev(50)).is_empty());
        // The database has 20 and 30 (50's predecessor 40 committed later).
        let out = s.fill(vec![(20, ev(20)), (30, ev(30))]);
        assert_eq!(ids(&out), vec![20, 30]);
        match &out[1] {
            ShardEvent::Room { frame, .. } => assert_eq!(frame.as_str(), "held"),
            _ => unreachable!(),
        }
        assert_eq!(s.gap(), Some((30, 50)));
        assert_eq!(ids(&s.offer(40, 30, ev(40))), vec![40, 50]);
        // A late NATS copy of a filled message is a duplicate.
        assert!(s.offer(20, 10, ev(20)).is_empty());
    }

    #[test]
    fn skipping_releases_what_follows() {
        let mut s = Sequencer::new(0);
        assert!(s.offer(8, 5, ev(8)).is_empty());
        assert_eq!(ids(&s.skip_to(5)), vec![8]);
        assert_eq!(s.last(), 8);
        assert!(s.skip_to(3).is_empty());
        assert_eq!(s.last(), 8);
    }
}
