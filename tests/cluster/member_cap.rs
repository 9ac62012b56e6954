//! Issue 16 across nodes: a member's own `joined` over the cap
//! (`--presence-max-members`, counted on the acting node) is no room notice
//! to the other nodes; its own connections on its node still get it.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Client, ServerProcess, SharedDb, SERIAL};
use crate::nodes::{finish, nats_url};

/// Every text frame `c` receives until the `message` with `content`, then
/// for `more` after it (a notice that raced the message would show up).
async fn frames_around(c: &mut Client, content: &str, more: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut until: Option<tokio::time::Instant> = None;
    loop {
        let deadline =
            until.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(10));
        let next = match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) if until.is_some() => return seen,
            Err(_) => panic!("no message '{content}' within 10 s; saw {seen:?}"),
            Ok(next) => next,
        };
        let Some(Ok(Message::Text(t))) = next else {
            continue;
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["type"] == "message" && v["data"]["content"] == content {
            until = Some(tokio::time::Instant::now() + more);
        }
        seen.push(v);
    }
}

/// The `member` frames about user 3 (c) among `frames`.
fn about_c(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter(|v| v["type"] == "member" && v["data"]["user"] == 3)
        .collect()
}

/// A node with `--presence-max-members 2`.
async fn start_capped(db_url: &str, nats: &str, name: &str) -> ServerProcess {
    ServerProcess::start(
        db_url,
        &[
            ("CHAT_CLUSTER_URL", nats),
            ("CHAT_NODE_ID", name),
            ("CHAT_CLUSTER_CHECK_MS", "300"),
            ("CHAT_PRESENCE_MAX_MEMBERS", "2"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_a_join_is_no_notice_to_the_other_nodes() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let nats = nats_url();
    let nodes = [
        start_capped(&db.url, &nats, "a").await,
        start_capped(&db.url, &nats, "b").await,
    ];
    let mut owner = Client::connect(&nodes[0], 1, "owner").await;
    owner
        .send(json!({"type": "create_room", "room": "big", "ref": 1}))
        .await;
    assert_eq!(owner.recv().await["type"], "room_created");
    let mut x = Client::connect(&nodes[0], 4, "x").await;
    x.join("big").await;
    let mut w = Client::connect(&nodes[1], 2, "w").await;
    w.join("big").await;

    // Node a: owner, x and c online in the room, c counted: over the cap.
    let mut c_other = Client::connect(&nodes[0], 3, "c").await;
    let mut c = Client::connect(&nodes[0], 3, "c").await;
    c.join("big").await;
    owner
        .send(json!({"type": "message", "room": "big", "content": "mark", "ref": 2}))
        .await;
    let at_c = frames_around(&mut c_other, "mark", Duration::ZERO).await;
    assert_eq!(
        about_c(&at_c),
        vec![
            &json!({"type": "member", "data": {"room": "big", "user": 3, "action": "joined", "by": 3}})
        ],
        "c's own other connection"
    );
    let at_w = frames_around(&mut w, "mark", Duration::from_millis(500)).await;
    assert!(about_c(&at_w).is_empty(), "w on node b: {at_w:?}");
    let at_x = frames_around(&mut x, "mark", Duration::from_millis(100)).await;
    assert!(about_c(&at_x).is_empty(), "x on node a: {at_x:?}");
    finish(nodes, db).await;
}
