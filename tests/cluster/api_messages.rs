//! Issue 15 across nodes: a message posted through one node's server API
//! reaches the room's members on the other node, in the room's stored
//! order among WebSocket messages; a DM reaches the recipient's node; an
//! operator delete reaches both nodes with `by: null`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{create_room, Client, ServerProcess, SharedDb, SERIAL};
use crate::nodes::{finish, nats_url, stored_room_ids};

const KEY: &str = "cluster-test-api-key";

/// A node with the server API on `api_port`.
async fn start_api_node(db_url: &str, nats: &str, name: &str, api_port: u16) -> ServerProcess {
    let bind = format!("127.0.0.1:{api_port}");
    ServerProcess::start(
        db_url,
        &[
            ("CHAT_CLUSTER_URL", nats),
            ("CHAT_NODE_ID", name),
            ("CHAT_CLUSTER_CHECK_MS", "300"),
            ("CHAT_API_BIND", &bind),
            ("CHAT_API_KEYS", KEY),
        ],
    )
    .await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `method path` with `body` on the API at `port`: (status, JSON body).
async fn call(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("API request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("API body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn post(port: u16, room: &str, from: i64, content: &str) -> Value {
    let (status, body) = call(
        port,
        "POST",
        &format!("/v1/rooms/{room}/messages"),
        Some(json!({"from_user": from, "content": content})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn next_of(c: &mut Client, kind: &str) -> Value {
    loop {
        let v = c.recv().await;
        if v["type"] == kind {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_post_reaches_members_on_the_other_node_in_stored_order() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let nats = nats_url();
    let ports = [free_port(), free_port()];
    let nodes = [
        start_api_node(&db.url, &nats, "a", ports[0]).await,
        start_api_node(&db.url, &nats, "b", ports[1]).await,
    ];
    create_room(&db.url, "r").await;
    chat_server::store::connect(&db.url)
        .await
        .unwrap()
        .batch_execute("INSERT INTO users (id, username) VALUES (90, 'bot')")
        .await
        .unwrap();
    let mut alice = Client::connect(&nodes[0], 1, "alice").await;
    let mut bob = Client::connect(&nodes[1], 2, "bob").await;
    alice.join("r").await;
    bob.join("r").await;
    // Let each node learn that the other follows the room.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Through node a's API: bob on node b gets the same frame as alice.
    let m = post(ports[0], "r", 90, "from the backend").await;
    for c in [&mut alice, &mut bob] {
        assert_eq!(next_of(c, "message").await["data"], m);
    }

    // Through node b's API while alice sends on node a: both see the
    // stored order.
    const N: usize = 20;
    let poster = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..N {
            ids.push(post(ports[1], "r", 90, &format!("api {i}")).await["id"].clone());
        }
        ids
    });
    for i in 0..N {
        alice
            .send(json!({"type": "message", "room": "r", "content": format!("ws {i}")}))
            .await;
    }
    let api_ids = poster.await.unwrap();
    let stored = stored_room_ids(&db.url, "r").await;
    assert_eq!(stored.len(), 1 + 2 * N);
    for (who, c) in [("alice", &mut alice), ("bob", &mut bob)] {
        let mut seen = vec![m["id"].as_i64().unwrap()];
        while seen.len() < stored.len() {
            seen.push(next_of(c, "message").await["data"]["id"].as_i64().unwrap());
        }
        assert_eq!(seen, stored, "{who} saw the stored order");
    }
    assert!(api_ids
        .iter()
        .all(|id| stored.contains(&id.as_i64().unwrap())));

    // A DM through node a's API reaches bob on node b.
    let (status, dm) = call(
        ports[0],
        "POST",
        "/v1/dms",
        Some(json!({"from_user": 90, "to": 2, "content": "psst"})),
    )
    .await;
    assert_eq!(status, 201, "{dm}");
    assert_eq!(next_of(&mut bob, "dm").await["data"], dm);

    // An operator delete through node b's API reaches alice on node a.
    let (status, deleted) = call(
        ports[1],
        "DELETE",
        &format!("/v1/messages/{}", m["id"]),
        None,
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["by"], Value::Null);
    for c in [&mut alice, &mut bob] {
        assert_eq!(next_of(c, "message_deleted").await["data"], deleted);
    }
    finish(nodes, db).await;
}
