//! Issue 15, the server API across nodes: a user's connections are counted
//! on every node, and a disconnect asked of one node closes the user's
//! connections on both (4003), its block refusing handshakes everywhere.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{token, Client, ServerProcess, SharedDb, SERIAL};
use crate::nodes::{finish, nats_url};

const KEY: &str = "cluster-test-api-key";

/// A cluster node with the server API on a free port; its API address.
async fn start_api_node(db_url: &str, nats: &str, name: &str) -> (ServerProcess, String) {
    let node = ServerProcess::start(
        db_url,
        &[
            ("CHAT_CLUSTER_URL", nats),
            ("CHAT_NODE_ID", name),
            ("CHAT_CLUSTER_CHECK_MS", "300"),
            ("CHAT_API_BIND", "127.0.0.1:0"),
            ("CHAT_API_KEYS", KEY),
        ],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let addr = node.log_lines().iter().find_map(|l| {
            l.contains("serving the server API")
                .then(|| l.split("addr=").nth(1)?.split_whitespace().next())
                .flatten()
                .map(str::to_owned)
        });
        if let Some(addr) = addr {
            return (node, format!("http://{addr}"));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no API address logged:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `method base+path` with the key and an optional JSON body: (status, body).
async fn call(method: &str, url: String, body: Option<Value>) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut req = http
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
        .bearer_auth(KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("API request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The close code the server ends `c` with (within 10 s).
async fn close_code(c: &mut Client) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) => panic!("connection still open"),
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The HTTP status of a handshake of `user` on `node` (101 when accepted).
async fn handshake_status(node: &ServerProcess, user: i64, name: &str) -> u16 {
    let url = format!("{}?token={}", node.url(), token(user, name));
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_on_one_node_closes_the_users_connections_on_every_node() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let nats = nats_url();
    let (a, api_a) = start_api_node(&db.url, &nats, "a").await;
    let (b, api_b) = start_api_node(&db.url, &nats, "b").await;

    let mut on_a0 = Client::connect_on_shard(&a, 9, "nine", 0).await;
    let mut on_a1 = Client::connect_on_shard(&a, 9, "nine", 1).await;
    let mut on_b = Client::connect(&b, 9, "nine").await;
    let mut bystander = Client::connect(&b, 10, "ten").await;

    // Counted on both nodes, asked of either (the other node answers over
    // NATS once its link is up: wait for it, bounded).
    for api in [&api_a, &api_b] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (s, v) = call("GET", format!("{api}/v1/users/9"), None).await;
            assert_eq!(s, 200, "{v}");
            if v["connections"] == 3 {
                assert_eq!(v["online"], true, "{v}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{api}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let (s, v) = call(
        "POST",
        format!("{api_a}/v1/users/9/disconnect"),
        Some(json!({"block_seconds": 600, "reason": "compromised"})),
    )
    .await;
    assert_eq!((s, v["blocked"].clone()), (200, json!(true)), "{v}");
    assert_eq!(close_code(&mut on_a0).await, Some(4003));
    assert_eq!(close_code(&mut on_a1).await, Some(4003));
    assert_eq!(
        close_code(&mut on_b).await,
        Some(4003),
        "the other node's connection"
    );
    for node in [&a, &b] {
        assert_eq!(handshake_status(node, 9, "nine").await, 403);
    }
    // Nobody else was touched.
    bystander.send(json!({"type": "rooms", "ref": 1})).await;
    assert_eq!(bystander.recv().await["type"], "rooms");

    let (s, v) = call("DELETE", format!("{api_b}/v1/users/9/block"), None).await;
    assert_eq!((s, v["unblocked"].clone()), (200, json!(true)), "{v}");
    assert_eq!(handshake_status(&a, 9, "nine").await, 101);
    finish([a, b], db).await;
}
