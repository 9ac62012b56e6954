//! Slow consumers against the real binary: clients that stop reading while
//! their room floods are disconnected, the rest of the room gets everything,
//! and the server's memory stays bounded (RSS before and after).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

const ROOM: &str = "flooded";
const MESSAGES: usize = 6000;
const CONTENT_BYTES: usize = 4000;
const SLOW_CLIENTS: i64 = 3;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// A client with a tiny receive buffer (no kernel autotuning), so that the
/// server feels its back-pressure after a few KiB instead of tens of MiB.
async fn stingy_client(server: &ServerProcess, user_id: i64) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let addr = server
        .url()
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let url = format!(
        "{}?token={}",
        server.url(),
        token(user_id, &format!("slow{user_id}"))
    );
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_cut_off_and_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let server = ServerProcess::start(
        &db.url,
        &[
            ("CHAT_OUTBOX_BYTES", "1048576"),
            ("CHAT_OUTBOX_FRAMES", "1024"),
            ("CHAT_WRITE_TIMEOUT_MS", "60000"),
            ("RUST_LOG", "info,chat_server::connection=debug"),
        ],
    )
    .await;
    create_room(&db.url, ROOM).await;

    let mut slow = Vec::new();
    for i in 0..SLOW_CLIENTS {
        let mut ws = stingy_client(&server, 100 + i).await;
        ws.send(Message::text(
            json!({"type": "join", "room": ROOM}).to_string(),
        ))
        .await
        .unwrap();
        // Read the ack, then never read again.
        let ack = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(ack.to_text().unwrap().contains("join_ack"), "{ack:?}");
        slow.push(ws);
    }
    let mut sender = Client::connect(&server, 1, "sender").await;
    let mut reader = Client::connect(&server, 2, "reader").await;
    sender.join(ROOM).await;
    reader.join(ROOM).await;
    let (sink, sender_rx) = sender.split();
    let (_reader_sink, reader_rx) = reader.split();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(server.pid());

    // 6000 messages of 4000 B: 24 MB for every member.
    let content = "f".repeat(CONTENT_BYTES);
    // The sender keeps at most WINDOW messages unacknowledged, so what is
    // in flight inside the server (writer batches, inboxes, the fast
    // reader's outbox) stays small and RSS growth measures what the slow
    // connections hold. (Sent all at once, the transient peak depended on
    // how far the writer got ahead of delivery: 6 to 34 MiB.)
    const WINDOW: usize = 64;
    let mut sink = sink;
    for i in 0..MESSAGES {
        if i >= WINDOW && i % 16 == 0 {
            sender_rx
                .wait_for("the sender's echoes", Duration::from_secs(60), |l| {
                    l.messages.len() + WINDOW >= i
                })
                .await;
        }
        send_message(&mut sink, ROOM, &content).await.unwrap();
    }
    reader_rx
        .wait_for(
            "every message at the reader",
            Duration::from_secs(120),
            |l| l.messages.len() >= MESSAGES,
        )
        .await;
    sender_rx
        .wait_for("every echo at the sender", Duration::from_secs(60), |l| {
            l.messages.len() >= MESSAGES
        })
        .await;
    let rss_after = rss_kib(server.pid());

    // Each slow connection may hold at most one outbox (1 MiB) queued plus
    // one outbox's worth fed to its socket writer; the rest of the growth is
    // the writer's batches and the allocator, which do not scale with the
    // flood. Unbounded, the three slow clients alone would hold ~3 x 20 MB.
    let grown_mib = rss_after.saturating_sub(rss_before) as f64 / 1024.0;
    println!("server RSS {rss_before} KiB -> {rss_after} KiB (+{grown_mib:.1} MiB)");
    assert!(grown_mib < 32.0, "server memory grew by {grown_mib:.1} MiB");

    // Every slow client was disconnected: its stream ends after what was buffered.
    for (i, mut ws) in slow.into_iter().enumerate() {
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        assert!(ended.is_ok(), "slow client {i} still connected");
    }
    // The server logs a connection's end after its close linger (it drains
    // the client's input for up to a second after the close frame), so the
    // last line may follow the client's end of stream by that much.
    let closed_slow = || {
        server
            .log_lines()
            .iter()
            .filter(|l| l.contains("connection closed") && l.contains("slow consumer"))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while closed_slow() < SLOW_CLIENTS as usize && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        closed_slow(),
        SLOW_CLIENTS as usize,
        "{}",
        server.log_text()
    );
    assert_eq!(
        reader_rx.snapshot().messages.len(),
        MESSAGES,
        "no extra or missing frame"
    );
    server.assert_no_panic();
    db.drop_now().await;
}
