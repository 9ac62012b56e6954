//! Issue 15: cluster failover of the webhook deliverer. Two nodes, one
//! webhook: exactly one node delivers (it holds the webhook's advisory
//! lock); when it is killed, the other takes over from the stored cursor
//! and the receiver gets every event, in order.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{create_room, Client, ServerProcess, SharedDb, SERIAL};
use crate::nodes::{finish, nats_url};
use crate::webhook_receiver::Receiver;

const SECRET: &str = "cluster-webhook-secret";
const DELIVERS: &str = "webhook: this node delivers";

async fn node(db: &str, nats: &str, name: &str, url: &str) -> ServerProcess {
    ServerProcess::start(
        db,
        &[
            ("CHAT_CLUSTER_URL", nats),
            ("CHAT_NODE_ID", name),
            ("CHAT_CLUSTER_CHECK_MS", "300"),
            ("CHAT_WEBHOOK_URL", url),
            ("CHAT_WEBHOOK_SECRET", SECRET),
            ("CHAT_WEBHOOK_BATCH", "5"),
            ("CHAT_WEBHOOK_TIMEOUT", "1s"),
            ("CHAT_WEBHOOK_BACKOFF_MAX", "200ms"),
            ("CHAT_FEED_POLL_MS", "20"),
        ],
    )
    .await
}

async fn say(c: &mut Client, room: &str, content: &str) {
    c.send(json!({"type": "message", "room": room, "content": content, "ref": content}))
        .await;
    loop {
        let v = c.recv().await;
        if v["ref"] == content {
            assert_eq!(v["type"], "message", "{v}");
            return;
        }
    }
}

async fn head(db: &str) -> i64 {
    let c = chat_server::store::connect(db).await.unwrap();
    c.query_one("SELECT seq FROM feed_head", &[])
        .await
        .unwrap()
        .get(0)
}

async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_takes_over_webhook_delivery_when_the_holder_dies() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let nats = nats_url();
    let receiver = Receiver::start(SECRET);
    let url = receiver.url();
    let mut nodes = [
        node(&db.url, &nats, "wh-a", &url).await,
        node(&db.url, &nats, "wh-b", &url).await,
    ];
    until("a deliverer", Duration::from_secs(20), || {
        nodes.iter().any(|n| n.log_contains(DELIVERS))
    })
    .await;
    // Exactly one: the other keeps trying the lock.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let holders: Vec<usize> = (0..2)
        .filter(|&i| nodes[i].log_contains(DELIVERS))
        .collect();
    assert_eq!(holders.len(), 1, "both nodes deliver");
    let (holder, other) = (holders[0], 1 - holders[0]);

    create_room(&db.url, "r").await;
    let mut a = Client::connect(&nodes[holder], 1, "alice").await;
    let mut b = Client::connect(&nodes[other], 2, "bob").await;
    a.join("r").await;
    b.join("r").await;
    for i in 0..6 {
        say(&mut a, "r", &format!("a{i}")).await;
        say(&mut b, "r", &format!("b{i}")).await;
    }
    let h = head(&db.url).await;
    until("the first events", Duration::from_secs(20), || {
        receiver.seen(|s| s.last()) == h
    })
    .await;

    // The holder dies; the other node continues from the stored cursor.
    nodes[holder].kill9();
    for i in 0..8 {
        say(&mut b, "r", &format!("after {i}")).await;
    }
    let h = head(&db.url).await;
    until("the survivor's deliveries", Duration::from_secs(30), || {
        receiver.seen(|s| s.last()) == h
    })
    .await;
    assert!(nodes[other].log_contains(DELIVERS));

    receiver.seen(|s| {
        assert!(s.bad.is_empty(), "{:?}", s.bad);
        // Every seq in order. After the kill the survivor re-sends from the
        // stored cursor: the batch in flight again, possibly with more events.
        assert_eq!(s.assert_every_seq_in_order(), h);
    });
    let c = chat_server::store::connect(&db.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cursor: i64 = c
            .query_one("SELECT seq FROM webhook_cursors WHERE url = $1", &[&url])
            .await
            .unwrap()
            .get(0);
        if cursor == h {
            break;
        }
        assert!(Instant::now() < deadline, "cursor {cursor}, head {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(c);
    finish(nodes, db).await;
}
