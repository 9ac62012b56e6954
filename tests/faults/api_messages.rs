//! Issue 15: the server API's message routes while PostgreSQL is away: a
//! post is answered 503 `unavailable` (nothing stored,
//! nothing delivered), and posts succeed again once the database is back.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

const KEY: &str = "faults-test-api-key";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Posts `content` to room `r` as user 90 through the API at `port`.
async fn post(port: u16, content: &str) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{port}/v1/rooms/r/messages"))
        .bearer_auth(KEY)
        .json(&json!({"from_user": 90, "content": content}))
        .send()
        .await
        .expect("API request");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("API body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_post_without_database_is_503_and_posts_resume_after() {
    let _serial = SERIAL.lock().await;
    let pg = PrivatePg::create().await;
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let server = ServerProcess::start(
        &pg.url,
        &[
            ("CHAT_PERSIST_TIMEOUT_MS", "2000"),
            ("CHAT_API_BIND", &bind),
            ("CHAT_API_KEYS", KEY),
        ],
    )
    .await;
    create_room(&pg.url, "r").await;
    chat_server::store::connect(&pg.url)
        .await
        .unwrap()
        .batch_execute("INSERT INTO users (id, username) VALUES (90, 'bot')")
        .await
        .unwrap();
    let mut alice = Client::connect(&server, 1, "alice").await;
    alice.join("r").await;
    let (status, before) = post(port, "before").await;
    assert_eq!(status, 201, "{before}");
    assert_eq!(alice.recv().await["data"], before);

    pg.stop().await;
    let (status, body) = post(port, "while away").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    pg.start().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let (status, body) = post(port, "after").await;
        if status == 201 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "no 201 within 30 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Alice gets exactly the stored posts: nothing of the refused one.
    assert_eq!(alice.recv().await["data"], after);
    let stored: Vec<String> = chat_server::store::connect(&pg.url)
        .await
        .unwrap()
        .query("SELECT content FROM messages ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, ["before", "after"]);
    server.assert_no_panic();
}
