//! Per-sender sequence tracking at one receiver: unique, duplicate and out-of-order frames.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Most gap ranges remembered per sender; older gaps are forgotten (a late frame from a
/// forgotten gap is then counted as a duplicate).
const MAX_GAPS: usize = 64;

/// What one observed frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First sight, in order (or skipping ahead, leaving a gap).
    New,
    /// First sight, but older than a frame already seen (fills a gap).
    OutOfOrder,
    /// Seen before.
    Duplicate,
}

/// State for one sender as seen by one receiver.
#[derive(Debug, Default)]
struct SenderSeq {
    /// One past the highest sequence number seen.
    next: u64,
    /// Missing half-open ranges below `next`, oldest first.
    gaps: Vec<(u64, u64)>,
}

impl SenderSeq {
    fn observe(&mut self, seq: u64) -> Seen {
        if seq == self.next {
            self.next += 1;
            return Seen::New;
        }
        if seq > self.next {
            if self.gaps.len() == MAX_GAPS {
                self.gaps.remove(0);
            }
            self.gaps.push((self.next, seq));
            self.next = seq + 1;
            return Seen::New;
        }
        let Some(i) = self.gaps.iter().position(|&(a, b)| a <= seq && seq < b) else {
            return Seen::Duplicate;
        };
        let (a, b) = self.gaps[i];
        match (seq == a, seq + 1 == b) {
            (true, true) => {
                self.gaps.remove(i);
            }
            (true, false) => self.gaps[i].0 = seq + 1,
            (false, true) => self.gaps[i].1 = seq,
            (false, false) => {
                self.gaps[i].1 = seq;
                self.gaps.insert(i + 1, (seq + 1, b));
            }
        }
        Seen::OutOfOrder
    }
}

/// Identity hasher for small integer keys.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Sequence tracking for every sender one receiver hears from.
#[derive(Debug, Default)]
pub struct SeqTracker {
    senders: HashMap<u32, SenderSeq, BuildHasherDefault<IdHasher>>,
}

impl SeqTracker {
    /// Records frame `seq` from `sender` and classifies it.
    pub fn observe(&mut self, sender: u32, seq: u64) -> Seen {
        self.senders.entry(sender).or_default().observe(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Seen::*;

    fn run(seqs: &[u64]) -> Vec<Seen> {
        let mut t = SeqTracker::default();
        seqs.iter().map(|&s| t.observe(1, s)).collect()
    }

    #[test]
    fn in_order() {
        assert_eq!(run(&[0, 1, 2, 3]), vec![New; 4]);
    }

    #[test]
    fn duplicates() {
        assert_eq!(
            run(&[0, 1, 1, 0, 2]),
            vec![New, New, Duplicate, Duplicate, New]
        );
    }

    #[test]
    fn reordering_fills_gaps_once() {
        assert_eq!(
            run(&[0, 3, 1, 2, 2, 5, 4, 6]),
            vec![New, New, OutOfOrder, OutOfOrder, Duplicate, New, OutOfOrder, New]
        );
        // Gap split in the middle.
        assert_eq!(
            run(&[5, 2, 1, 3, 0, 4, 4]),
            vec![New, OutOfOrder, OutOfOrder, OutOfOrder, OutOfOrder, OutOfOrder, Duplicate]
        );
    }

    #[test]
    fn senders_are_independent() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(1, 0), New);
        assert_eq!(t.observe(2, 0), New);
        assert_eq!(t.observe(2, 0), Duplicate);
        assert_eq!(t.observe(1, 1), New);
    }

    #[test]
    fn lost_frames_are_never_counted_as_received() {
        // 10 sent, 3 and 7 lost: unique = 8.
        let seen = run(&[0, 1, 2, 4, 5, 6, 8, 9]);
        assert_eq!(seen.iter().filter(|s| **s != Duplicate).count(), 8);
    }

    #[test]
    fn gap_memory_is_bounded() {
        let mut s = SenderSeq::default();
        for i in 0..1000 {
            s.observe(i * 2);
        }
        assert_eq!(s.gaps.len(), MAX_GAPS);
    }
}
