//! Room and DM delivery across shards: members only, sender echo, every
//! connection of a user, and registration before the socket opens.

use std::time::Duration;

use serde_json::json;

use crate::helpers::TestServer;

#[tokio::test]
async fn room_message_reaches_every_member_on_both_shards_and_no_one_else() {
    let server = TestServer::start().await;
    server.create_room("general").await;
    let mut a0 = server.connect_on_shard(1, "a", 0).await;
    let mut b1 = server.connect_on_shard(2, "b", 1).await;
    let mut c0 = server.connect_on_shard(3, "c", 0).await;
    let mut d1 = server.connect_on_shard(4, "d", 1).await;
    let mut outsider0 = server.connect_on_shard(5, "out0", 0).await;
    let mut outsider1 = server.connect_on_shard(6, "out1", 1).await;
    for c in [&mut a0, &mut b1, &mut c0, &mut d1] {
        c.join("general").await;
    }
    a0.send(json!({"type": "message", "room": "general", "content": "hello all"}))
        .await;
    let mut ids = Vec::new();
    for c in [&mut a0, &mut b1, &mut c0, &mut d1] {
        let m = c.recv_type("message").await;
        let d = &m["data"];
        assert_eq!(d["room"], "general");
        assert_eq!(d["content"], "hello all");
        assert_eq!(d["fromUser"], 1);
        assert_eq!(d["username"], "a");
        let ts = d["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z'), "{ts}");
        chrono::DateTime::parse_from_rfc3339(ts).unwrap();
        ids.push(d["id"].as_i64().unwrap());
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one id for everyone: {ids:?}"
    );
    outsider0.expect_nothing(Duration::from_millis(300)).await;
    outsider1.expect_nothing(Duration::from_millis(100)).await;

    // Sent from the other shard too.
    d1.send(json!({"type": "message", "room": "general", "content": "back"}))
        .await;
    for c in [&mut a0, &mut b1, &mut c0, &mut d1] {
        let m = c.recv_type("message").await;
        assert_eq!(m["data"]["content"], "back");
        assert!(m["data"]["id"].as_i64().unwrap() > ids[0]);
    }
}

#[tokio::test]
async fn join_is_idempotent_and_missing_rooms_are_errors() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect(1, "a").await;
    a.join("r").await;
    a.join("r").await;
    a.send(json!({"type": "join", "room": "nowhere"})).await;
    let e = a.recv_type("error").await;
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{e}"
    );
    // Still usable, and joined once.
    a.send(json!({"type": "message", "room": "r", "content": "x"}))
        .await;
    a.recv_type("message").await;
    a.expect_nothing(Duration::from_millis(200)).await;
    let n = server
        .count("SELECT count(*) FROM room_members WHERE user_id = 1")
        .await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn every_connection_of_a_member_receives_and_membership_outlives_the_connection() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut first = server.connect_on_shard(1, "multi", 0).await;
    let mut second = server.connect_on_shard(1, "multi", 1).await;
    // Joining on one connection subscribes the user's connections on both shards.
    first.join("r").await;
    let mut sender = server.connect(2, "s").await;
    sender.join("r").await;
    // No wait needed: the join announcement enters the other shard's inbox
    // before the ack is sent, and inboxes are FIFO.
    sender
        .send(json!({"type": "message", "room": "r", "content": "to both"}))
        .await;
    assert_eq!(
        first.recv_type("message").await["data"]["content"],
        "to both"
    );
    assert_eq!(
        second.recv_type("message").await["data"]["content"],
        "to both"
    );
    sender.recv_type("message").await;
    // A new connection of the user is already a member.
    first.close().await;
    second.close().await;
    let mut again = server.connect(1, "multi").await;
    again
        .send(json!({"type": "message", "room": "r", "content": "still here"}))
        .await;
    assert_eq!(
        again.recv_type("message").await["data"]["content"],
        "still here"
    );
}

#[tokio::test]
async fn dm_reaches_every_connection_of_both_users_and_unknown_users_are_errors() {
    let server = TestServer::start().await;
    let mut alice0 = server.connect_on_shard(1, "alice", 0).await;
    let mut alice1 = server.connect_on_shard(1, "alice", 1).await;
    let mut bob0 = server.connect_on_shard(2, "bob", 0).await;
    let mut bob1 = server.connect_on_shard(2, "bob", 1).await;
    let mut carol = server.connect(3, "carol").await;
    alice0
        .send(json!({"type": "dm", "to": 2, "content": "psst"}))
        .await;
    for c in [&mut alice0, &mut alice1, &mut bob0, &mut bob1] {
        let m = c.recv_type("dm").await;
        let d = &m["data"];
        assert_eq!(
            (d["fromUser"].as_i64(), d["to"].as_i64()),
            (Some(1), Some(2))
        );
        assert_eq!(d["username"], "alice");
        assert_eq!(d["content"], "psst");
        assert!(d["id"].is_i64());
        assert!(d.get("room").is_none());
    }
    carol.expect_nothing(Duration::from_millis(300)).await;

    alice1
        .send(json!({"type": "dm", "to": 999, "content": "hello?"}))
        .await;
    let e = alice1.recv_type("error").await;
    assert!(
        e["data"]["message"].as_str().unwrap().contains("999"),
        "{e}"
    );
    bob0.expect_nothing(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_dm_sent_right_after_the_recipient_connects_is_never_missed() {
    let server = TestServer::start().await;
    let mut sender = server.connect(1, "sender").await;
    // Make the recipients known users first (they exist in `users`).
    for id in 100..120 {
        server.connect(id, &format!("r{id}")).await.close().await;
    }
    for id in 100..120 {
        let mut recipient = server.connect(id, &format!("r{id}")).await;
        sender
            .send(json!({"type": "dm", "to": id, "content": format!("hi {id}")}))
            .await;
        let m = recipient.recv_type("dm").await;
        assert_eq!(m["data"]["content"], format!("hi {id}"));
        sender.recv_type("dm").await;
    }
}

#[tokio::test]
async fn unicode_and_escaping_round_trip_live_and_in_history() {
    let server = TestServer::start().await;
    server.create_room("ünï €").await;
    let mut a = server.connect(1, "zoë \"quoted\"").await;
    a.join("ünï €").await;
    let tricky = "héllo 🌍 \"quotes\" \\ back\\slash \n newline \t tab <script>alert(1)</script> \u{7f} 中文 \u{1F600}";
    a.send(json!({"type": "message", "room": "ünï €", "content": tricky}))
        .await;
    let m = a.recv_type("message").await;
    assert_eq!(m["data"]["content"], tricky);
    assert_eq!(m["data"]["username"], "zoë \"quoted\"");
    assert_eq!(m["data"]["room"], "ünï €");
    a.send(json!({"type": "room_history", "room": "ünï €"}))
        .await;
    let h = a.recv_type("room_history").await;
    assert_eq!(h["data"][0]["content"], tricky);
    assert_eq!(h["data"][0]["username"], "zoë \"quoted\"");
    assert_eq!(h["data"][0], m["data"]);
}
