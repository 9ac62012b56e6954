//! Faults: NATS restarted mid-traffic, a node killed.

use std::time::Duration;

use serde_json::json;

use crate::harness::{
    assert_all_stored, create_room, send_message, Client, Reader, SharedDb, Sink, SERIAL,
};
use crate::nodes::{assert_same_as_stored, finish, start_node, stored_room_ids, PrivateNats};

/// Sends `n` messages, one every `pace`, in a task.
fn paced(
    mut sink: Sink,
    prefix: &'static str,
    n: usize,
    pace: Duration,
) -> tokio::task::JoinHandle<(usize, Sink)> {
    tokio::spawn(async move {
        let mut written = 0;
        for i in 0..n {
            if send_message(&mut sink, "lobby", &format!("{prefix}-{i}"))
                .await
                .is_err()
            {
                break;
            }
            written += 1;
            tokio::time::sleep(pace).await;
        }
        (written, sink)
    })
}

/// NATS is killed while both nodes send and restarted 1.5 s later: nodes
/// reconnect by themselves and fill what they missed from PostgreSQL, so
/// every member still gets every message, in the stored order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_traffic_loses_nothing_and_keeps_order() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let mut nats = PrivateNats::start().await;
    let nodes = [
        start_node(&db.url, &nats.url(), "a").await,
        start_node(&db.url, &nats.url(), "b").await,
    ];
    create_room(&db.url, "lobby").await;
    let mut keep = Vec::new();
    let mut readers: Vec<(String, Reader)> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut c = Client::connect(node, 100 + i as i64, &format!("reader{i}")).await;
        c.join("lobby").await;
        let (sink, reader) = c.split();
        keep.push(sink);
        readers.push((format!("reader on node {i}"), reader));
    }
    const PREFIXES: [&str; 2] = ["a", "b"];
    let mut sinks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut c = Client::connect(node, 200 + i as i64, &format!("sender{i}")).await;
        c.join("lobby").await;
        let (sink, reader) = c.split();
        readers.push((format!("sender on node {i}"), reader));
        sinks.push(sink);
    }
    let senders: Vec<_> = sinks
        .into_iter()
        .zip(PREFIXES)
        .map(|(sink, prefix)| paced(sink, prefix, 400, Duration::from_millis(5)))
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats.restart().await;
    for s in senders {
        let (written, sink) = s.await.expect("sender task");
        assert_eq!(written, 400);
        keep.push(sink);
    }
    // Everything sent was acknowledged (echoed) to its sender...
    for (who, r) in readers.iter().filter(|(w, _)| w.starts_with("sender")) {
        r.wait_for(who, Duration::from_secs(30), |l| {
            l.messages.len() >= 800 || !l.errors.is_empty()
        })
        .await;
    }
    let stored = stored_room_ids(&db.url, "lobby").await;
    assert_eq!(stored.len(), 800, "every message stored once");
    // ... and every member converges on exactly the stored history.
    for (who, r) in &readers {
        r.wait_for(who, Duration::from_secs(30), |l| l.messages.len() >= 800)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for (who, r) in &readers {
        let log = r.snapshot();
        assert!(log.errors.is_empty(), "{who}: errors {:?}", log.errors);
        assert_same_as_stored(&log.messages, &stored, who);
    }
    for n in &nodes {
        assert!(
            n.log_contains("NATS connected: filling every followed stream"),
            "node did not see NATS come back:\n{}",
            n.log_text()
        );
        n.assert_no_panic();
    }
    drop(keep);
    drop(nodes);
    db.drop_now().await;
}

/// A node is killed (SIGKILL) mid-traffic: its clients reconnect to the
/// other node and recover with `join` + `since`; together with what they
/// saw before, they have every stored message exactly once. Whatever the
/// killed node acknowledged is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_recover_on_another_node() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let nats = crate::nodes::nats_url();
    let mut nodes = [
        start_node(&db.url, &nats, "a").await,
        start_node(&db.url, &nats, "b").await,
    ];
    create_room(&db.url, "lobby").await;
    let mut reader = Client::connect(&nodes[0], 100, "reader").await;
    reader.join("lobby").await;
    let (_reader_sink, reader_log) = reader.split();
    // A sender on each node; the one on the killed node records its acks.
    let mut doomed = Client::connect(&nodes[0], 201, "doomed").await;
    doomed.join("lobby").await;
    let (doomed_sink, doomed_log) = doomed.split();
    let mut survivor = Client::connect(&nodes[1], 202, "survivor").await;
    survivor.join("lobby").await;
    let (survivor_sink, _survivor_log) = survivor.split();
    let doomed_task = paced(doomed_sink, "doomed", 2000, Duration::from_millis(2));
    let survivor_task = paced(survivor_sink, "survivor", 600, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    nodes[0].kill9();
    let before = reader_log.finish(Duration::from_secs(10)).await.messages;
    let acked = doomed_log.finish(Duration::from_secs(10)).await.messages;
    let _ = doomed_task.await;
    assert!(
        !before.is_empty(),
        "the reader saw messages before the kill"
    );
    crate::harness::assert_increasing(&before, "reader before the kill");
    assert_all_stored(&db.url, &acked, "acknowledged by the killed node").await;

    // The reader reconnects to node b and recovers from its last id.
    let last = before.last().map_or(0, |m| m.id);
    let mut again = Client::connect(&nodes[1], 100, "reader").await;
    again
        .send(json!({"type": "join", "room": "lobby", "since": last}))
        .await;
    let (_again_sink, after_log) = again.split();
    let (written, _s) = survivor_task.await.expect("survivor task");
    assert_eq!(written, 600);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = stored_room_ids(&db.url, "lobby").await;
    let want = stored.len();
    after_log
        .wait_for("recovery", Duration::from_secs(30), |l| {
            before.len() + l.messages.iter().filter(|m| m.id > last).count() >= want
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = after_log.snapshot();
    let at = log
        .others
        .iter()
        .position(|v| v["type"] == "join_ack")
        .expect("join_ack");
    let ack = &log.others[at];
    assert_eq!(ack["data"]["recovered"], true, "{ack}");
    // Node b may lag behind the dead node a: before its `join` with `since`
    // is read, the new connection may get live messages the reader already
    // has (id <= since), which a client drops (PROTOCOL "join with since").
    // From the ack on, nothing up to `since` may come.
    let late = &log.messages[log.others_after[at]..];
    assert!(
        late.iter().all(|m| m.id > last),
        "after the join_ack, a message up to since {last}: {:?}",
        late.iter().filter(|m| m.id <= last).collect::<Vec<_>>()
    );
    let mut after: Vec<_> = log
        .messages
        .iter()
        .filter(|m| m.id > last)
        .cloned()
        .collect();
    after.sort_by_key(|m| m.id);
    let mut all = before.clone();
    all.extend(after);
    assert_same_as_stored(&all, &stored, "reader before and after recovery");
    nodes[1].assert_no_panic();
    // A cluster node still stops gracefully (writers, then the link, then shards).
    nodes[1].signal("TERM");
    let status = nodes[1].wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        nodes[1].log_text()
    );
    assert!(nodes[1].log_contains("cluster link stopped"));
    drop(nodes);
    db.drop_now().await;
}

/// With NATS down, a node still converges on what another node stored (by
/// its periodic comparison with PostgreSQL), even when nothing follows
/// the last message; when NATS is back, live fan-out resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_converges_from_postgres_while_nats_is_down() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let mut nats = PrivateNats::start().await;
    let nodes = [
        start_node(&db.url, &nats.url(), "a").await,
        start_node(&db.url, &nats.url(), "b").await,
    ];
    create_room(&db.url, "lobby").await;
    let mut reader = Client::connect(&nodes[1], 100, "reader").await;
    reader.join("lobby").await;
    let (_reader_sink, reader_log) = reader.split();
    let mut sender = Client::connect(&nodes[0], 200, "sender").await;
    sender.join("lobby").await;
    let (mut sink, sender_log) = sender.split();
    send_message(&mut sink, "lobby", "before")
        .await
        .expect("send");
    reader_log
        .wait_for("the first message", Duration::from_secs(10), |l| {
            l.messages.len() == 1
        })
        .await;
    nats.kill();
    for i in 0..20 {
        send_message(&mut sink, "lobby", &format!("while-down-{i}"))
            .await
            .expect("send");
    }
    sender_log
        .wait_for("the sender's echoes", Duration::from_secs(10), |l| {
            l.messages.len() == 21
        })
        .await;
    reader_log
        .wait_for(
            "the messages stored while NATS is down",
            Duration::from_secs(10),
            |l| l.messages.len() >= 21,
        )
        .await;
    let stored = stored_room_ids(&db.url, "lobby").await;
    assert_same_as_stored(
        &reader_log.snapshot().messages,
        &stored,
        "reader, NATS down",
    );
    nats.restart().await;
    // Fan-out works again once the nodes are back on NATS.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send_message(&mut sink, "lobby", "after")
        .await
        .expect("send");
    reader_log
        .wait_for("the message after", Duration::from_secs(10), |l| {
            l.messages.len() >= 22
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = stored_room_ids(&db.url, "lobby").await;
    assert_eq!(stored.len(), 22);
    assert_same_as_stored(&reader_log.snapshot().messages, &stored, "reader");
    finish(nodes, db).await;
}
