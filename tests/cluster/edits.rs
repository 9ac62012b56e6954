//! Issue 14 across nodes: an edit and a delete are events of the message's
//! stream, sequenced like messages, so they reach members on other nodes
//! in id order, and a DM's events reach the other user's node.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{create_room, Client, SharedDb, SERIAL};
use crate::nodes::{finish, nats_url, start_node};

/// The next frame of type `kind` (skipping presence and the like).
async fn next_of(c: &mut Client, kind: &str) -> Value {
    loop {
        let v = c.recv().await;
        if v["type"] == kind {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_and_a_delete_reach_members_on_another_node() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let nats = nats_url();
    let nodes = [
        start_node(&db.url, &nats, "a").await,
        start_node(&db.url, &nats, "b").await,
    ];
    create_room(&db.url, "r").await;
    let mut alice = Client::connect(&nodes[0], 1, "alice").await;
    let mut bob = Client::connect(&nodes[1], 2, "bob").await;
    alice.join("r").await;
    bob.join("r").await;
    // Let node a learn that node b follows the room.
    tokio::time::sleep(Duration::from_millis(300)).await;

    alice
        .send(json!({"type": "message", "room": "r", "content": "draft"}))
        .await;
    let id = next_of(&mut alice, "message").await["data"]["id"].clone();
    assert_eq!(next_of(&mut bob, "message").await["data"]["id"], id);

    alice
        .send(json!({"type": "edit", "id": id, "content": "final"}))
        .await;
    let own = next_of(&mut alice, "message_edited").await;
    let seen = next_of(&mut bob, "message_edited").await;
    assert_eq!(seen["data"], own["data"], "the edit on the other node");
    assert_eq!(seen["data"]["content"], "final");

    alice.send(json!({"type": "delete", "id": id})).await;
    let own = next_of(&mut alice, "message_deleted").await;
    let seen = next_of(&mut bob, "message_deleted").await;
    assert_eq!(seen["data"], own["data"], "the delete on the other node");

    // A DM's edit reaches the recipient's node too.
    alice
        .send(json!({"type": "dm", "to": 2, "content": "psst"}))
        .await;
    let dm = next_of(&mut alice, "dm").await["data"]["id"].clone();
    assert_eq!(next_of(&mut bob, "dm").await["data"]["id"], dm);
    alice
        .send(json!({"type": "edit", "id": dm, "content": "psst!"}))
        .await;
    let own = next_of(&mut alice, "message_edited").await;
    let seen = next_of(&mut bob, "message_edited").await;
    assert_eq!(seen["data"], own["data"]);
    assert_eq!(seen["data"]["to"], 2);

    // Bob, reconnecting to node a, replays the room's events once, in order.
    drop(bob);
    let mut bob = Client::connect(&nodes[0], 2, "bob").await;
    bob.send(json!({"type": "join", "room": "r", "since": 0}))
        .await;
    let ack = next_of(&mut bob, "join_ack").await;
    assert_eq!(ack["data"]["recovered"], true, "{ack}");
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let v = bob.recv().await;
        if v["type"].as_str().is_some_and(|t| t.starts_with("message")) {
            kinds.push(v["type"].as_str().unwrap_or_default().to_owned());
            assert!(!v.to_string().contains("draft") && !v.to_string().contains("final"));
        }
    }
    assert_eq!(kinds, ["message", "message_edited", "message_deleted"]);
    finish(nodes, db).await;
}
