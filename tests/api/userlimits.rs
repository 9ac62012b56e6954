//! Limits per user across all of a user's connections (issue 13): how many
//! connections, how many messages a second, how many rooms created an hour;
//! and the per-connection limiter's reach: control frames count, and a
//! flooder is told why it was cut off (1008).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, Refused, TestServer};

async fn try_connect(server: &TestServer, user: i64, name: &str) -> Result<Client, Refused> {
    let url = format!("{}?token={}", server.url(), server.token(user, name));
    Client::connect_url(&url, None).await
}

/// Retries for up to 5 s: a closed connection is released when the server
/// has seen it close, a moment after the client closed it.
async fn connect_within(server: &TestServer, user: i64, name: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_connect(server, user, name).await {
            Ok(c) => return c,
            Err(r) if Instant::now() < deadline => {
                assert_eq!(r.status, 429, "{r:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(r) => panic!("still refused after 5 s: {r:?}"),
        }
    }
}

/// Connects until a connection lands on `shard`, closing the others; a
/// 429 while a closed one is still counted is waited out.
async fn connect_on_shard_within(
    server: &TestServer,
    user: i64,
    name: &str,
    shard: usize,
) -> Client {
    for _ in 0..200 {
        match try_connect(server, user, name).await {
            Ok(c) if c.shard == shard => return c,
            Ok(c) => c.close().await,
            Err(r) => {
                assert_eq!(r.status, 429, "{r:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    panic!("no connection landed on shard {shard}");
}

#[tokio::test]
async fn a_users_connection_past_the_limit_gets_429_while_another_user_connects() {
    let server = TestServer::start_with(|c| c.max_connections_per_user = 4).await;
    let mut mine = Vec::new();
    // Two on each shard: the count is one for the whole process.
    for shard in [0, 0, 1, 1] {
        mine.push(connect_on_shard_within(&server, 1, "a", shard).await);
    }
    let refused = try_connect(&server, 1, "a").await.expect_err("refused");
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(
        refused.body.contains("too many connections for this user"),
        "{refused:?}"
    );
    // Whichever shard the next ones land on, they are refused.
    for _ in 0..6 {
        let r = try_connect(&server, 1, "a").await.expect_err("refused");
        assert_eq!(r.status, 429);
    }
    // Another user is not affected.
    let mut b = server.connect(2, "b").await;
    b.send(json!({"type": "rooms", "ref": 1})).await;
    b.recv_type("rooms").await;
    // The first connections still work.
    for c in &mut mine {
        c.send(json!({"type": "rooms"})).await;
        c.recv_type("rooms").await;
    }
}

#[tokio::test]
async fn the_connection_count_is_released_on_close_and_on_a_failed_handshake() {
    let server = TestServer::start_with(|c| c.max_connections_per_user = 2).await;
    let _b = server.connect(2, "b").await;
    let first = server.connect(1, "a").await;
    let _second = server.connect(1, "a").await;
    assert_eq!(try_connect(&server, 1, "a").await.unwrap_err().status, 429);
    first.close().await;
    let third = connect_within(&server, 1, "a").await;
    assert_eq!(try_connect(&server, 1, "a").await.unwrap_err().status, 429);
    third.close().await;
    // Handshakes refused after the count was taken (the username belongs
    // to user 2: 409) give their place back.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut conflicts = 0;
    while conflicts < 5 {
        let r = try_connect(&server, 1, "b").await.unwrap_err();
        match r.status {
            409 => conflicts += 1,
            429 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("{r:?}"),
        }
    }
    let mut again = connect_within(&server, 1, "a").await;
    again.send(json!({"type": "rooms"})).await;
    again.recv_type("rooms").await;
}

/// Sends `n` messages tagged `{tag}-{i}` and returns, once every one of them
/// is answered (own copy or error), how many were accepted; every error must
/// be "rate limited" and carry its request's ref.
async fn send_and_count(c: &mut Client, tag: &str, n: usize) -> usize {
    for i in 0..n {
        c.send(
            json!({"type": "message", "room": "r", "content": "x", "ref": format!("{tag}-{i}")}),
        )
        .await;
    }
    let mut answered = HashSet::new();
    let mut accepted = 0;
    while answered.len() < n {
        let v: Value = c.recv().await;
        let Some(r) = v["ref"].as_str().filter(|r| r.starts_with(tag)) else {
            continue; // the other connection's messages
        };
        assert!(answered.insert(r.to_owned()), "two answers to {r}: {v}");
        match v["type"].as_str() {
            Some("message") => accepted += 1,
            Some("error") => assert_eq!(v["data"]["message"], "rate limited", "{v}"),
            _ => panic!("unexpected {v}"),
        }
    }
    accepted
}

#[tokio::test]
async fn the_message_rate_is_per_user_across_connections_on_both_shards() {
    let server = TestServer::start_with(|c| {
        c.user_message_rate = 5;
        c.user_message_burst = 20;
    })
    .await;
    server.create_room("r").await;
    let mut s0 = server.connect_on_shard(1, "a", 0).await;
    let mut s1 = server.connect_on_shard(1, "a", 1).await;
    let mut other = server.connect(2, "b").await;
    for c in [&mut s0, &mut s1, &mut other] {
        c.join("r").await;
    }
    let started = Instant::now();
    // 30 from each connection: each alone is within its own connection's
    // limit (1000/s, burst 2000), together they are over the user's burst.
    let (a0, a1) = tokio::join!(
        send_and_count(&mut s0, "s0", 30),
        send_and_count(&mut s1, "s1", 30)
    );
    let elapsed = started.elapsed().as_secs_f64();
    let bound = 20 + (5.0 * elapsed).ceil() as usize;
    assert!(
        a0 + a1 <= bound,
        "accepted {a0} + {a1}, at most {bound} allowed in {elapsed:.2} s"
    );
    assert!(a0 + a1 >= 20, "the burst is allowed: {a0} + {a1}");
    let stored = server
        .count("SELECT count(*) FROM messages WHERE from_user = 1")
        .await;
    assert_eq!(stored as usize, a0 + a1);
    // Another user has its own bucket.
    assert_eq!(send_and_count(&mut other, "o", 10).await, 10);
}

#[tokio::test]
async fn create_room_then_leave_stops_at_the_hourly_cap_which_survives_a_restart() {
    let mut server = TestServer::start_with(|c| c.max_rooms_created_per_hour = 3).await;
    let mut a = server.connect(1, "a").await;
    let mut refused_at = None;
    for i in 0..10 {
        let room = format!("squat-{i}");
        a.send(json!({"type": "create_room", "room": room, "ref": i}))
            .await;
        let v = a.recv().await;
        assert_eq!(v["ref"], i, "{v}");
        if v["type"] == "error" {
            assert_eq!(
                v["data"]["message"], "too many rooms created; try again later",
                "{v}"
            );
            refused_at = Some(i);
            break;
        }
        assert_eq!(v["type"], "room_created", "{v}");
        a.send(json!({"type": "leave", "room": room})).await;
        a.recv_type("leave_ack").await;
    }
    assert_eq!(refused_at, Some(3));
    assert_eq!(
        server
            .count("SELECT count(*) FROM rooms WHERE name LIKE 'squat-%'")
            .await,
        3
    );
    a.close().await;

    server.restart().await;
    let mut a = server.connect(1, "a").await;
    a.send(json!({"type": "create_room", "room": "after-restart", "ref": "x"}))
        .await;
    let v = a.recv().await;
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["ref"], "x");
    assert_eq!(
        v["data"]["message"],
        "too many rooms created; try again later"
    );
    // Another user still creates rooms.
    let mut b = server.connect(2, "b").await;
    b.send(json!({"type": "create_room", "room": "b-room"}))
        .await;
    b.recv_type("room_created").await;
}

/// Reads until the server's close frame; its code (None: the stream ended
/// without one, which a client sees as 1006).
async fn read_close_code(
    rx: &mut futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
    within: Duration,
) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.next()).await {
            Err(_) => panic!("not closed within {within:?}"),
            Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(None) | Ok(Some(Err(_))) => return None,
        }
    }
}

#[tokio::test]
async fn a_ping_flood_is_closed_with_1008() {
    let server = TestServer::start_with(|c| {
        c.rate_limit = 100;
        c.rate_burst = 100;
        c.flood_close_secs = 1;
    })
    .await;
    let a = server.connect(1, "a").await;
    let (mut tx, mut rx) = a.ws.split();
    let flood = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if tx.send(Message::Ping(Default::default())).await.is_err() {
                break;
            }
        }
    });
    let code = read_close_code(&mut rx, Duration::from_secs(15)).await;
    flood.abort();
    assert_eq!(code, Some(1008));
}

#[tokio::test]
async fn a_text_flood_that_reads_nothing_gets_the_1008_close_frame_five_times_out_of_five() {
    let server = TestServer::start_with(|c| {
        c.rate_limit = 100;
        c.rate_burst = 100;
        c.flood_close_secs = 1;
    })
    .await;
    for run in 0..5 {
        let a = server.connect(1, "a").await;
        let (mut tx, mut rx) = a.ws.split();
        // As fast as the socket takes them, reading nothing, until a send
        // fails or blocks for a second (the server stopped reading), or 10 s.
        let until = Instant::now() + Duration::from_secs(10);
        let mut sent = 0u64;
        while Instant::now() < until {
            let send = tx.send(Message::text(r#"{"type":"nope","ref":1}"#));
            match tokio::time::timeout(Duration::from_secs(1), send).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        let code = read_close_code(&mut rx, Duration::from_secs(15)).await;
        assert_eq!(code, Some(1008), "run {run}: {sent} frames sent");
    }
}
