//! Descriptors (issue 13): with a low open-files limit, the connection
//! ceiling derived from it answers `server full` (503) before descriptors
//! run out, and when they do run out (an explicit pending-handshake cap
//! over budget), accept errors back off and are logged at a bounded rate.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// A handshake as user `user`: the client, or the HTTP status.
async fn try_connect(server: &ServerProcess, user: i64) -> Result<Client, u16> {
    let url = format!(
        "{}?token={}",
        server.url(),
        token(user, &format!("u{user}"))
    );
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("handshake answered in time (descriptors not exhausted)")
    {
        Ok((ws, _)) => Ok(Client { ws, shard: 0 }),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            assert_eq!(
                (resp.status().as_u16(), body.trim()),
                (503, "server full"),
                "the only refusal expected"
            );
            Err(503)
        }
        Err(e) => panic!("handshake failed instead of 503: {e}"),
    }
}

async fn metrics(server: &ServerProcess) -> String {
    let addr = server
        .url()
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("metrics answered")
        .unwrap();
    out
}

fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_ceiling_from_the_file_limit_answers_server_full() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let mut server = ServerProcess::spawn_with_nofile(&db.url, &[], Some(256));
    server.wait_ready(Duration::from_secs(30)).await;
    assert!(
        server.log_contains("connection ceiling from the open-files limit"),
        "{}",
        server.log_text()
    );
    let mut open = Vec::new();
    let mut full = false;
    for user in 1..=400 {
        match try_connect(&server, user).await {
            Ok(c) => open.push(c),
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "no `server full` after {} connections", open.len());
    assert!(open.len() > 50, "ceiling too low: {}", open.len());
    // Open connections keep working.
    for c in open.iter_mut().take(5) {
        c.send(json!({"type": "rooms", "ref": "r"})).await;
        assert_eq!(c.recv().await["type"], "rooms");
    }
    // After some close, a fresh handshake gets in.
    for mut c in open.drain(..20) {
        let _ = futures_util::SinkExt::close(&mut c.ws).await;
    }
    let mut admitted = false;
    for user in 1000..1050 {
        if let Ok(mut c) = try_connect(&server, user).await {
            c.send(json!({"type": "rooms"})).await;
            assert_eq!(c.recv().await["type"], "rooms");
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a handshake after closing connections");
    server.assert_no_panic();
    drop(open);
    drop(server);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_back_off_and_log_at_a_bounded_rate() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    // An explicit pending cap far over the budget: silent sockets can take
    // every descriptor, and accept fails.
    let mut server = ServerProcess::spawn_with_nofile(
        &db.url,
        &[
            ("CHAT_MAX_PENDING_HANDSHAKES", "100000"),
            ("CHAT_MAX_PENDING_HANDSHAKES_PER_IP", "0"),
            ("CHAT_HANDSHAKE_FIRST_BYTE_MS", "6000"),
        ],
        Some(256),
    );
    let port = server.wait_ready(Duration::from_secs(30)).await;
    let mut silent = Vec::new();
    for _ in 0..400 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logged = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "measured within one log interval"
    );
    // At most one line per shard per 5 s (2 shards); before: ~20/s/shard.
    assert!(
        (1..=2).contains(&logged),
        "{logged} `accept failed` lines in 3 s:\n{}",
        server.log_text()
    );
    drop(silent);
    // Once the silent sockets are gone, the server serves again.
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics(&server).await;
        if text.contains("chat_accept_errors") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric_sum(&text, "chat_accept_errors_total") >= 1, "{text}");
    let _c = Client::connect(&server, 1, "after").await;
    server.assert_no_panic();
    drop(server);
    db.drop_now().await;
}
