//! PostgreSQL going away under traffic (a private cluster, stopped and
//! started with `scripts/pg.sh`): the server stays up, keeps its
//! WebSockets, delivers exactly what it stored, and refuses (without
//! delivering or storing) what it could not store in time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use futures_util::SinkExt;

use crate::harness::*;

const ROOM: &str = "outage";
const NOT_STORED: &str = "message not stored: database unavailable";

/// Sends `{prefix}-{i}` every `every` until `stop`; returns the sink and
/// what was sent.
async fn paced_sender(
    mut sink: Sink,
    prefix: &'static str,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> (Sink, Vec<String>) {
    let mut sent = Vec::new();
    let mut tick = tokio::time::interval(every);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let content = format!("{prefix}-{}", sent.len());
        send_message(&mut sink, ROOM, &content)
            .await
            .expect("the sender's WebSocket stays open");
        sent.push(content);
    }
    (sink, sent)
}

/// Room membership on two shards: (alice on shard 0, bob on shard 1).
async fn two_members(server: &ServerProcess) -> (Client, Client) {
    let mut alice = Client::connect_on_shard(server, 1, "alice", 0).await;
    let mut bob = Client::connect_on_shard(server, 2, "bob", 1).await;
    alice.join(ROOM).await;
    bob.join(ROOM).await;
    (alice, bob)
}

fn assert_open(log: &Log, who: &str) {
    assert!(
        log.close.is_none() && log.ended.is_none(),
        "{who}'s WebSocket closed: close {:?}, ended {:?}",
        log.close,
        log.ended
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_database_outage_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    let pg = PrivatePg::create().await;
    let mut server = ServerProcess::start(&pg.url, &[("CHAT_PERSIST_TIMEOUT_MS", "8000")]).await;
    create_room(&pg.url, ROOM).await;
    let (alice, bob) = two_members(&server).await;
    let (sink, alice_rx) = alice.split();
    let (_bob_sink, bob_rx) = bob.split();

    let stop = Arc::new(AtomicBool::new(false));
    let pacer = tokio::spawn(paced_sender(
        sink,
        "steady",
        Duration::from_millis(20),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down = Instant::now();
    pg.stop().await;
    let stop_took = down.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.start().await;
    let outage = down.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut sink, sent) = pacer.await.unwrap();

    // Every message gets an answer: its echo or an error (8 s at most).
    alice_rx
        .wait_for(
            "an answer to every message sent",
            Duration::from_secs(20),
            |l| l.messages.len() + l.errors.len() >= sent.len(),
        )
        .await;
    // Room for late duplicates to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alice_log = alice_rx.snapshot();
    let bob_log = bob_rx.snapshot();
    eprintln!(
        "short outage: pg.sh stop took {stop_took:?}, database down {outage:?}; sent {}, acked {}, refused {}, delivered {}",
        sent.len(),
        alice_log.messages.len(),
        alice_log.errors.len(),
        bob_log.messages.len()
    );

    assert!(
        server.is_running(),
        "the server exited:\n{}",
        server.log_text()
    );
    server.assert_no_panic();
    assert!(
        server.log_contains("database unavailable"),
        "sanity: the writer should have noticed the outage:\n{}",
        server.log_text()
    );
    assert_open(&alice_log, "alice");
    assert_open(&bob_log, "bob");
    assert_eq!(
        alice_log.messages.len() + alice_log.errors.len(),
        sent.len(),
        "one answer per message: acks {}, errors {:?}",
        alice_log.messages.len(),
        alice_log.errors
    );
    for e in &alice_log.errors {
        assert_eq!(e, NOT_STORED);
    }

    // Acknowledged: distinct, in id order, delivered to bob exactly so.
    assert_increasing(&alice_log.messages, "alice");
    let acked: Vec<String> = alice_log
        .messages
        .iter()
        .map(|m| m.content.clone())
        .collect();
    let acked_set: HashSet<&String> = acked.iter().collect();
    assert_eq!(acked_set.len(), acked.len(), "an ack came twice");
    let sent_set: HashSet<&String> = sent.iter().collect();
    assert!(acked_set.is_subset(&sent_set), "acked something never sent");
    assert_eq!(
        bob_log.messages, alice_log.messages,
        "the receiver must get exactly the acknowledged messages, in id order"
    );

    // Stored exactly once with the same content; refused ones not at all.
    assert_all_stored(&pg.url, &alice_log.messages, "acknowledged").await;
    let counts = stored_count_by_content(&pg.url, &sent).await;
    for c in &sent {
        let n = counts.get(c).copied().unwrap_or(0);
        let want = i64::from(acked_set.contains(c));
        assert_eq!(n, want, "{c:?} stored {n} times (acked: {})", want == 1);
    }
    // With the database down well under the persist timeout, nothing is refused.
    if outage < Duration::from_secs(6) {
        assert!(
            alice_log.errors.is_empty(),
            "database down {outage:?} < persist timeout 8 s, yet {} messages were refused",
            alice_log.errors.len()
        );
    }

    // Both WebSockets still work.
    send_message(&mut sink, ROOM, "after the outage")
        .await
        .unwrap();
    let n = alice_log.messages.len();
    for (who, rx) in [("alice", &alice_rx), ("bob", &bob_rx)] {
        rx.wait_for(
            &format!("{who} to get the message after the outage"),
            Duration::from_secs(10),
            |l| l.messages.len() > n && l.messages[n].content == "after the outage",
        )
        .await;
    }
    drop(server);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_database_outage_refuses_then_recovers() {
    let _serial = SERIAL.lock().await;
    let pg = PrivatePg::create().await;
    let mut server = ServerProcess::start(&pg.url, &[("CHAT_PERSIST_TIMEOUT_MS", "1500")]).await;
    create_room(&pg.url, ROOM).await;
    let (alice, bob) = two_members(&server).await;
    let (mut sink, alice_rx) = alice.split();
    let (mut bob_sink, bob_rx) = bob.split();

    let before: Vec<String> = (0..5).map(|i| format!("before-{i}")).collect();
    for c in &before {
        send_message(&mut sink, ROOM, c).await.unwrap();
    }
    for rx in [&alice_rx, &bob_rx] {
        rx.wait_for(
            "the messages before the outage",
            Duration::from_secs(10),
            |l| l.messages.len() == 5,
        )
        .await;
    }

    pg.stop().await;
    let down = Instant::now();

    // A history request during the outage gets an error, not a hang.
    let history = json!({"type": "room_history", "room": ROOM}).to_string();
    bob_sink.send(Message::text(history.clone())).await.unwrap();
    let asked = Instant::now();

    let during: Vec<String> = (0..10).map(|i| format!("during-{i}")).collect();
    let mut sent_at = Vec::new();
    for c in &during {
        sent_at.push(Instant::now());
        send_message(&mut sink, ROOM, c).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    bob_rx
        .wait_for(
            "an answer to the history request during the outage",
            Duration::from_secs(12),
            |l| !l.errors.is_empty() || !l.others.is_empty(),
        )
        .await;
    let answered = asked.elapsed();
    let bob_mid = bob_rx.snapshot();
    assert!(
        bob_mid.others.is_empty() && bob_mid.errors.len() == 1,
        "history during the outage: expected one error frame, got errors {:?}, frames {:?}",
        bob_mid.errors,
        bob_mid.others
    );
    assert!(
        answered < Duration::from_secs(10),
        "history error took {answered:?}"
    );

    // Each message sent during the outage is refused while it lasts.
    alice_rx
        .wait_for(
            "a refusal for each message sent during the outage",
            Duration::from_secs(8),
            |l| l.errors.len() >= during.len(),
        )
        .await;
    let refused_by = down.elapsed();
    // Diagnostic: how long each refused message waited (errors come in send
    // order: one writer, batches in sequence).
    let waited: Vec<u128> = alice_rx
        .snapshot()
        .error_times
        .iter()
        .zip(&sent_at)
        .map(|(e, s)| e.duration_since(*s).as_millis())
        .collect();
    eprintln!("long outage: ms from send to refusal (persist timeout 1500): {waited:?}");
    let wait = Duration::from_secs(4).saturating_sub(down.elapsed());
    tokio::time::sleep(wait).await;
    pg.start().await;
    let outage = down.elapsed();

    // Recovery without a restart.
    let after: Vec<String> = (0..5).map(|i| format!("after-{i}")).collect();
    for c in &after {
        send_message(&mut sink, ROOM, c).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (who, rx) in [("alice", &alice_rx), ("bob", &bob_rx)] {
        rx.wait_for(
            &format!("{who} to get the messages after the outage"),
            Duration::from_secs(15),
            |l| l.messages.len() >= 10,
        )
        .await;
    }
    bob_sink.send(Message::text(history)).await.unwrap();
    bob_rx
        .wait_for("history after the outage", Duration::from_secs(10), |l| {
            !l.others.is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alice_log = alice_rx.snapshot();
    let bob_log = bob_rx.snapshot();
    eprintln!(
        "long outage: database down {outage:?}, all refused {refused_by:?} after it went down, history error after {answered:?}"
    );

    assert!(
        server.is_running(),
        "the server exited:\n{}",
        server.log_text()
    );
    server.assert_no_panic();
    assert_open(&alice_log, "alice");
    assert_open(&bob_log, "bob");
    assert_eq!(
        alice_log.errors.len(),
        during.len(),
        "{:?}",
        alice_log.errors
    );
    for e in &alice_log.errors {
        assert_eq!(e, NOT_STORED);
    }
    let expected: Vec<&String> = before.iter().chain(&after).collect();
    let got: Vec<&String> = alice_log.messages.iter().map(|m| &m.content).collect();
    assert_eq!(got, expected, "alice's acks");
    assert_eq!(bob_log.messages, alice_log.messages, "bob's deliveries");
    assert_increasing(&alice_log.messages, "alice");
    assert_eq!(bob_log.errors.len(), 1, "{:?}", bob_log.errors);

    let history_frame = &bob_log.others[0];
    assert_eq!(history_frame["type"], "room_history", "{history_frame}");
    let history_contents: Vec<&str> = history_frame["data"]
        .as_array()
        .expect("history entries")
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        history_contents,
        expected.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "history after the outage"
    );

    assert_all_stored(&pg.url, &alice_log.messages, "acknowledged").await;
    let all: Vec<String> = before
        .iter()
        .chain(&during)
        .chain(&after)
        .cloned()
        .collect();
    let counts = stored_count_by_content(&pg.url, &all).await;
    for c in &all {
        let n = counts.get(c).copied().unwrap_or(0);
        let want = i64::from(!c.starts_with("during"));
        assert_eq!(n, want, "{c:?} stored {n} times");
    }
    drop(server);
    drop(pg);
}
