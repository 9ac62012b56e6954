//! Room broadcast and order, DMs, presence and typing across nodes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{
    create_room, spawn_burst, Client, Reader, ServerProcess, SharedDb, Sink, SERIAL,
};
use crate::nodes::{assert_same_as_stored, finish, nats_url, start_node, stored_room_ids};

const PER_SENDER: usize = 300;

/// Three nodes, a sender and a reader on each, all sending at once: every
/// member on every node sees exactly the stored history, in its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_order_is_the_stored_order_on_every_node_under_concurrent_senders() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let nats = nats_url();
    let nodes = [
        start_node(&db.url, &nats, "a").await,
        start_node(&db.url, &nats, "b").await,
        start_node(&db.url, &nats, "c").await,
    ];
    create_room(&db.url, "lobby").await;
    let mut keep: Vec<Sink> = Vec::new();
    let mut readers: Vec<(String, Reader)> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut c = Client::connect(node, 100 + i as i64, &format!("reader{i}")).await;
        c.join("lobby").await;
        let (sink, reader) = c.split();
        keep.push(sink);
        readers.push((format!("reader on node {i}"), reader));
    }
    const PREFIXES: [&str; 3] = ["a", "b", "c"];
    let mut sinks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut c = Client::connect(node, 200 + i as i64, &format!("sender{i}")).await;
        c.join("lobby").await;
        let (sink, reader) = c.split();
        readers.push((format!("sender on node {i}"), reader));
        sinks.push(sink);
    }
    // Every member joined: all send at once.
    let bursts: Vec<_> = sinks
        .into_iter()
        .zip(PREFIXES)
        .map(|(sink, prefix)| spawn_burst(sink, "lobby", prefix, PER_SENDER))
        .collect();
    for b in bursts {
        let (written, sink) = b.await.expect("burst task");
        assert_eq!(written, PER_SENDER);
        keep.push(sink);
    }
    let total = 3 * PER_SENDER;
    for (who, r) in &readers {
        r.wait_for(who, Duration::from_secs(60), |l| l.messages.len() >= total)
            .await;
    }
    // Anything extra (a duplicate) would arrive within the check period.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stored = stored_room_ids(&db.url, "lobby").await;
    assert_eq!(stored.len(), total, "every message stored once");
    for (who, r) in &readers {
        let log = r.snapshot();
        assert!(log.errors.is_empty(), "{who}: errors {:?}", log.errors);
        assert_same_as_stored(&log.messages, &stored, who);
    }
    drop(keep);
    finish(nodes, db).await;
}

/// Reads DM frames (`data.id`) from a reader's log.
fn dm_ids(r: &Reader) -> Vec<i64> {
    r.snapshot()
        .others
        .iter()
        .filter(|v| v["type"] == "dm")
        .map(|v| v["data"]["id"].as_i64().expect("dm id"))
        .collect()
}

async fn send_dms(mut sink: Sink, to: i64, prefix: &'static str, n: usize) -> Sink {
    for i in 0..n {
        sink.send(Message::text(
            json!({"type": "dm", "to": to, "content": format!("{prefix}-{i}")}).to_string(),
        ))
        .await
        .expect("send dm");
    }
    sink
}

/// Two users, each with connections on two of three nodes, DMing each
/// other at once: every connection of both gets every DM, in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_reach_every_connection_of_both_users_on_every_node() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let nats = nats_url();
    let nodes = [
        start_node(&db.url, &nats, "a").await,
        start_node(&db.url, &nats, "b").await,
        start_node(&db.url, &nats, "c").await,
    ];
    // Both users must exist before the first DM: connect everyone first.
    let (a_send, a_on_a) = Client::connect(&nodes[0], 1, "alice").await.split();
    let (_a_sink_b, a_on_b) = Client::connect(&nodes[1], 1, "alice").await.split();
    let (_b_sink_b, b_on_b) = Client::connect(&nodes[1], 2, "bob").await.split();
    let (b_send, b_on_c) = Client::connect(&nodes[2], 2, "bob").await.split();
    const N: usize = 150;
    let (s1, s2) = tokio::join!(send_dms(a_send, 2, "ab", N), send_dms(b_send, 1, "ba", N));
    let readers = [
        ("alice on a", &a_on_a),
        ("alice on b", &a_on_b),
        ("bob on b", &b_on_b),
        ("bob on c", &b_on_c),
    ];
    for (who, r) in readers {
        r.wait_for(who, Duration::from_secs(60), |l| {
            l.others.iter().filter(|v| v["type"] == "dm").count() >= 2 * N
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let client = chat_server::store::connect(&db.url).await.expect("connect");
    let stored: Vec<i64> = client
        .query(
            "SELECT id FROM messages WHERE to_user IS NOT NULL ORDER BY id",
            &[],
        )
        .await
        .expect("query dms")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.len(), 2 * N);
    for (who, r) in readers {
        assert_eq!(
            dm_ids(r),
            stored,
            "{who}: DMs not exactly the stored ones in order"
        );
    }
    drop((s1, s2, _a_sink_b, _b_sink_b));
    finish(nodes, db).await;
}

/// Next frame of `type` (`presence`, `typing`) about `user`, within 10 s.
async fn next_notice(ws: &mut crate::harness::Ws, kind: &str, user: i64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} notice about user {user} within 10 s"))
            .expect("connection open")
            .expect("websocket");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            let about = v["data"]["user"]
                .as_i64()
                .or_else(|| v["data"]["fromUser"].as_i64());
            if v["type"] == kind && about == Some(user) {
                return v;
            }
        }
    }
}

/// Two nodes and a room `r` whose member alice (user 1) is offline, with
/// bob (user 2) connected to node b and following `r`.
async fn alice_away_bob_watching() -> (SharedDb, [ServerProcess; 2], Client) {
    let db = SharedDb::create().await;
    let nats = nats_url();
    let nodes = [
        start_node(&db.url, &nats, "a").await,
        start_node(&db.url, &nats, "b").await,
    ];
    create_room(&db.url, "r").await;
    // Alice becomes a member, then leaves the server.
    let mut alice = Client::connect(&nodes[0], 1, "alice").await;
    alice.join("r").await;
    alice.ws.close(None).await.expect("close");
    drop(alice);
    // Her "offline" is announced after a presence probe: let it pass first.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut bob = Client::connect(&nodes[1], 2, "bob").await;
    bob.join("r").await;
    // Give the nodes' subscriptions a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (db, nodes, bob)
}

/// A member on another node sees a user come online, type, and go offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_typing_cross_nodes() {
    let _serial = SERIAL.lock().await;
    let (db, nodes, mut bob) = alice_away_bob_watching().await;
    let mut alice = Client::connect(&nodes[0], 1, "alice").await;
    let online = next_notice(&mut bob.ws, "presence", 1).await;
    assert_eq!(online["data"]["status"], "online", "{online}");
    alice.send(json!({"type": "typing", "room": "r"})).await;
    let typing = next_notice(&mut bob.ws, "typing", 1).await;
    assert_eq!(typing["data"]["room"], "r", "{typing}");
    // join_ack's online list spans the nodes: alice (a), bob (b), carol (a).
    let mut carol = Client::connect(&nodes[0], 3, "carol").await;
    carol.send(json!({"type": "join", "room": "r"})).await;
    let ack = carol.recv().await;
    assert_eq!(ack["type"], "join_ack", "{ack}");
    assert_eq!(ack["data"]["online"], json!([1, 2, 3]), "{ack}");
    alice.ws.close(None).await.expect("close");
    let offline = next_notice(&mut bob.ws, "presence", 1).await;
    assert_eq!(offline["data"]["status"], "offline", "{offline}");
    finish(nodes, db).await;
}

/// A user connected to two nodes joins a room on one: its connection on
/// the other follows the room at once (and stops after a leave).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_on_one_node_reaches_the_users_connections_on_others() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let nats = nats_url();
    let nodes = [
        start_node(&db.url, &nats, "a").await,
        start_node(&db.url, &nats, "b").await,
    ];
    create_room(&db.url, "r").await;
    let mut alice_a = Client::connect(&nodes[0], 1, "alice").await;
    let (_alice_b_sink, alice_b) = Client::connect(&nodes[1], 1, "alice").await.split();
    let mut bob = Client::connect(&nodes[1], 2, "bob").await;
    bob.join("r").await;
    alice_a.join("r").await;
    // Give the membership change a moment to cross NATS (it is not ordered
    // with the join_ack of the other node's connection).
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.send(json!({"type": "message", "room": "r", "content": "hi"}))
        .await;
    alice_b
        .wait_for(
            "bob's message on alice's other node",
            Duration::from_secs(10),
            |l| l.messages.iter().any(|m| m.content == "hi"),
        )
        .await;
    alice_a.send(json!({"type": "leave", "room": "r"})).await;
    // (Bob's "hi" may come first on this connection.)
    loop {
        let v = alice_a.recv().await;
        if v["type"] == "leave_ack" {
            break;
        }
        assert_eq!(v["type"], "message", "{v}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.send(json!({"type": "message", "room": "r", "content": "bye"}))
        .await;
    // Bob's own echo marks the message as delivered on node b.
    loop {
        let v = bob.recv().await;
        if v["type"] == "message" && v["data"]["content"] == "bye" {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !alice_b
            .snapshot()
            .messages
            .iter()
            .any(|m| m.content == "bye"),
        "left on node a: no more room messages on node b"
    );
    finish(nodes, db).await;
}

/// Frames of `kind` about `user` that arrive within `window`.
async fn notices_within(
    ws: &mut crate::harness::Ws,
    kind: &str,
    user: i64,
    window: Duration,
) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if v["type"] == kind && v["data"]["user"].as_i64() == Some(user) {
                seen.push(v);
            }
        }
    }
    seen
}

/// A user connected to two nodes is online once, and offline only when its
/// last connection anywhere closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_on_two_nodes_goes_offline_only_when_both_are_gone() {
    let _serial = SERIAL.lock().await;
    let (db, nodes, mut bob) = alice_away_bob_watching().await;
    let mut alice_a = Client::connect(&nodes[0], 1, "alice").await;
    let online = next_notice(&mut bob.ws, "presence", 1).await;
    assert_eq!(online["data"]["status"], "online", "{online}");
    let mut alice_b = Client::connect(&nodes[1], 1, "alice").await;
    let again = notices_within(&mut bob.ws, "presence", 1, Duration::from_millis(1000)).await;
    assert!(again.is_empty(), "online once, not per node: {again:?}");
    alice_a.ws.close(None).await.expect("close");
    let early = notices_within(&mut bob.ws, "presence", 1, Duration::from_millis(1000)).await;
    assert!(early.is_empty(), "still connected on node b: {early:?}");
    alice_b.ws.close(None).await.expect("close");
    let offline = next_notice(&mut bob.ws, "presence", 1).await;
    assert_eq!(offline["data"]["status"], "offline", "{offline}");
    finish(nodes, db).await;
}

/// Two first connections of one user opening at once on two nodes: each
/// node sees the other, and exactly one of them announces "online" (the
/// node where the user came online first, ties to the smaller node id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_connections_on_two_nodes_announce_online_once() {
    let _serial = SERIAL.lock().await;
    let (db, nodes, mut bob) = alice_away_bob_watching().await;
    for round in 0..3 {
        let (alice_a, alice_b) = tokio::join!(
            Client::connect(&nodes[0], 1, "alice"),
            Client::connect(&nodes[1], 1, "alice")
        );
        let seen = notices_within(&mut bob.ws, "presence", 1, Duration::from_millis(1200)).await;
        let statuses: Vec<&Value> = seen.iter().map(|v| &v["data"]["status"]).collect();
        assert_eq!(statuses, [&json!("online")], "round {round}: {seen:?}");
        let (mut alice_a, mut alice_b) = (alice_a, alice_b);
        let _ = tokio::join!(alice_a.ws.close(None), alice_b.ws.close(None));
        let gone = notices_within(&mut bob.ws, "presence", 1, Duration::from_millis(1200)).await;
        assert!(
            gone.iter().any(|v| v["data"]["status"] == "offline"),
            "round {round}: {gone:?}"
        );
    }
    finish(nodes, db).await;
}
