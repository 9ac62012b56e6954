//! Delivery guarantees beyond the design document: `ref` correlation,
//! idempotent sends with `client_id`, gap-free recovery with `join` +
//! `since` and `dm_sync`, and history paging with `before`/`after`.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Client, TestServer};

async fn send_room(c: &mut Client, room: &str, content: &str) -> i64 {
    c.send(json!({"type": "message", "room": room, "content": content}))
        .await;
    loop {
        let m = c.recv_type("message").await;
        if m["data"]["content"] == content {
            return m["data"]["id"].as_i64().unwrap();
        }
    }
}

async fn send_dm(c: &mut Client, to: i64, content: &str) -> i64 {
    c.send(json!({"type": "dm", "to": to, "content": content}))
        .await;
    loop {
        let m = c.recv_type("dm").await;
        if m["data"]["content"] == content {
            return m["data"]["id"].as_i64().unwrap();
        }
    }
}

fn ids(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .map(|m| m["data"]["id"].as_i64().unwrap())
        .collect()
}

/// Receives frames until one satisfies `last`; returns them all (it included).
async fn recv_until(c: &mut Client, last: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let v = c.recv().await;
        let done = last(&v);
        got.push(v);
        if done {
            return got;
        }
    }
}

async fn room_ids_after(server: &TestServer, room: &str, after: i64) -> Vec<i64> {
    let db = server.db().await;
    db.query(
        "SELECT id FROM messages WHERE room = $1 AND id > $2 ORDER BY id",
        &[&room, &after],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn refs_come_back_on_direct_replies_only() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    a.send(json!({"type": "join", "room": "r", "ref": "j1"}))
        .await;
    let ack = a.recv_type("join_ack").await;
    assert_eq!(ack["ref"], "j1");
    assert_eq!(
        ack["data"],
        json!({"room": "r", "status": "ok", "online": [1]})
    );
    b.join("r").await;

    a.send(json!({"type": "message", "room": "r", "content": "hi", "ref": 42}))
        .await;
    let own = a.recv_type("message").await;
    assert_eq!(own["ref"], 42, "{own}");
    let theirs = b.recv_type("message").await;
    assert!(theirs.get("ref").is_none(), "{theirs}");
    assert_eq!(own["data"], theirs["data"], "same message, same payload");

    a.send(json!({"type": "dm", "to": 2, "content": "psst", "ref": "d"}))
        .await;
    assert_eq!(a.recv_type("dm").await["ref"], "d");
    assert!(b.recv_type("dm").await.get("ref").is_none());

    a.send(json!({"type": "room_history", "room": "r", "ref": "h"}))
        .await;
    assert_eq!(a.recv_type("room_history").await["ref"], "h");
    a.send(json!({"type": "dm_history", "with": 2, "ref": -3}))
        .await;
    assert_eq!(a.recv_type("dm_history").await["ref"], -3);
    a.send(json!({"type": "rooms", "ref": "rs"})).await;
    assert_eq!(a.recv_type("rooms").await["ref"], "rs");

    // Errors carry the ref of the request that caused them.
    a.send(json!({"type": "nope", "ref": "e1"})).await;
    let e = a.recv_type("error").await;
    assert_eq!(e["ref"], "e1");
    a.send(json!({"type": "message", "room": "elsewhere", "content": "x", "ref": 9}))
        .await;
    assert_eq!(a.recv_type("error").await["ref"], 9);
    a.send(json!({"type": "join", "room": "missing", "ref": "j2"}))
        .await;
    assert_eq!(a.recv_type("error").await["ref"], "j2");
    // A ref that is neither string nor integer is itself the error.
    a.send(json!({"type": "rooms", "ref": 1.5})).await;
    let e = a.recv_type("error").await;
    assert!(e.get("ref").is_none());
    assert!(
        e["data"]["message"].as_str().unwrap().contains("ref"),
        "{e}"
    );
    // Old clients (no ref) see no ref anywhere.
    a.send(json!({"type": "message", "room": "r", "content": "plain"}))
        .await;
    assert!(a.recv_type("message").await.get("ref").is_none());
}

#[tokio::test]
async fn retried_client_id_returns_the_original_and_delivers_nothing_new() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    a.join("r").await;
    b.join("r").await;

    let send = json!({"type": "message", "room": "r", "content": "once", "client_id": "c-1"});
    a.send(send.clone()).await;
    let first = a.recv_type("message").await;
    assert_eq!(b.recv_type("message").await["data"], first["data"]);
    // The acknowledgement is "lost": the client reconnects (elsewhere) and retries.
    a.close().await;
    let mut a2 = server.connect_on_shard(1, "a", 1).await;
    let mut retry = send.clone();
    retry["content"] = json!("once (retried)");
    retry["ref"] = json!("again");
    a2.send(retry).await;
    let echo = a2.recv_type("message").await;
    assert_eq!(echo["ref"], "again");
    assert_eq!(
        echo["data"], first["data"],
        "same id, timestamp and content"
    );
    // Nobody got a second copy: the next thing b sees is the marker.
    let marker = send_room(&mut a2, "r", "marker").await;
    let next = b.recv_type("message").await;
    assert_eq!(next["data"]["id"], marker, "{next}");

    // The same for a DM, and for two sends racing in one burst.
    let dm = json!({"type": "dm", "to": 2, "content": "dm once", "client_id": "d-1"});
    a2.send(dm.clone()).await;
    a2.send(dm.clone()).await;
    let d1 = a2.recv_type("dm").await;
    let d2 = a2.recv_type("dm").await;
    assert_eq!(d1["data"], d2["data"]);
    assert_eq!(b.recv_type("dm").await["data"], d1["data"]);
    a2.send(dm).await;
    assert_eq!(a2.recv_type("dm").await["data"], d1["data"]);
    let marker = send_dm(&mut a2, 2, "dm marker").await;
    assert_eq!(b.recv_type("dm").await["data"]["id"], marker);
    b.expect_nothing(Duration::from_millis(200)).await;

    // The key is per sender: another user may use the same client_id.
    b.send(json!({"type": "message", "room": "r", "content": "b's", "client_id": "c-1"}))
        .await;
    let theirs = b.recv_type("message").await;
    assert_ne!(theirs["data"]["id"], first["data"]["id"]);

    let db = server.db().await;
    let rows: Vec<(i64, String)> = db
        .query(
            "SELECT from_user, client_id FROM messages WHERE client_id IS NOT NULL ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (1, "c-1".to_string()),
            (1, "d-1".to_string()),
            (2, "c-1".to_string())
        ]
    );
}

/// The issue's scenario: a member disconnects, misses 50 messages sent on
/// both shards, and rejoins with `since` while a sender keeps sending. It
/// gets every message after `since` exactly once.
#[tokio::test]
async fn rejoin_with_since_replays_exactly_what_was_missed_under_traffic() {
    rejoin_under_traffic(TestServer::start().await).await;
}

/// The same with replays cut into pages of 7 messages: the replay of 50
/// spans 8 pages, written one after the other while live messages keep
/// coming, and still arrives complete, in id order, exactly once.
#[tokio::test]
async fn a_replay_of_many_pages_is_complete_ordered_and_once_under_traffic() {
    rejoin_under_traffic(
        TestServer::start_with(|c| {
            c.replay_page = 7;
            c.replay_page_bytes = 400;
        })
        .await,
    )
    .await;
}

async fn rejoin_under_traffic(server: TestServer) {
    server.create_room("r").await;
    let mut s0 = server.connect_on_shard(1, "s0", 0).await;
    let mut s1 = server.connect_on_shard(2, "s1", 1).await;
    let mut reader = server.connect(10, "reader").await;
    for c in [&mut s0, &mut s1, &mut reader] {
        c.join("r").await;
    }
    let seen = send_room(&mut s0, "r", "before").await;
    assert_eq!(reader.recv_type("message").await["data"]["id"], seen);
    reader.close().await;

    let mut missed = Vec::new();
    for i in 0..25 {
        missed.push(send_room(&mut s0, "r", &format!("away-0-{i}")).await);
        missed.push(send_room(&mut s1, "r", &format!("away-1-{i}")).await);
    }
    // A sender keeps going during the rejoin.
    let traffic = tokio::spawn(async move {
        for i in 0..150 {
            send_room(&mut s0, "r", &format!("live-{i}")).await;
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        send_room(&mut s0, "r", "end").await;
        s0
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut reader = server.connect(10, "reader").await;
    reader
        .send(json!({"type": "join", "room": "r", "since": seen}))
        .await;
    let frames = recv_until(&mut reader, |v| v["data"]["content"] == "end").await;
    traffic.await.unwrap();

    let ack_at = frames
        .iter()
        .position(|v| v["type"] == "join_ack")
        .expect("join_ack");
    assert_eq!(frames[ack_at]["data"]["recovered"], true);
    let messages: Vec<Value> = frames
        .iter()
        .filter(|v| v["type"] == "message")
        .cloned()
        .collect();
    let got = ids(&messages);
    let unique: HashSet<i64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no duplicate: {got:?}");
    let expected = room_ids_after(&server, "r", seen).await;
    assert_eq!(
        got.iter().copied().collect::<BTreeSet<_>>(),
        expected.iter().copied().collect::<BTreeSet<_>>(),
        "no gap"
    );
    for id in &missed {
        assert!(unique.contains(id), "missed message {id} recovered");
    }
    // Live before the ack, then the replay (older than all of it) in
    // order, then live again in order.
    let before_ack = ids(&frames[..ack_at]);
    let after_ack = ids(&frames[ack_at + 1..]
        .iter()
        .filter(|v| v["type"] == "message")
        .cloned()
        .collect::<Vec<_>>());
    assert!(before_ack.windows(2).all(|w| w[0] < w[1]), "{before_ack:?}");
    let first_live = before_ack.first().copied().unwrap_or(i64::MAX);
    let (replay, live): (Vec<i64>, Vec<i64>) = after_ack.iter().partition(|&&id| id < first_live);
    assert!(replay.windows(2).all(|w| w[0] < w[1]), "{replay:?}");
    assert!(live.windows(2).all(|w| w[0] < w[1]), "{live:?}");
    assert_eq!(
        after_ack[..replay.len()],
        replay[..],
        "the replay comes first"
    );
}

#[tokio::test]
async fn join_since_on_a_new_membership_and_past_the_recovery_limit() {
    let server = TestServer::start_with(|c| c.recovery_max = 5).await;
    server.create_room("r").await;
    let mut s = server.connect(1, "s").await;
    s.join("r").await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(send_room(&mut s, "r", &format!("m{i}")).await);
    }
    // Not yet a member: join with since 0 gets all 5 (exactly the limit).
    let mut late = server.connect(2, "late").await;
    late.send(json!({"type": "join", "room": "r", "since": 0, "ref": 1}))
        .await;
    let ack = late.recv_type("join_ack").await;
    assert_eq!(ack["data"]["recovered"], true);
    assert_eq!(ack["ref"], 1);
    let mut replayed = Vec::new();
    for _ in 0..5 {
        replayed.push(
            late.recv_type("message").await["data"]["id"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(replayed, sent);
    late.expect_nothing(Duration::from_millis(200)).await;

    // One more than the limit: nothing replayed, live goes on.
    sent.push(send_room(&mut s, "r", "m5").await);
    late.recv_type("message").await;
    late.send(json!({"type": "join", "room": "r", "since": 0}))
        .await;
    let ack = late.recv_type("join_ack").await;
    assert_eq!(ack["data"]["recovered"], false);
    let live = send_room(&mut s, "r", "after").await;
    assert_eq!(late.recv_type("message").await["data"]["id"], live);

    // A since at the newest id recovers nothing, successfully.
    late.send(json!({"type": "join", "room": "r", "since": live}))
        .await;
    assert_eq!(late.recv_type("join_ack").await["data"]["recovered"], true);
    late.expect_nothing(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn dm_sync_replays_missed_dms_in_both_directions_once() {
    dm_sync_under_traffic(TestServer::start().await).await;
}

/// `dm_sync` with pages of 4 DMs: the same guarantee.
#[tokio::test]
async fn a_dm_sync_of_many_pages_is_complete_and_once() {
    dm_sync_under_traffic(TestServer::start_with(|c| c.replay_page = 4).await).await;
}

async fn dm_sync_under_traffic(server: TestServer) {
    let mut s0 = server.connect_on_shard(1, "s0", 0).await;
    let mut s1 = server.connect_on_shard(2, "s1", 1).await;
    let mut me = server.connect(10, "me").await;
    let seen = send_dm(&mut s0, 10, "before").await;
    assert_eq!(me.recv_type("dm").await["data"]["id"], seen);
    // My own DMs, sent from another connection, count too.
    let mut other_me = server.connect(10, "me").await;
    me.close().await;
    let mut missed = Vec::new();
    for i in 0..10 {
        missed.push(send_dm(&mut s0, 10, &format!("a{i}")).await);
        missed.push(send_dm(&mut s1, 10, &format!("b{i}")).await);
        missed.push(send_dm(&mut other_me, 1, &format!("mine{i}")).await);
    }
    // Noise between other users is not mine.
    send_dm(&mut s0, 2, "not for me").await;
    let traffic = tokio::spawn(async move {
        for i in 0..60 {
            send_dm(&mut s1, 10, &format!("live{i}")).await;
        }
        send_dm(&mut s1, 10, "end").await;
    });
    let mut me = server.connect(10, "me").await;
    me.send(json!({"type": "dm_sync", "since": seen, "ref": "sync"}))
        .await;
    let frames = recv_until(&mut me, |v| v["data"]["content"] == "end").await;
    traffic.await.unwrap();
    let ack = frames
        .iter()
        .find(|v| v["type"] == "dm_sync_ack")
        .expect("ack");
    assert_eq!(ack["data"]["recovered"], true);
    assert_eq!(ack["ref"], "sync");
    let dms: Vec<Value> = frames
        .iter()
        .filter(|v| v["type"] == "dm")
        .cloned()
        .collect();
    let got = ids(&dms);
    let unique: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no duplicate");
    let db = server.db().await;
    let expected: BTreeSet<i64> = db
        .query(
            "SELECT id FROM messages WHERE (to_user = 10 OR from_user = 10) AND room IS NULL AND id > $1",
            &[&seen],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(unique, expected, "no gap");
    assert!(missed.iter().all(|id| unique.contains(id)));
    assert!(dms.iter().all(|d| d["data"]["content"] != "not for me"));
}

#[tokio::test]
async fn history_pages_backwards_and_forwards() {
    let server = TestServer::start_with(|c| c.history_max = 4).await;
    server.create_room("r").await;
    let mut a = server.connect(1, "a").await;
    let _b = server.connect(2, "b").await;
    a.join("r").await;
    let mut sent = Vec::new();
    let mut dms = Vec::new();
    for i in 0..10 {
        sent.push(send_room(&mut a, "r", &format!("m{i}")).await);
        dms.push(send_dm(&mut a, 2, &format!("d{i}")).await);
    }
    let page = |v: Value| -> Vec<i64> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect()
    };
    a.send(json!({"type": "room_history", "room": "r", "limit": 3}))
        .await;
    assert_eq!(page(a.recv_type("room_history").await), sent[7..]);
    a.send(json!({"type": "room_history", "room": "r", "limit": 3, "before": sent[7]}))
        .await;
    assert_eq!(page(a.recv_type("room_history").await), sent[4..7]);
    a.send(json!({"type": "room_history", "room": "r", "limit": 3, "after": sent[1]}))
        .await;
    assert_eq!(page(a.recv_type("room_history").await), sent[2..5]);
    a.send(json!({"type": "room_history", "room": "r", "after": sent[2], "before": sent[5]}))
        .await;
    assert_eq!(page(a.recv_type("room_history").await), sent[3..5]);
    // Still capped.
    a.send(json!({"type": "room_history", "room": "r", "limit": 100, "after": 0}))
        .await;
    assert_eq!(page(a.recv_type("room_history").await), sent[..4]);
    a.send(json!({"type": "dm_history", "with": 2, "limit": 2, "before": dms[5]}))
        .await;
    assert_eq!(page(a.recv_type("dm_history").await), dms[3..5]);
    a.send(json!({"type": "dm_history", "with": 2, "limit": 2, "after": dms[5]}))
        .await;
    assert_eq!(page(a.recv_type("dm_history").await), dms[6..8]);
    a.send(json!({"type": "room_history", "room": "r", "before": -1}))
        .await;
    assert!(a.recv_type("error").await["data"]["message"]
        .as_str()
        .unwrap()
        .contains("before"));
}
