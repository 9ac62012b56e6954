//! Fan-out of one room message to N local recipients (N = 10, 100, 1000):
//! encode the frame once and share it (each recipient's outbox gets a clone
//! of the refcounted `Frame`) versus encode it again for every recipient.
//!
//! The server encodes each committed message exactly once and lets every
//! shard and connection share that `Frame`; this bench shows what that
//! design saves as rooms grow. Throughput is reported per recipient
//! (elements = N). Each iteration also drains the outboxes, as writing the
//! frames to the sockets would, so dropping the frames is counted too.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;

use chat_server::protocol::{encode_message, Frame, Kind, StoredMessage, Target};
use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn message() -> StoredMessage {
    StoredMessage {
        id: 1_234_567,
        from_user: 42,
        username: "alice".into(),
        content: "the quick brown fox jumps over the lazy dog and keeps on chatting \
                  in the general room, 100 B"
            .into(),
        timestamp: Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap(),
        target: Target::Room(Arc::from("general")),
        kind: Kind::Message,
        edited_at: None,
        deleted: false,
    }
}

fn drain(outboxes: &mut [VecDeque<Frame>]) {
    for q in outboxes.iter_mut() {
        black_box(q.pop_front());
    }
}

fn bench_fanout(c: &mut Criterion) {
    let msg = message();
    let mut g = c.benchmark_group("fanout");
    for n in [10usize, 100, 1000] {
        let mut outboxes: Vec<VecDeque<Frame>> =
            (0..n).map(|_| VecDeque::with_capacity(4)).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("encode_once_share", n), |b| {
            b.iter(|| {
                let frame = encode_message(black_box(&msg));
                for q in outboxes.iter_mut() {
                    q.push_back(frame.clone());
                }
                drain(&mut outboxes);
            })
        });
        g.bench_function(BenchmarkId::new("encode_per_recipient", n), |b| {
            b.iter(|| {
                for q in outboxes.iter_mut() {
                    q.push_back(encode_message(black_box(&msg)));
                }
                drain(&mut outboxes);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
