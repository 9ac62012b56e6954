//! SIGTERM / SIGINT: graceful stop, exit 0, every client closed with 1001,
//! everything acknowledged delivered and stored.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::harness::*;

const ROOM: &str = "drain";
const BURST: usize = 3000;
/// The server's default `--shutdown-timeout-ms`, plus slack for process exit.
const EXIT_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_burst_drains_closes_with_1001_and_exits_0() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let mut server = ServerProcess::start(&db.url, &[]).await;
    create_room(&db.url, ROOM).await;

    let mut alice = Client::connect_on_shard(&server, 1, "alice", 0).await;
    let mut bob = Client::connect_on_shard(&server, 2, "bob", 1).await;
    let mut carol = Client::connect(&server, 3, "carol").await;
    alice.join(ROOM).await;
    bob.join(ROOM).await;
    carol.join(ROOM).await;
    let (sink, alice_rx) = alice.split();
    let (_bob_sink, bob_rx) = bob.split();
    let (_carol_sink, carol_rx) = carol.split();

    let sender = spawn_burst(sink, ROOM, "drain", BURST);

    alice_rx
        .wait_for("the first acks", Duration::from_secs(30), |l| {
            l.messages.len() >= 100
        })
        .await;
    server.signal("TERM");
    let signalled = Instant::now();
    let acked_at_signal = alice_rx.message_count();

    let status = server.wait_exit(EXIT_WITHIN).await;
    let exit_took = signalled.elapsed();
    let (written, _sink) = tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("sender stops")
        .unwrap();
    let alice_log = alice_rx.finish(Duration::from_secs(10)).await;
    let bob_log = bob_rx.finish(Duration::from_secs(10)).await;
    let carol_log = carol_rx.finish(Duration::from_secs(10)).await;
    eprintln!(
        "SIGTERM: exit {status} after {exit_took:?}; sender wrote {written}/{BURST}, acked {acked_at_signal} at the signal, {} in the end; bob {}, carol {}",
        alice_log.messages.len(),
        bob_log.messages.len(),
        carol_log.messages.len()
    );
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        server.log_text()
    );
    server.assert_no_panic();
    for (who, log) in [
        ("alice", &alice_log),
        ("bob", &bob_log),
        ("carol", &carol_log),
    ] {
        assert_eq!(
            log.close.as_ref().map(|c| c.0),
            Some(1001),
            "{who} should get a 1001 close frame; got {:?}, ended {:?}",
            log.close,
            log.ended
        );
        assert_increasing(&log.messages, who);
        assert_all_stored(&db.url, &log.messages, who).await;
    }

    // Everything acknowledged to the sender reached the other members.
    for (who, log) in [("bob", &bob_log), ("carol", &carol_log)] {
        let got: HashSet<i64> = log.messages.iter().map(|m| m.id).collect();
        let missing: Vec<i64> = alice_log
            .messages
            .iter()
            .map(|m| m.id)
            .filter(|id| !got.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged messages never reached {who} (first: {:?})",
            missing.len(),
            alice_log.messages.len(),
            &missing[..missing.len().min(10)]
        );
    }
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_0_and_closes_with_1001() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let mut server = ServerProcess::start(&db.url, &[]).await;
    create_room(&db.url, ROOM).await;
    let mut alice = Client::connect(&server, 1, "alice").await;
    alice.join(ROOM).await;
    alice
        .send(serde_json::json!({"type": "message", "room": ROOM, "content": "bye"}))
        .await;
    assert_eq!(alice.recv().await["type"], "message");
    let (_sink, rx) = alice.split();

    server.signal("INT");
    let status = server.wait_exit(EXIT_WITHIN).await;
    let log = rx.finish(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        server.log_text()
    );
    server.assert_no_panic();
    assert_eq!(
        log.close.as_ref().map(|c| c.0),
        Some(1001),
        "close frame {:?}, ended {:?}",
        log.close,
        log.ended
    );
    db.drop_now().await;
}
