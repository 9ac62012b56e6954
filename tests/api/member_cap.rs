//! Issue 16: a member's own `joined` and `left` reach only its own
//! connections in a room with more members online than
//! `--presence-max-members` (here 2, the member counted); moderation
//! events still reach everyone.

use serde_json::{json, Value};

use crate::helpers::{Client, TestServer};

/// Next `member` event with `action`, skipping every other frame.
async fn member_event(c: &mut Client, action: &str) -> Value {
    loop {
        let v = c.recv_any().await;
        if v["type"] == "member" && v["data"]["action"] == action {
            return v["data"].clone();
        }
    }
}

/// The `member` events `c` receives before the `message` with `content`.
async fn members_before(c: &mut Client, content: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let v = c.recv_any().await;
        if v["type"] == "message" && v["data"]["content"] == content {
            return seen;
        }
        if v["type"] == "member" {
            seen.push(v["data"].clone());
        }
    }
}

/// Sends `content` to `room`; the `member` events before its ack.
async fn say_collecting(c: &mut Client, room: &str, content: &str) -> Vec<Value> {
    c.send(json!({"type": "message", "room": room, "content": content, "ref": "s"}))
        .await;
    let mut seen = Vec::new();
    loop {
        let v = c.recv_any().await;
        if v["ref"] == "s" {
            assert_eq!(v["type"], "message", "{v}");
            return seen;
        }
        if v["type"] == "member" {
            seen.push(v["data"].clone());
        }
    }
}

async fn create(c: &mut Client, room: &str) {
    let v = c
        .ask(json!({"type": "create_room", "room": room, "visibility": "public"}))
        .await;
    assert_eq!(v["type"], "room_created", "{v}");
}

#[tokio::test]
async fn over_the_cap_joins_and_leaves_reach_only_the_members_own_connections() {
    let server = TestServer::start_with(|c| c.presence_max_members = 2).await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    create(&mut owner, "big").await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    b.join("big").await;
    // Two online, b counted: at the cap, the room is told.
    let e = member_event(&mut owner, "joined").await;
    assert_eq!(e["user"], 2, "{e}");

    // The newcomer's other connections, on the requester's shard and the other.
    let mut c_same = server.connect_on_shard(3, "c", 0).await;
    let mut c_other = server.connect_on_shard(3, "c", 1).await;
    let mut c = server.connect_on_shard(3, "c", 0).await;
    c.join("big").await;
    let joined = json!({"room": "big", "user": 3, "action": "joined", "by": 3});
    assert_eq!(member_event(&mut c_same, "joined").await, joined);
    assert_eq!(member_event(&mut c_other, "joined").await, joined);
    // Three online (over the cap) before the leave: again only its own.
    assert_eq!(
        c.ask(json!({"type": "leave", "room": "big"})).await["type"],
        "leave_ack"
    );
    let left = json!({"room": "big", "user": 3, "action": "left", "by": 3});
    assert_eq!(member_event(&mut c_same, "left").await, left);
    assert_eq!(member_event(&mut c_other, "left").await, left);

    // The other members heard of neither (each inbox had the events before
    // these messages, which were sent after the leave's ack).
    let at_owner = say_collecting(&mut owner, "big", "mark-1").await;
    assert_eq!(at_owner, Vec::<Value>::new(), "owner on shard 0");
    let at_b = members_before(&mut b, "mark-1").await;
    assert_eq!(at_b, Vec::<Value>::new(), "b on shard 1");

    // Back at the cap (owner and b, b counted before its leave): told.
    assert_eq!(
        b.ask(json!({"type": "leave", "room": "big"})).await["type"],
        "leave_ack"
    );
    let e = member_event(&mut owner, "left").await;
    assert_eq!(e["user"], 2, "{e}");
}

#[tokio::test]
async fn over_the_cap_kicks_and_bans_still_reach_every_member() {
    let server = TestServer::start_with(|c| c.presence_max_members = 2).await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    create(&mut owner, "big").await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    let mut c = server.connect_on_shard(3, "c", 0).await;
    let mut d = server.connect_on_shard(4, "d", 1).await;
    for m in [&mut b, &mut c, &mut d] {
        m.join("big").await;
    }
    owner
        .acked(
            json!({"type": "kick", "room": "big", "user": 3}),
            "kick_ack",
        )
        .await;
    for m in [&mut b, &mut c, &mut d] {
        let e = member_event(m, "kicked").await;
        assert_eq!(
            e,
            json!({"room": "big", "user": 3, "action": "kicked", "by": 1})
        );
    }
    owner
        .acked(json!({"type": "ban", "room": "big", "user": 4}), "ban_ack")
        .await;
    for m in [&mut b, &mut d] {
        let e = member_event(m, "banned").await;
        assert_eq!(
            (e["user"].clone(), e["by"].clone()),
            (json!(4), json!(1)),
            "{e}"
        );
    }
}
