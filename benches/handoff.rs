//! Cross-shard handoff through `chat_server::mesh::mailbox`, wake-up
//! included: a producer thread pushes 64 Ki `ShardEvent::Room` events to a
//! consumer thread running a tokio current_thread runtime that awaits
//! `Mailbox::rung()` and drains with `try_pop`, as a shard does with its
//! inbox.
//!
//! Two producer styles are compared: ringing per event (`send`) and ringing
//! once per batch of 64 (`push` x64, then `ring`), which is what writers do
//! after a committed batch. Every delivered message crosses this seam once
//! per shard, so its per-event cost (and how much batching the doorbell
//! saves) bounds the server's delivery rate. Time is measured end to end,
//! from the first push to the consumer holding the last event; throughput
//! is in events (elements).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chat_server::mesh::{mailbox, MailboxSender, PushError};
use chat_server::protocol::Frame;
use chat_server::router::ShardEvent;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Events moved per iteration.
const EVENTS: u64 = 64 * 1024;
/// The server's default shard inbox capacity (`CHAT_SHARD_QUEUE`).
const CAPACITY: usize = 65_536;
/// Events per ring in the batched style.
const BATCH: u64 = 64;

#[derive(Clone, Copy)]
enum Style {
    RingPerEvent,
    RingPerBatch,
}

/// Pushes, ringing and yielding while the mailbox is full so the consumer
/// can make room (it would otherwise never be woken for the queued part).
fn push_waiting(tx: &MailboxSender<ShardEvent>, mut ev: ShardEvent) {
    loop {
        match tx.push(ev) {
            Ok(()) => return,
            Err(PushError::Full(back)) => {
                ev = back;
                tx.ring();
                std::thread::yield_now();
            }
            Err(PushError::Closed(_)) => panic!("consumer gone"),
        }
    }
}

/// Moves `total` events from this thread to a fresh consumer thread; returns
/// the time from the first push to the consumer popping the last event.
fn run(style: Style, total: u64, event: &ShardEvent) -> Duration {
    let (tx, rx) = mailbox::<ShardEvent>(CAPACITY);
    let ready = Arc::new(Barrier::new(2));
    let consumer = {
        let ready = ready.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("consumer runtime");
            ready.wait();
            rt.block_on(async move {
                let mut got = 0u64;
                while got < total {
                    rx.rung().await;
                    while let Some(ev) = rx.try_pop() {
                        drop(ev);
                        got += 1;
                    }
                }
                Instant::now()
            })
        })
    };
    ready.wait();
    let start = Instant::now();
    match style {
        Style::RingPerEvent => {
            for _ in 0..total {
                let mut ev = event.clone();
                loop {
                    match tx.send(ev) {
                        Ok(()) => break,
                        Err(PushError::Full(back)) => {
                            ev = back;
                            tx.ring();
                            std::thread::yield_now();
                        }
                        Err(PushError::Closed(_)) => panic!("consumer gone"),
                    }
                }
            }
        }
        Style::RingPerBatch => {
            let mut sent = 0;
            while sent < total {
                let n = BATCH.min(total - sent);
                for _ in 0..n {
                    push_waiting(&tx, event.clone());
                }
                tx.ring();
                sent += n;
            }
        }
    }
    let end = consumer.join().expect("consumer thread");
    end - start
}

fn bench_handoff(c: &mut Criterion) {
    let event = ShardEvent::Room {
        room: Arc::from("general"),
        id: 1,
        own: None,
        sent: chat_server::router::Sent {
            shard: 0,
            at: std::time::Instant::now(),
        },
        frame: Frame::from(
            r#"{"type":"message","data":{"id":1,"fromUser":42,"username":"alice","content":"hi","timestamp":"2025-06-01T12:00:00.000000Z","room":"general"}}"#,
        ),
        kick: None,
    };
    let mut g = c.benchmark_group("handoff");
    g.throughput(Throughput::Elements(EVENTS));
    // Each sample moves 64 Ki events across threads; keep the sample count modest.
    g.sample_size(20);
    for (name, style) in [
        ("ring_per_event", Style::RingPerEvent),
        ("ring_per_64", Style::RingPerBatch),
    ] {
        g.bench_function(BenchmarkId::new(name, EVENTS), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run(style, EVENTS, &event)).sum())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_handoff);
criterion_main!(benches);
