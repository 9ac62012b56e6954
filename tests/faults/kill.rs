//! `kill -9` in the middle of a burst: everything any client saw is stored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::*;

const ROOM: &str = "burst";
const BURST: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_nothing_a_client_saw() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let mut server = ServerProcess::start(&db.url, &[]).await;
    create_room(&db.url, ROOM).await;

    let mut alice = Client::connect_on_shard(&server, 1, "alice", 0).await;
    let mut bob = Client::connect_on_shard(&server, 2, "bob", 1).await;
    alice.join(ROOM).await;
    bob.join(ROOM).await;
    let (sink, alice_rx) = alice.split();
    let (_bob_sink, bob_rx) = bob.split();

    let sender = spawn_burst(sink, ROOM, "burst", BURST);

    // Kill once the receiver has seen a few hundred messages.
    let started = Instant::now();
    bob_rx
        .wait_for(
            "300 messages at the receiver",
            Duration::from_secs(30),
            |l| l.messages.len() >= 300,
        )
        .await;
    server.kill9();
    let at_kill = (alice_rx.message_count(), bob_rx.message_count());
    let killed_after = started.elapsed();

    let (written, _sink) = tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("sender stops after the kill")
        .unwrap();
    let alice_log = alice_rx.finish(Duration::from_secs(10)).await;
    let bob_log = bob_rx.finish(Duration::from_secs(10)).await;
    eprintln!(
        "killed after {killed_after:?}: sender wrote {written}/{BURST}, acked at kill {} (final {}), receiver at kill {} (final {})",
        at_kill.0,
        alice_log.messages.len(),
        at_kill.1,
        bob_log.messages.len()
    );
    assert!(
        !bob_log.messages.is_empty(),
        "sanity: the receiver saw messages"
    );
    assert!(
        !alice_log.messages.is_empty(),
        "sanity: the sender saw acks"
    );
    assert!(
        alice_log.errors.is_empty() && bob_log.errors.is_empty(),
        "no error frames expected: {:?} {:?}",
        alice_log.errors,
        bob_log.errors
    );

    // Both saw the same id for the same content, in increasing id order.
    assert_increasing(&alice_log.messages, "sender");
    assert_increasing(&bob_log.messages, "receiver");
    let mut by_id: HashMap<i64, &str> = HashMap::new();
    for m in alice_log.messages.iter().chain(&bob_log.messages) {
        let c = by_id.entry(m.id).or_insert(&m.content);
        assert_eq!(*c, m.content, "id {} seen with two contents", m.id);
    }

    assert_all_stored(&db.url, &alice_log.messages, "sender's acks").await;
    assert_all_stored(&db.url, &bob_log.messages, "receiver's deliveries").await;
    drop(server);
    db.drop_now().await;
}
