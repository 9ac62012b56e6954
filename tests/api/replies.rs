//! Replies in bounded memory (issue 13, items 2 and 6): replays and
//! histories are written page by page under a server-wide budget of reply
//! bytes in flight, and a large reply to a client's own request never makes
//! it a slow consumer.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, TestServer};

/// Sends a message and waits for its echo; returns its id.
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

/// `/metrics`, as text.
async fn metrics(server: &TestServer) -> String {
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("the server closes after its response")
        .unwrap();
    String::from_utf8(raw).unwrap()
}

/// The value of an unlabelled metric (None: not exported).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Content of `chars` characters of 4 bytes each.
fn heavy(chars: usize, tag: usize) -> String {
    let mut s = format!("{tag:06}");
    s.extend(std::iter::repeat_n('😀', chars - 6));
    s
}

/// A history page far above the 4 MiB outbox bound: 200 messages of 4,096
/// U+0001 characters, each escaped to 6 bytes (a frame of about 4.9 MB).
/// Before: the reader was closed with 1008 "slow consumer" although it read
/// at full speed.
#[tokio::test]
async fn a_history_larger_than_the_outbox_reaches_a_reader_that_keeps_up() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut writer = server.connect(1, "writer").await;
    writer.join("r").await;
    let content = "\u{1}".repeat(4096);
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(send_room(&mut writer, "r", &content).await);
    }
    let mut reader = server.connect(2, "reader").await;
    reader.join("r").await;
    reader
        .send(json!({"type": "room_history", "room": "r", "limit": 200, "ref": "h"}))
        .await;
    let h = reader.recv_type("room_history").await;
    assert_eq!(h["ref"], "h");
    let entries = h["data"].as_array().expect("entries");
    let got: Vec<i64> = entries.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(got, ids, "the whole page, in order");
    assert!(entries.iter().all(|m| m["content"] == content.as_str()));
    // Still connected, and still served.
    reader.send(json!({"type": "rooms", "ref": 2})).await;
    assert_eq!(reader.recv_type("rooms").await["ref"], 2);
}

/// Heavy `join` + `since: 0` requests from several connections at once,
/// with a budget of about two pages: every request that can wait is
/// served completely, and the bytes in flight (high-water mark recorded by
/// the server) never exceed the budget plus one page.
#[tokio::test]
async fn concurrent_heavy_replays_share_the_budget_and_all_complete() {
    const BUDGET: u64 = 1 << 20;
    const MESSAGES: usize = 60;
    const READERS: i64 = 6;
    let server = TestServer::start_with(|c| {
        c.replay_page = 10;
        c.reply_budget_bytes = BUDGET;
        c.reply_budget_wait_ms = 60_000;
    })
    .await;
    server.create_room("big").await;
    let mut writer = server.connect(1, "writer").await;
    writer.join("big").await;
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        ids.push(send_room(&mut writer, "big", &heavy(4096, i)).await);
    }
    let before = metrics(&server).await;
    assert_eq!(
        metric(&before, "chat_reply_bytes_in_flight_max"),
        Some(0.0),
        "the gauge is exported, nothing in flight yet"
    );

    let mut readers = Vec::new();
    for u in 0..READERS {
        readers.push(server.connect(100 + u, &format!("r{u}")).await);
    }
    let tasks: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                c.send(json!({"type": "join", "room": "big", "since": 0, "ref": i}))
                    .await;
                let ack = c.recv_type("join_ack").await;
                assert_eq!(ack["ref"], i, "{ack}");
                assert_eq!(ack["data"]["recovered"], true, "{ack}");
                let mut got = Vec::new();
                for _ in 0..MESSAGES {
                    let m = c.recv_type("message").await;
                    got.push(m["data"]["id"].as_i64().unwrap());
                }
                got
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), ids, "complete, in order, once");
    }

    let after = metrics(&server).await;
    let high = metric(&after, "chat_reply_bytes_in_flight_max").expect("gauge");
    // One page: 10 messages of 16 KiB, charged twice with overheads, plus
    // one message escaped at worst: well under 512 KiB.
    let page = 512.0 * 1024.0;
    assert!(high > 0.0, "pages were counted");
    assert!(
        high <= BUDGET as f64 + page,
        "bytes in flight peaked at {high}, budget {BUDGET}"
    );
    assert_eq!(metric(&after, "chat_reply_budget_refused_total"), Some(0.0));
    // Every lease is given back (the last page's once its flush returns,
    // which may be a moment after the client read it).
    let mut in_flight = metric(&after, "chat_reply_bytes_in_flight");
    for _ in 0..50 {
        if in_flight == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        in_flight = metric(&metrics(&server).await, "chat_reply_bytes_in_flight");
    }
    assert_eq!(in_flight, Some(0.0));
}

/// A client with a tiny receive buffer that never reads after its request:
/// the server's write of its reply blocks, holding that reply's page.
async fn stalled_reader(
    server: &TestServer,
    user: i64,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 * 1024).unwrap();
    let stream = socket.connect(server.addr()).await.unwrap();
    let url = format!("{}?token={}", server.url(), server.token(user, "stalled"));
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
    ws
}

/// While the whole budget is held by a reply its client does not read, a
/// replay request waits `--reply-budget-wait-ms`, then gets `server busy`
/// with its `ref`; its connection keeps working. Before: no budget, the
/// replay was built whole and sent.
#[tokio::test]
async fn a_request_that_waits_past_the_bound_is_refused_with_its_ref() {
    const MESSAGES: usize = 150;
    let server = TestServer::start_with(|c| {
        // The stalled reply is one page, larger than the whole budget.
        c.replay_page = 1000;
        c.replay_page_bytes = 64 << 20;
        c.reply_budget_bytes = 64 * 1024;
        c.reply_budget_wait_ms = 300;
        c.write_timeout_ms = 30_000;
        // Larger messages: the stalled reply must outgrow what the kernel
        // buffers on loopback (up to 4 MiB of send buffer).
        c.max_content = 12_000;
        c.max_message_bytes = 128 * 1024;
    })
    .await;
    server.create_room("big").await;
    let mut writer = server.connect(1, "writer").await;
    writer.join("big").await;
    for i in 0..MESSAGES {
        send_room(&mut writer, "big", &heavy(12_000, i)).await;
    }
    let mut stalled = stalled_reader(&server, 50).await;
    stalled
        .send(Message::text(
            json!({"type": "join", "room": "big", "since": 0}).to_string(),
        ))
        .await
        .unwrap();
    // Its page (about 7 MB) is now stuck in a socket nobody reads.
    let mut held = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if metric(&metrics(&server).await, "chat_reply_bytes_in_flight").unwrap_or(0.0) > 0.0 {
            held = true;
            break;
        }
    }
    assert!(held, "the stalled reply holds its page");

    let mut late = server.connect(2, "late").await;
    late.send(json!({"type": "join", "room": "big", "since": 0, "ref": "busy"}))
        .await;
    let e = late.recv_type("error").await;
    assert_eq!(e["ref"], "busy", "{e}");
    assert_eq!(e["data"]["message"], "server busy: try again", "{e}");
    // The same for a history page.
    late.send(json!({"type": "room_history", "room": "big", "ref": 7}))
        .await;
    let e = late.recv_type("error").await;
    assert_eq!(e["ref"], 7, "{e}");
    assert_eq!(e["data"]["message"], "server busy: try again");
    // Small replies do not need the budget.
    late.send(json!({"type": "rooms", "ref": "still"})).await;
    assert_eq!(late.recv_type("rooms").await["ref"], "still");
    let text = metrics(&server).await;
    assert_eq!(metric(&text, "chat_reply_budget_refused_total"), Some(2.0));

    // Once the stalled client reads, its reply completes and the budget
    // is free again: the refused request succeeds when retried.
    let mut n = 0;
    while n < MESSAGES + 1 {
        match tokio::time::timeout(Duration::from_secs(10), stalled.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => n += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("stalled reader lost its reply: {other:?}"),
        }
    }
    late.send(json!({"type": "join", "room": "big", "since": 0, "ref": "again"}))
        .await;
    let ack = late.recv_type("join_ack").await;
    assert_eq!(ack["ref"], "again");
    assert_eq!(ack["data"]["recovered"], true);
    for _ in 0..MESSAGES {
        late.recv_type("message").await;
    }
}

/// Histories cut into many pages (and fragments) are the same single frame
/// as before: entries in order, content intact, for rooms and DMs.
#[tokio::test]
async fn a_history_of_many_pages_is_one_frame_in_order() {
    let server = TestServer::start_with(|c| {
        c.replay_page = 3;
        c.replay_page_bytes = 50_000;
    })
    .await;
    server.create_room("r").await;
    let mut a = server.connect(1, "a").await;
    let mut b = server.connect(2, "b").await;
    a.join("r").await;
    let mut room = Vec::new();
    let mut dms = Vec::new();
    for i in 0..20 {
        // Entries of up to 24 KiB once escaped: larger than one fragment.
        let content = match i % 3 {
            0 => format!("m{i} \"quoted\" \\ \n"),
            1 => "\u{1}".repeat(4096),
            _ => heavy(4096, i),
        };
        room.push((send_room(&mut a, "r", &content).await, content.clone()));
        a.send(json!({"type": "dm", "to": 2, "content": content}))
            .await;
        let d = a.recv_type("dm").await;
        b.recv_type("dm").await;
        dms.push((d["data"]["id"].as_i64().unwrap(), content));
    }
    let entries = |v: &Value| -> Vec<(i64, String)> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["id"].as_i64().unwrap(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    a.send(json!({"type": "room_history", "room": "r", "limit": 100, "ref": 1}))
        .await;
    let h = a.recv_type("room_history").await;
    assert_eq!(h["ref"], 1);
    assert_eq!(entries(&h), room);
    a.send(json!({"type": "room_history", "room": "r", "limit": 7, "before": room[10].0}))
        .await;
    assert_eq!(entries(&a.recv_type("room_history").await), room[3..10]);
    b.send(json!({"type": "dm_history", "with": 1, "limit": 11, "after": dms[2].0}))
        .await;
    assert_eq!(entries(&b.recv_type("dm_history").await), dms[3..14]);
    a.send(json!({"type": "room_history", "room": "r", "after": room[19].0}))
        .await;
    assert_eq!(
        a.recv_type("room_history").await["data"],
        json!([]),
        "an empty history"
    );
    // Nothing else arrived between or after them.
    a.expect_nothing(Duration::from_millis(200)).await;
}
