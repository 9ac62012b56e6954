//! Limits and their stated answers: message size, invalid UTF-8, rate
//! limiting and flooding, connection ceiling, origins, token size, slow
//! consumers, heartbeats and token expiry.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, TestServer};

/// Reads until the server closes; returns the close code (None: no close frame).

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 1024).await;
    let mut a = server.connect(1, "a").await;
    a.send_raw(Message::text("x".repeat(2000))).await;
    assert_eq!(a.close_code(Duration::from_secs(5)).await, Some(1009));
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = TestServer::start().await;
    let mut a = server.connect(1, "a").await;
    let frame = Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true);
    a.send_raw(Message::Frame(frame)).await;
    assert_eq!(a.close_code(Duration::from_secs(5)).await, Some(1007));
}

#[tokio::test]
async fn over_the_rate_limit_requests_are_refused_and_flooding_closes_with_1008() {
    let server = TestServer::start_with(|c| {
        c.rate_limit = 20;
        c.rate_burst = 5;
        c.flood_close_secs = 2;
    })
    .await;
    server.create_room("r").await;
    let mut a = server.connect(1, "a").await;
    // A burst of 10 joins: 5 allowed, 5 refused.
    for _ in 0..10 {
        a.send(json!({"type": "join", "room": "r"})).await;
    }
    let mut acks = 0;
    let mut limited = 0;
    for _ in 0..10 {
        let v = a.recv().await;
        match v["type"].as_str().unwrap() {
            "join_ack" => acks += 1,
            "error" => {
                assert_eq!(v["data"]["message"], "rate limited");
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((acks, limited), (5, 5));
    // Keep flooding at ~200 requests/s: closed with 1008 after ~2 s.
    let started = Instant::now();
    let (mut tx, mut rx) = a.ws.split();
    let flood = tokio::spawn(async move {
        for _ in 0..2000 {
            if tx
                .send(Message::text(r#"{"type":"join","room":"r"}"#))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
            Err(_) => panic!("not closed"),
            Ok(Some(Ok(Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(_) => break None,
        }
    };
    flood.abort();
    assert_eq!(code, Some(1008));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn past_the_connection_ceiling_handshakes_get_503() {
    let server = TestServer::start_with(|c| {
        c.cores = Some(1);
        c.max_connections_per_shard = 2;
    })
    .await;
    let _a = server.connect(1, "a").await;
    let b = server.connect(2, "b").await;
    let refused = Client::connect_url(
        &format!("{}?token={}", server.url(), server.token(3, "c")),
        None,
    )
    .await
    .expect_err("refused");
    assert_eq!(refused.status, 503);
    assert!(refused.body.contains("server full"));
    // A slot frees up when a connection closes.
    b.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.connect(3, "c").await;
}

#[tokio::test]
async fn origins_and_token_size_are_checked() {
    let server = TestServer::start_with(|c| {
        c.allowed_origins = vec!["https://chat.example".into()];
        c.max_token_bytes = 300;
    })
    .await;
    let url = format!("{}?token={}", server.url(), server.token(1, "a"));
    let with_origin = |origin: &'static str| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = url.as_str().into_client_request().unwrap();
        r.headers_mut().insert("Origin", origin.parse().unwrap());
        r
    };
    let err = tokio_tungstenite::connect_async(with_origin("https://evil.example"))
        .await
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status().as_u16(), 403),
        e => panic!("{e}"),
    }
    tokio_tungstenite::connect_async(with_origin("https://chat.example"))
        .await
        .expect("allowed origin");
    server.connect(2, "no-origin").await;
    let big = format!("{}.{}", server.token(4, "d"), "x".repeat(400));
    let refused = Client::connect_url(&format!("{}?token={big}", server.url()), None)
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("token too large"), "{}", refused.body);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_the_room_is_unaffected() {
    let server = TestServer::start_with(|c| {
        c.outbox_frames = 512;
        c.outbox_bytes = 1 << 20;
        c.rate_limit = 0;
        c.user_message_rate = 0;
    })
    .await;
    server.create_room("busy").await;
    let mut slow = server.connect(1, "slow").await;
    let mut sender = server.connect(2, "sender").await;
    let mut reader = server.connect(3, "reader").await;
    for c in [&mut slow, &mut sender, &mut reader] {
        c.join("busy").await;
    }
    // `slow` never reads from here on. Flood the room with 4 KiB messages;
    // the sender and the reader keep reading.
    let content = "z".repeat(4000);
    let total = 4000;
    let (mut tx, mut rx) = sender.ws.split();
    let echoes = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            match rx.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().starts_with(r#"{"type":"message""#) => {
                    n += 1
                }
                Some(Ok(_)) => {}
                other => panic!("sender lost its connection: {other:?}"),
            }
        }
        n
    });
    let frame = json!({"type": "message", "room": "busy", "content": content}).to_string();
    let send = async {
        for _ in 0..total {
            tx.send(Message::text(frame.clone())).await.unwrap();
        }
    };
    let read = async {
        let mut n = 0;
        while n < total {
            let v = reader.recv().await;
            assert_eq!(v["type"], "message");
            n += 1;
        }
    };
    tokio::join!(send, read);
    assert_eq!(echoes.await.unwrap(), total, "the sender got every echo");
    // The slow client was cut off: after what was buffered, the stream ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut received = 0;
    let mut close = None;
    loop {
        match tokio::time::timeout_at(deadline, slow.ws.next()).await {
            Err(_) => panic!("slow consumer still connected after {received} frames"),
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(Message::Close(f)))) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            Ok(Some(Ok(_))) => received += 1,
        }
    }
    assert!(
        received < total,
        "the slow client got everything ({received})"
    );
    if let Some(code) = close {
        assert_eq!(code, 1008);
    }
}

/// A client that completes the handshake by hand and then never writes a
/// byte (so it never answers a ping); returns the raw socket.
async fn silent_client(server: &TestServer, user: i64) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let req = format!(
        "GET /?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.token(user, "silent")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// Reads raw server frames until a close frame; returns its code.
async fn raw_close_code(s: &mut tokio::net::TcpStream, within: Duration) -> (u16, usize) {
    use tokio::io::AsyncReadExt;
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut h = [0u8; 2];
        tokio::time::timeout_at(deadline, s.read_exact(&mut h))
            .await
            .expect("no close frame in time")
            .expect("socket ended before a close frame");
        let len = usize::from(h[1] & 0x7f);
        assert!(len < 126, "short control frames only");
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        match h[0] & 0x0f {
            0x9 => pings += 1,
            0x8 => return (u16::from_be_bytes([payload[0], payload[1]]), pings),
            op => panic!("unexpected opcode {op}"),
        }
    }
}

#[tokio::test]
async fn idle_clients_are_pinged_then_closed() {
    let server = TestServer::start_with(|c| {
        c.ping_interval_secs = 1;
        c.idle_timeout_secs = 3;
    })
    .await;
    let mut quiet = silent_client(&server, 1).await;
    // A client that reads (and so answers pings) stays open past the timeout.
    let mut alive = server.connect(2, "alive").await;
    let started = Instant::now();
    // `alive` is read (so its pings are answered) all the while `quiet`
    // waits for its close, and past the idle timeout.
    let reading = async {
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, alive.ws.next()).await {
            match m {
                Message::Ping(_) => pings += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        pings
    };
    let ((code, quiet_pings), pings) =
        tokio::join!(raw_close_code(&mut quiet, Duration::from_secs(8)), reading);
    assert_eq!(code, 1001);
    assert!(
        quiet_pings >= 2,
        "pinged before being closed: {quiet_pings}"
    );
    assert!(started.elapsed() >= Duration::from_millis(2500));
    assert!(pings >= 3, "pings: {pings}");
    alive.send(json!({"type": "dm_history", "with": 1})).await;
    alive.recv_type("dm_history").await;
}

#[tokio::test]
async fn a_connection_closes_with_4001_when_its_token_expires() {
    let server = TestServer::start().await;
    let token = chat_server::auth::sign_hs256(crate::helpers::SECRET.as_bytes(), 1, "brief", 2);
    let mut c = Client::connect_url(&format!("{}?token={token}", server.url()), None)
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(c.close_code(Duration::from_secs(6)).await, Some(4001));
    assert!(started.elapsed() >= Duration::from_millis(900));
}
