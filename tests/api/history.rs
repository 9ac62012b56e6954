//! Room and DM history: limits, order, pair isolation, and survival of a
//! server restart.

use serde_json::{json, Value};

use crate::helpers::{Client, TestServer};

async fn send_room(c: &mut Client, room: &str, content: &str) -> i64 {
    c.send(json!({"type": "message", "room": room, "content": content}))
        .await;
    c.recv_type("message").await["data"]["id"].as_i64().unwrap()
}

async fn send_dm(c: &mut Client, to: i64, content: &str) -> i64 {
    c.send(json!({"type": "dm", "to": to, "content": content}))
        .await;
    c.recv_type("dm").await["data"]["id"].as_i64().unwrap()
}

fn contents(h: &Value) -> Vec<String> {
    h["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn room_history_is_chronological_limited_and_capped() {
    let server = TestServer::start_with(|c| {
        c.history_default = 5;
        c.history_max = 8;
    })
    .await;
    server.create_room("r").await;
    server.create_room("noise").await;
    let mut a = server.connect(1, "a").await;
    a.join("r").await;
    a.join("noise").await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(send_room(&mut a, "r", &format!("m{i}")).await);
        send_room(&mut a, "noise", "other room").await;
    }
    a.send(json!({"type": "room_history", "room": "r", "limit": 3}))
        .await;
    let h = a.recv_type("room_history").await;
    assert_eq!(contents(&h), vec!["m9", "m10", "m11"]);
    let got: Vec<i64> = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, ids[9..]);
    let first = &h["data"][0];
    assert_eq!(first["room"], "r");
    assert_eq!(first["fromUser"], 1);
    assert_eq!(first["username"], "a");
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));

    a.send(json!({"type": "room_history", "room": "r"})).await;
    assert_eq!(
        contents(&a.recv_type("room_history").await).len(),
        5,
        "default"
    );
    a.send(json!({"type": "room_history", "room": "r", "limit": 1000}))
        .await;
    let capped = contents(&a.recv_type("room_history").await);
    assert_eq!(capped.len(), 8, "capped");
    assert_eq!(capped.first().unwrap(), "m4");
}

#[tokio::test]
async fn dm_history_holds_both_directions_of_one_pair_only() {
    let server = TestServer::start().await;
    let mut a = server.connect(1, "a").await;
    let mut b = server.connect(2, "b").await;
    let mut c = server.connect(3, "c").await;
    send_dm(&mut a, 2, "a->b 1").await;
    b.recv_type("dm").await;
    send_dm(&mut b, 1, "b->a 2").await;
    a.recv_type("dm").await;
    send_dm(&mut c, 1, "c->a").await;
    a.recv_type("dm").await;
    send_dm(&mut a, 2, "a->b 3").await;
    b.recv_type("dm").await;

    a.send(json!({"type": "dm_history", "with": 2})).await;
    let h = a.recv_type("dm_history").await;
    assert_eq!(contents(&h), vec!["a->b 1", "b->a 2", "a->b 3"]);
    assert_eq!(h["data"][1]["fromUser"], 2);
    assert_eq!(h["data"][1]["to"], 1);
    b.send(json!({"type": "dm_history", "with": 1, "limit": 2}))
        .await;
    assert_eq!(
        contents(&b.recv_type("dm_history").await),
        vec!["b->a 2", "a->b 3"]
    );
    c.send(json!({"type": "dm_history", "with": 2})).await;
    assert_eq!(contents(&c.recv_type("dm_history").await).len(), 0);
}

#[tokio::test]
async fn history_and_membership_survive_a_restart() {
    let mut server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect(1, "a").await;
    a.join("r").await;
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(send_room(&mut a, "r", &format!("before {i}")).await);
    }
    let mut b = server.connect(2, "b").await;
    send_dm(&mut b, 1, "dm before").await;
    drop((a, b));
    server.restart().await;

    let mut a = server.connect(1, "a").await;
    // Still a member after the restart: no join needed.
    a.send(json!({"type": "room_history", "room": "r", "limit": 50}))
        .await;
    let h = a.recv_type("room_history").await;
    let ids: Vec<i64> = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, sent);
    let after = send_room(&mut a, "r", "after").await;
    assert!(
        after > *sent.last().unwrap(),
        "ids keep increasing across restarts"
    );
    a.send(json!({"type": "dm_history", "with": 2})).await;
    assert_eq!(
        contents(&a.recv_type("dm_history").await),
        vec!["dm before"]
    );
}
