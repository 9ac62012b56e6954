//! Persistent rooms: membership that survives reconnects and restarts,
//! `leave`, `create_room`, `rooms` with unread counts, and `read`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Client, TestServer};

async fn send_room(c: &mut Client, room: &str, content: &str) -> i64 {
    c.send(json!({"type": "message", "room": room, "content": content}))
        .await;
    c.recv_type("message").await["data"]["id"].as_i64().unwrap()
}

async fn rooms(c: &mut Client) -> Value {
    c.send(json!({"type": "rooms"})).await;
    c.recv_type("rooms").await["data"].clone()
}

async fn error_text(c: &mut Client) -> String {
    c.recv_type("error").await["data"]["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn membership_survives_reconnect_and_restart() {
    let mut server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect(1, "a").await;
    let mut b = server.connect(2, "b").await;
    a.join("r").await;
    b.join("r").await;
    a.close().await;

    // Reconnected on either shard, without joining again.
    for shard in [0, 1] {
        let mut a = server.connect_on_shard(1, "a", shard).await;
        let id = send_room(&mut b, "r", &format!("to shard {shard}")).await;
        assert_eq!(a.recv_type("message").await["data"]["id"], id);
        a.close().await;
    }

    b.close().await;
    server.restart().await;
    let mut a = server.connect(1, "a").await;
    let mut b = server.connect(2, "b").await;
    let id = send_room(&mut b, "r", "after restart").await;
    assert_eq!(a.recv_type("message").await["data"]["id"], id);
}

#[tokio::test]
async fn leave_stops_delivery_and_history_on_every_connection() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a0 = server.connect_on_shard(1, "a", 0).await;
    let mut a1 = server.connect_on_shard(1, "a", 1).await;
    let mut b = server.connect(2, "b").await;
    a0.join("r").await;
    b.join("r").await;
    send_room(&mut b, "r", "while a is in").await;
    a0.recv_type("message").await;
    a1.recv_type("message").await;

    a0.send(json!({"type": "leave", "room": "r", "ref": "bye"}))
        .await;
    let ack = a0.recv_type("leave_ack").await;
    assert_eq!(ack["data"], json!({"room": "r"}));
    assert_eq!(ack["ref"], "bye");
    // Give the other shard's unsubscribe a moment (it is sent, not awaited).
    tokio::time::sleep(Duration::from_millis(100)).await;
    send_room(&mut b, "r", "after a left").await;
    a0.expect_nothing(Duration::from_millis(300)).await;
    a1.expect_nothing(Duration::from_millis(100)).await;

    for a in [&mut a0, &mut a1] {
        a.send(json!({"type": "room_history", "room": "r"})).await;
        assert!(error_text(a).await.contains("join room 'r'"));
        a.send(json!({"type": "message", "room": "r", "content": "x"}))
            .await;
        assert!(error_text(a).await.contains("join room 'r'"));
    }
    a0.send(json!({"type": "leave", "room": "r"})).await;
    assert!(error_text(&mut a0).await.contains("not a member"));
    let n = server
        .count("SELECT count(*) FROM room_members WHERE user_id = 1")
        .await;
    assert_eq!(n, 0);
    // And it stays left after reconnecting.
    let mut a = server.connect(1, "a").await;
    send_room(&mut b, "r", "still left").await;
    a.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn create_room_joins_the_creator_and_refuses_duplicates_and_bad_names() {
    let server = TestServer::start().await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut a_other = server.connect_on_shard(1, "a", 1).await;
    a.send(json!({"type": "create_room", "room": "team-1.b_x", "ref": 5}))
        .await;
    let created = a.recv_type("room_created").await;
    assert_eq!(
        created["data"],
        json!({"room": "team-1.b_x", "visibility": "public"})
    );
    assert_eq!(created["ref"], 5);
    // The creator is a member on every connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = send_room(&mut a, "team-1.b_x", "first").await;
    assert_eq!(a_other.recv_type("message").await["data"]["id"], id);

    let mut b = server.connect(2, "b").await;
    b.send(json!({"type": "create_room", "room": "team-1.b_x"}))
        .await;
    assert!(error_text(&mut b).await.contains("already exists"));
    for bad in ["with space", "café", "a/b", &"x".repeat(65)] {
        b.send(json!({"type": "create_room", "room": bad})).await;
        let e = error_text(&mut b).await;
        assert!(e.contains("room name"), "{bad}: {e}");
    }
    b.join("team-1.b_x").await;
}

#[tokio::test]
async fn client_room_creation_can_be_disabled() {
    let server = TestServer::start_with(|c| c.no_client_room_create = true).await;
    let mut a = server.connect(1, "a").await;
    a.send(json!({"type": "create_room", "room": "mine"})).await;
    assert!(error_text(&mut a).await.contains("disabled"));
    let n = server.count("SELECT count(*) FROM rooms").await;
    assert_eq!(n, 0);
}

#[tokio::test]
async fn own_messages_are_not_unread() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect(1, "a").await;
    let mut b = server.connect(2, "b").await;
    a.join("r").await;
    b.join("r").await;
    for i in 0..3 {
        send_room(&mut a, "r", &format!("m{i}")).await;
        b.recv_type("message").await;
    }
    assert_eq!(rooms(&mut a).await[0]["unread"], 0);
    assert_eq!(rooms(&mut b).await[0]["unread"], 3);
    // b answers: one unread for a, none more for b.
    send_room(&mut b, "r", "reply").await;
    a.recv_type("message").await;
    assert_eq!(rooms(&mut a).await[0]["unread"], 1);
    assert_eq!(rooms(&mut b).await[0]["unread"], 3);
}

#[tokio::test]
async fn rooms_report_last_id_and_unread_and_read_only_moves_forward() {
    let server = TestServer::start().await;
    server.create_room("r1").await;
    server.create_room("r2").await;
    server.create_room("r3").await;
    let mut a = server.connect(1, "a").await;
    let mut b = server.connect(2, "b").await;
    for room in ["r1", "r2"] {
        a.join(room).await;
        b.join(room).await;
    }
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(send_room(&mut b, "r1", &format!("m{i}")).await);
        a.recv_type("message").await;
    }
    assert_eq!(
        rooms(&mut a).await,
        json!([
            {"room": "r1", "last_id": ids[2], "unread": 3},
            {"room": "r2", "last_id": null, "unread": 0}
        ])
    );
    a.send(json!({"type": "read", "room": "r1", "up_to": ids[1], "ref": "rd"}))
        .await;
    let ack = a.recv_type("read_ack").await;
    assert_eq!(ack["data"], json!({"room": "r1", "up_to": ids[1]}));
    assert_eq!(ack["ref"], "rd");
    assert_eq!(rooms(&mut a).await[0]["unread"], 1);
    // Backwards is ignored; past the newest message is capped to it.
    a.send(json!({"type": "read", "room": "r1", "up_to": ids[0]}))
        .await;
    assert_eq!(a.recv_type("read_ack").await["data"]["up_to"], ids[1]);
    a.send(json!({"type": "read", "room": "r1", "up_to": 1_000_000_000_000i64}))
        .await;
    assert_eq!(a.recv_type("read_ack").await["data"]["up_to"], ids[2]);
    let later = send_room(&mut b, "r1", "later").await;
    a.recv_type("message").await;
    let r: Value = rooms(&mut a).await;
    assert_eq!(r[0], json!({"room": "r1", "last_id": later, "unread": 1}));
    // b never read, but b sent all four: its own messages are not unread.
    assert_eq!(rooms(&mut b).await[0]["unread"], 0);
    a.send(json!({"type": "read", "room": "r3", "up_to": 1}))
        .await;
    assert!(error_text(&mut a).await.contains("not a member"));
}
