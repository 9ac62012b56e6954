//! Presence (`online` in `join_ack`, `presence` events), `typing` relays and
//! `refresh` of a live connection's token.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{Client, TestServer, SECRET};

/// Next frame of `kind`, skipping others (presence may interleave).
async fn recv_kind(c: &mut Client, kind: &str) -> Value {
    loop {
        let v = c.recv_any().await;
        if v["type"] == kind {
            return v;
        }
    }
}

#[tokio::test]
async fn join_ack_lists_online_members_and_presence_follows_first_and_last_connection() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    let mut c = server.connect(3, "c").await;
    a.join("r").await;
    b.join("r").await;
    c.join("r").await;
    c.close().await;
    // c went offline: a and b (on both shards) are told.
    for m in [&mut a, &mut b] {
        let p = recv_kind(m, "presence").await;
        assert_eq!(
            p["data"],
            json!({"room": "r", "user": 3, "username": "c", "status": "offline"})
        );
    }
    // A fresh join_ack lists who is online: members with a connection.
    let mut d = server.connect(4, "d").await;
    d.send(json!({"type": "join", "room": "r"})).await;
    let ack = d.recv_type("join_ack").await;
    assert_eq!(ack["data"]["online"], json!([1, 2, 4]));

    // c's first connection: "online", once; a second one: nothing.
    // (Plain connects: connect_on_shard's retries would open and close.)
    let c1 = server.connect(3, "c").await;
    for m in [&mut a, &mut b, &mut d] {
        let p = recv_kind(m, "presence").await;
        assert_eq!(p["data"]["user"], 3);
        assert_eq!(p["data"]["status"], "online");
    }
    let c2 = server.connect(3, "c").await;
    c1.close().await;
    // Still online through c2: no event. Then its last connection closes.
    c2.close().await;
    let p = recv_kind(&mut a, "presence").await;
    assert_eq!(p["data"]["status"], "offline", "{p}");
    a.expect_silence(Duration::from_millis(300)).await;
    // Nobody is told about themselves.
    b.send(json!({"type": "rooms"})).await;
    loop {
        let v = b.recv_any().await;
        if v["type"] == "rooms" {
            break;
        }
        assert_ne!(v["data"]["user"], 2, "{v}");
    }
}

#[tokio::test]
async fn big_rooms_get_no_presence() {
    let server = TestServer::start_with(|c| c.presence_max_members = 2).await;
    server.create_room("big").await;
    let mut a = server.connect(1, "a").await;
    let mut b = server.connect(2, "b").await;
    a.join("big").await;
    b.join("big").await;
    let c = server.connect(3, "c").await;
    let mut c = c;
    c.send(json!({"type": "join", "room": "big"})).await;
    let ack = c.recv_type("join_ack").await;
    assert!(ack["data"].get("online").is_none(), "3 members > 2: {ack}");
    c.close().await;
    a.expect_silence(Duration::from_millis(400)).await;
    b.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn typing_is_relayed_to_the_other_members_throttled_and_never_stored() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    let mut b0 = server.connect_on_shard(2, "b", 0).await;
    let mut out = server.connect(3, "out").await;
    a.join("r").await;
    b.join("r").await;
    a.send(json!({"type": "typing", "room": "r"})).await;
    for m in [&mut b, &mut b0] {
        let t = recv_kind(m, "typing").await;
        assert_eq!(
            t["data"],
            json!({"room": "r", "fromUser": 1, "username": "a"})
        );
    }
    // Within 2 s: dropped. The sender never hears its own typing.
    a.send(json!({"type": "typing", "room": "r"})).await;
    a.expect_silence(Duration::from_millis(300)).await;
    b.expect_silence(Duration::from_millis(100)).await;
    out.expect_silence(Duration::from_millis(100)).await;
    // Well past 2 s since the first (accepted) one, even on a busy machine.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    a.send(json!({"type": "typing", "room": "r"})).await;
    assert_eq!(recv_kind(&mut b, "typing").await["data"]["fromUser"], 1);
    out.send(json!({"type": "typing", "room": "r", "ref": 1}))
        .await;
    let e = out.recv_type("error").await;
    assert_eq!(e["ref"], 1);
    let n = server.count("SELECT count(*) FROM messages").await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn refresh_extends_a_live_connection_and_refuses_another_user() {
    let server = TestServer::start().await;
    let brief = chat_server::auth::sign_hs256(SECRET.as_bytes(), 1, "a", 2);
    let mut a = Client::connect_url(&format!("{}?token={brief}", server.url()), None)
        .await
        .unwrap();
    // A bad token is an error; the connection stays.
    a.send(json!({"type": "refresh", "token": "nope", "ref": "x"}))
        .await;
    let e = a.recv_type("error").await;
    assert_eq!(e["ref"], "x");
    assert!(e["data"]["message"]
        .as_str()
        .unwrap()
        .contains("refresh refused"));
    let long = server.token(1, "a");
    a.send(json!({"type": "refresh", "token": long, "ref": 7}))
        .await;
    let ack = a.recv_type("refresh_ack").await;
    assert_eq!(ack["ref"], 7);
    let exp = ack["data"]["exp"].as_i64().unwrap();
    assert!(exp > chrono::Utc::now().timestamp() + 3000, "{ack}");
    // Past the first token's expiry, still open and usable.
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.send(json!({"type": "dm", "to": 1, "content": "still here"}))
        .await;
    assert_eq!(a.recv_type("dm").await["data"]["content"], "still here");

    // Another user's token: error, then close 4001.
    let other = server.token(2, "b");
    a.send(json!({"type": "refresh", "token": other})).await;
    let e = a.recv_type("error").await;
    assert!(e["data"]["message"]
        .as_str()
        .unwrap()
        .contains("another user"));
    let started = Instant::now();
    assert_eq!(a.close_code(Duration::from_secs(5)).await, Some(4001));
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Issue 16: the users a watcher was told came online (`presence` and
/// `presence_batch`), and how many presence frames that took, until `want`
/// users are online in its view (10 s at most per frame).
async fn watch_until_online(
    watcher: &mut Client,
    want: usize,
) -> (std::collections::BTreeSet<i64>, usize) {
    let mut online = std::collections::BTreeSet::new();
    let mut frames = 0;
    while online.len() < want {
        let v = watcher.recv_any().await;
        apply_presence(&v, &mut online, &mut frames);
    }
    (online, frames)
}

/// Applies one presence frame to `online`, counting it in `frames`.
fn apply_presence(v: &Value, online: &mut std::collections::BTreeSet<i64>, frames: &mut usize) {
    match v["type"].as_str() {
        Some("presence") => {
            *frames += 1;
            let user = v["data"]["user"].as_i64().unwrap();
            if v["data"]["status"] == "online" {
                online.insert(user);
            } else {
                online.remove(&user);
            }
        }
        Some("presence_batch") => {
            *frames += 1;
            assert_eq!(v["data"]["room"], "r", "{v}");
            for e in v["data"]["online"].as_array().unwrap() {
                online.insert(e["user"].as_i64().unwrap());
                assert!(e["username"].as_str().unwrap().starts_with('u'), "{v}");
            }
            for e in v["data"]["offline"].as_array().unwrap() {
                online.remove(&e["user"].as_i64().unwrap());
            }
        }
        _ => {}
    }
}

/// Makes users `ids` (named `u<id>`) offline members of `r`, in the
/// database only (so no presence change opens a window before the test).
async fn members_gone_offline(server: &TestServer, ids: std::ops::RangeInclusive<i64>) {
    let db = server.db().await;
    for id in ids {
        db.execute(
            "INSERT INTO users (id, username) VALUES ($1, $2)",
            &[&id, &format!("u{id}")],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO room_members (user_id, room) VALUES ($1, 'r')",
            &[&id],
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_connect_storm_reaches_a_watcher_in_a_few_batches_with_the_exact_online_set() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    members_gone_offline(&server, 1..=50).await;
    let mut w = server.connect(100, "watcher").await;
    w.join("r").await;
    // All 50 members come back at once.
    let storm = futures_util::future::join_all((1..=50).map(|id| {
        let server = &server;
        async move { server.connect(id, &format!("u{id}")).await }
    }))
    .await;
    let (online, frames) = watch_until_online(&mut w, 50).await;
    assert_eq!(online, (1..=50).collect(), "exactly the 50 members");
    // One frame at once, then a batch per window and shard: far fewer
    // than one per arrival.
    assert!(frames <= 12, "{frames} presence frames for 50 arrivals");
    // All of them leave at once: the watcher's view empties, in few frames.
    for c in storm {
        c.close().await;
    }
    let mut online = online;
    let mut frames = 0;
    while !online.is_empty() {
        let v = w.recv_any().await;
        apply_presence(&v, &mut online, &mut frames);
    }
    assert!(frames <= 12, "{frames} presence frames for 50 departures");
}

#[tokio::test]
async fn a_lone_arrival_is_sent_at_once_and_a_come_and_go_within_the_window_nets_out() {
    // A window far longer than the test's wait: only the first change of
    // a quiet room may arrive before it ends. One shard: windows are per
    // shard.
    let server = TestServer::start_with(|c| {
        c.presence_batch_ms = 60_000;
        c.cores = Some(1);
    })
    .await;
    server.create_room("r").await;
    members_gone_offline(&server, 1..=1).await;
    let mut w = server.connect(100, "watcher").await;
    w.join("r").await;
    let _u1 = server.connect(1, "u1").await;
    let p = recv_kind(&mut w, "presence").await;
    assert_eq!(
        p["data"],
        json!({"room": "r", "user": 1, "username": "u1", "status": "online"})
    );
    drop(server);

    // With a short window: 2 comes and goes, 3 arrives, all within the
    // window opened by 1: the watcher hears of 3 alone, as a `presence`.
    let server = TestServer::start_with(|c| {
        c.presence_batch_ms = 3_000;
        c.cores = Some(1);
    })
    .await;
    server.create_room("r").await;
    members_gone_offline(&server, 1..=3).await;
    let mut w = server.connect(100, "watcher").await;
    w.join("r").await;
    let _u1 = server.connect(1, "u1").await;
    let p = recv_kind(&mut w, "presence").await;
    assert_eq!(p["data"]["user"], 1, "{p}");
    server.connect(2, "u2").await.close().await;
    let _u3 = server.connect(3, "u3").await;
    let p = w.recv_any().await;
    assert_eq!(p["type"], "presence", "one change left: plain {p}");
    assert_eq!(
        p["data"],
        json!({"room": "r", "user": 3, "username": "u3", "status": "online"})
    );
    w.expect_silence(Duration::from_millis(300)).await;
}
