//! Wire-protocol cost per frame: `protocol::decode` of every request type
//! (with a `message` carrying ~100 B and 4 KiB of content) and
//! `protocol::encode_message` of a room message.
//!
//! Every frame a client sends is decoded on its shard's single thread, and
//! every committed message is encoded once on a writer thread, so these
//! figures bound how many requests per second one core can parse and how
//! much writer time each delivered message costs before fan-out.

use std::hint::black_box;
use std::sync::Arc;

use chat_server::protocol::{decode, encode_message, Kind, StoredMessage, Target};
use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A printable, JSON-escaping-free text of exactly `len` bytes.
fn content(len: usize) -> String {
    const WORDS: &str = "the quick brown fox jumps over the lazy dog and keeps on chatting ";
    WORDS.chars().cycle().take(len).collect()
}

fn frame(kind: &str, content_len: usize) -> String {
    let c = content(content_len);
    match kind {
        "join" => r#"{"type":"join","room":"general"}"#.to_owned(),
        "message" => format!(r#"{{"type":"message","room":"general","content":"{c}"}}"#),
        "dm" => format!(r#"{{"type":"dm","to":123456,"content":"{c}"}}"#),
        "room_history" => r#"{"type":"room_history","room":"general","limit":50}"#.to_owned(),
        "dm_history" => r#"{"type":"dm_history","with":123456,"limit":50}"#.to_owned(),
        _ => unreachable!("unknown kind {kind}"),
    }
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocol/decode");
    let cases = [
        ("join", "join", 0),
        ("message_100B", "message", 100),
        ("message_4KiB", "message", 4096),
        ("dm_100B", "dm", 100),
        ("room_history", "room_history", 0),
        ("dm_history", "dm_history", 0),
    ];
    for (name, kind, len) in cases {
        let text = frame(kind, len);
        decode(&text).expect("bench frame decodes");
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &text, |b, text| {
            b.iter(|| decode(black_box(text)))
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocol/encode_message");
    for (name, len) in [("room_100B", 100), ("room_4KiB", 4096)] {
        let msg = StoredMessage {
            id: 1_234_567,
            from_user: 42,
            username: "alice".into(),
            content: content(len),
            timestamp: Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap(),
            target: Target::Room(Arc::from("general")),
            kind: Kind::Message,
            edited_at: None,
            deleted: false,
        };
        let encoded = encode_message(&msg);
        g.throughput(Throughput::Bytes(encoded.as_str().len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &msg, |b, msg| {
            b.iter(|| encode_message(black_box(msg)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
