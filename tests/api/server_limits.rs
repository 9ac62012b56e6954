//! Server-wide resources (issue 13): pending handshakes capped per address
//! and in total, silent sockets closed after the first-byte deadline,
//! handshakes that never wait behind history reads (a pool of their own),
//! and `/metrics` on its own address or behind a token.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite;

use crate::helpers::{Client, TestServer};

/// A TCP connection to `addr` from the loopback address `ip` (127.0.0.x).
async fn tcp_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// How a WebSocket handshake from `ip` ended: `Ok` (opened) or the HTTP
/// status (0: the server closed the socket without an answer).
async fn handshake_from(server: &TestServer, ip: &str, user: i64) -> Result<(), u16> {
    let stream = tcp_from(ip, server.addr()).await;
    let url = format!(
        "{}?token={}",
        server.url(),
        server.token(user, &format!("u{user}"))
    );
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(url, stream),
    )
    .await
    .expect("handshake answered in time");
    match result {
        Ok((mut ws, _)) => {
            let _ = ws.close(None).await;
            Ok(())
        }
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(_) => Err(0),
    }
}

/// Waits up to `within` for the server to close `s`; true if it did
/// (with or without a response first).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// `GET target` on `addr` with an optional `Authorization` header: status and body.
async fn get(addr: SocketAddr, target: &str, authorization: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("the server closes after its response")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Sum of every sample of `name` whose labels contain `label`.
fn metric(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn pending_handshakes_per_ip_cap_refuses_that_address_only() {
    let server = TestServer::start_with(|c| {
        c.max_pending_handshakes_per_ip = 8;
        c.handshake_first_byte_ms = 20_000;
        c.handshake_timeout_ms = 20_000;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tcp_from("127.0.0.2", server.addr()).await);
    }
    // 8 are held as pending; the other 12 are refused at once.
    let closed = futures_util::future::join_all(
        silent
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(2))),
    )
    .await
    .into_iter()
    .filter(|c| *c)
    .count();
    assert_eq!(
        closed, 12,
        "sockets over the per-address cap closed at once"
    );
    // Another address gets in while 127.0.0.2 holds its 8.
    assert_eq!(handshake_from(&server, "127.0.0.3", 1).await, Ok(()));
    // A 9th from 127.0.0.2, even a real handshake, is refused.
    let ninth = handshake_from(&server, "127.0.0.2", 2).await;
    assert!(matches!(ninth, Err(429) | Err(0)), "{ninth:?}");
    let (_, text) = get(server.addr(), "/metrics", None).await;
    assert!(
        metric(
            &text,
            "chat_handshakes_refused_total",
            "reason=\"pending_per_ip\""
        ) >= 13,
        "{text}"
    );
    // Once the silent sockets go, the address gets in again.
    drop(silent);
    let mut ok = false;
    for _ in 0..50 {
        if handshake_from(&server, "127.0.0.2", 3).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "127.0.0.2 admitted again after its sockets closed");
}

#[tokio::test]
async fn pending_handshakes_total_cap_refuses_at_once() {
    let server = TestServer::start_with(|c| {
        // One shard accepts in connection order: the silent sockets first.
        c.cores = Some(1);
        c.max_pending_handshakes = 8;
        c.max_pending_handshakes_per_ip = 0;
        c.handshake_first_byte_ms = 20_000;
        c.handshake_timeout_ms = 20_000;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(tcp_from("127.0.0.2", server.addr()).await);
    }
    // From any address, a handshake is now refused (503) until they go.
    let refused = handshake_from(&server, "127.0.0.3", 1).await;
    assert!(matches!(refused, Err(503) | Err(0)), "{refused:?}");
    for s in &mut silent {
        assert!(!closed_within(s, Duration::from_millis(10)).await, "held");
    }
    drop(silent);
    let mut ok = false;
    for user in 30..80 {
        if handshake_from(&server, "127.0.0.3", user).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "admitted again once the silent sockets closed");
    let (_, text) = get(server.addr(), "/metrics", None).await;
    assert!(
        metric(
            &text,
            "chat_handshakes_refused_total",
            "reason=\"pending_total\""
        ) >= 1,
        "{text}"
    );
}

#[tokio::test]
async fn silent_sockets_are_closed_after_the_first_byte_deadline() {
    let server = TestServer::start_with(|c| {
        c.handshake_first_byte_ms = 300;
        c.handshake_timeout_ms = 10_000;
    })
    .await;
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();
    // Well before the 10 s handshake timeout.
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    // A client that starts at once keeps the whole handshake timeout.
    let mut slow = TcpStream::connect(server.addr()).await.unwrap();
    let token = server.token(1, "slow");
    slow.write_all(format!("GET /?token={token} HTTP/1.1\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    slow.write_all(
        b"Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), slow.read_exact(&mut head))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
}

#[tokio::test]
async fn handshakes_do_not_wait_behind_history_reads() {
    let server = TestServer::start_with(|c| {
        c.cores = Some(1);
        c.db_pool_size = 2;
        c.db_read_pool_size = 2;
    })
    .await;
    server.create_room("heavy").await;
    // A connection serves one request at a time: one reader per read.
    let mut readers = Vec::new();
    for user in 1..=4 {
        let mut reader = server.connect(user, &format!("reader{user}")).await;
        reader.join("heavy").await;
        readers.push(reader);
    }
    // Every history read now waits on a lock, holding its pooled connection.
    let locker = server.db().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for reader in &mut readers {
        reader
            .send(json!({"type": "room_history", "room": "heavy"}))
            .await;
    }
    let watcher = server.db().await;
    let mut waiting = 0;
    for _ in 0..100 {
        waiting = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if waiting >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(waiting, 2, "both read connections wait on the lock");
    // A new user's handshake (user upsert, rooms) still goes through.
    let url = format!("{}?token={}", server.url(), server.token(99, "newcomer"));
    let newcomer = Client::connect_url(&url, None).await;
    assert!(
        newcomer.is_ok(),
        "handshake behind history reads: {newcomer:?}"
    );
    // ... while the reads are still pending.
    readers[0].expect_nothing(Duration::from_millis(100)).await;
    locker.batch_execute("COMMIT").await.unwrap();
    let first = readers[0].recv_any().await;
    assert!(
        first["type"] == "room_history" || first["type"] == "error",
        "{first}"
    );
}

#[tokio::test]
async fn metrics_on_their_own_address_only() {
    let server = TestServer::start_with(|c| {
        c.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let own = server.metrics_addr().expect("a metrics listener");
    let (status, _) = get(server.addr(), "/metrics", None).await;
    assert_eq!(status, 404, "the main port no longer serves /metrics");
    let (status, body) = get(own, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("chat_connections"), "{body}");
    assert_eq!(get(own, "/", None).await.0, 404);
    // The rest of the main port is unchanged.
    assert_eq!(get(server.addr(), "/healthz", None).await.0, 200);
}

#[tokio::test]
async fn metrics_token_is_required_when_set() {
    let server = TestServer::start_with(|c| {
        c.metrics_token = Some("scrape-me".into());
    })
    .await;
    assert_eq!(get(server.addr(), "/metrics", None).await.0, 401);
    assert_eq!(
        get(server.addr(), "/metrics", Some("Bearer scrape-m"))
            .await
            .0,
        401
    );
    let (status, body) = get(server.addr(), "/metrics", Some("Bearer scrape-me")).await;
    assert_eq!(status, 200);
    assert!(body.contains("chat_connections"), "{body}");
}
