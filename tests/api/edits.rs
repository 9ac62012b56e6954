//! Issue 14: edits and deletes as events of the message's stream: live on
//! both shards and in DMs, replayed exactly once by `join` + `since` and
//! `dm_sync`, history in current state (tombstones, `edited_at`), the
//! deleted content gone from every response and from the `messages` table,
//! idempotent retries, errors that leak nothing, unread counts of messages
//! only.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Client, TestServer};

/// Sends and returns the id of the sender's own copy (the first `message`
/// whose content is `content`; other frames are skipped).
async fn send_room(c: &mut Client, room: &str, content: &str) -> i64 {
    c.send(json!({"type": "message", "room": room, "content": content}))
        .await;
    loop {
        let m = c.recv().await;
        if m["type"] == "message" && m["data"]["content"] == content {
            return m["data"]["id"].as_i64().unwrap();
        }
    }
}

async fn send_dm(c: &mut Client, to: i64, content: &str) -> i64 {
    c.send(json!({"type": "dm", "to": to, "content": content}))
        .await;
    loop {
        let m = c.recv_type("dm").await;
        if m["data"]["content"] == content {
            return m["data"]["id"].as_i64().unwrap();
        }
    }
}

/// Sends `request` and returns the next frame (its answer).
async fn ask(c: &mut Client, request: Value) -> Value {
    c.send(request).await;
    c.recv().await
}

fn error_text(v: &Value) -> &str {
    assert_eq!(v["type"], "error", "expected an error: {v}");
    v["data"]["message"].as_str().unwrap()
}

/// Receives frames until one satisfies `last`; returns them all (it included).
async fn recv_until(c: &mut Client, last: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let v = c.recv().await;
        let done = last(&v);
        got.push(v);
        if done {
            return got;
        }
    }
}

/// Rows of `messages` still holding `needle` in their content.
async fn stored_with(server: &TestServer, needle: &str) -> i64 {
    let db = server.db().await;
    db.query_one(
        "SELECT count(*) FROM messages WHERE position($1 in content) > 0",
        &[&needle],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn an_edit_and_a_delete_reach_members_on_both_shards() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    let mut a2 = server.connect_on_shard(1, "a", 1).await;
    a.join("r").await;
    b.join("r").await;
    let id = send_room(&mut a, "r", "secret-one").await;
    b.recv_type("message").await;
    a2.recv_type("message").await;

    let own = ask(
        &mut a,
        json!({"type": "edit", "id": id, "content": "secret-two", "ref": 7}),
    )
    .await;
    assert_eq!(own["type"], "message_edited", "{own}");
    assert_eq!(own["ref"], 7);
    let edit_id = own["data"]["id"].as_i64().unwrap();
    assert!(edit_id > id, "an event has its own, later id");
    assert_eq!(own["data"]["target"], id);
    assert_eq!(own["data"]["room"], "r");
    assert_eq!(own["data"]["fromUser"], 1);
    assert_eq!(own["data"]["content"], "secret-two");
    assert!(own["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
    for c in [&mut b, &mut a2] {
        let seen = c.recv_type("message_edited").await;
        assert!(
            seen.get("ref").is_none(),
            "only the sender's copy has the ref"
        );
        assert_eq!(seen["data"], own["data"]);
    }

    let own = ask(&mut a, json!({"type": "delete", "id": id, "ref": "d"})).await;
    assert_eq!(own["type"], "message_deleted", "{own}");
    assert_eq!(own["ref"], "d");
    let delete_id = own["data"]["id"].as_i64().unwrap();
    assert!(delete_id > edit_id);
    assert_eq!(
        own["data"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["by", "id", "room", "target", "timestamp"]
    );
    assert_eq!(own["data"]["by"], 1);
    assert_eq!(own["data"]["target"], id);
    for c in [&mut b, &mut a2] {
        let seen = c.recv_type("message_deleted").await;
        assert_eq!(seen["data"], own["data"]);
    }

    // The content is erased from storage: the message's and its edit's.
    assert_eq!(stored_with(&server, "secret-").await, 0);
    let db = server.db().await;
    let rows = db
        .query(
            "SELECT id, kind, target, deleted, content FROM messages ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(i64, i16, Option<i64>, bool, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        rows,
        [
            (id, 0, None, true, String::new()),
            (edit_id, 1, Some(id), true, String::new()),
            (delete_id, 2, Some(id), false, String::new()),
        ]
    );
}

#[tokio::test]
async fn dm_edits_and_deletes_reach_both_users_on_both_shards() {
    let server = TestServer::start().await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    let id = send_dm(&mut a, 2, "hush-1").await;
    b.recv_type("dm").await;

    let own = ask(
        &mut a,
        json!({"type": "edit", "id": id, "content": "hush-2", "ref": 1}),
    )
    .await;
    assert_eq!(own["type"], "message_edited", "{own}");
    assert_eq!(own["data"]["to"], 2);
    assert!(own["data"].get("room").is_none());
    let seen = b.recv_type("message_edited").await;
    assert_eq!(seen["data"], own["data"]);

    // The recipient can see the DM but may neither edit nor delete it.
    let refused = ask(
        &mut b,
        json!({"type": "edit", "id": id, "content": "mine now"}),
    )
    .await;
    assert_eq!(
        error_text(&refused),
        format!("only its author can edit message {id}")
    );
    let refused = ask(&mut b, json!({"type": "delete", "id": id})).await;
    assert_eq!(
        error_text(&refused),
        format!("only its author can delete message {id}")
    );

    let own = ask(&mut a, json!({"type": "delete", "id": id})).await;
    assert_eq!(own["type"], "message_deleted", "{own}");
    assert_eq!(own["data"]["to"], 2);
    assert_eq!(own["data"]["by"], 1);
    let seen = b.recv_type("message_deleted").await;
    assert_eq!(seen["data"], own["data"]);
    assert_eq!(stored_with(&server, "hush-").await, 0);

    // A third user cannot tell the DM from a missing message.
    let mut c = server.connect(3, "c").await;
    for request in [
        json!({"type": "edit", "id": id, "content": "x"}),
        json!({"type": "delete", "id": id}),
    ] {
        let refused = ask(&mut c, request).await;
        assert_eq!(error_text(&refused), format!("message {id} does not exist"));
    }
}

/// `join` + `since` replays the messages and the edit/delete events after
/// `since` in id order, each once; a message deleted meanwhile comes as its
/// tombstone, then its delete event; the deleted content never appears.
#[tokio::test]
async fn join_since_replays_edits_and_deletes_exactly_once() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    a.join("r").await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    b.join("r").await;
    let m0 = send_room(&mut a, "r", "before").await;
    b.recv_type("message").await;
    b.close().await;

    // While b is away.
    let m1 = send_room(&mut a, "r", "gone-soon").await;
    let m2 = send_room(&mut a, "r", "typo").await;
    a.send(json!({"type": "edit", "id": m0, "content": "before, fixed"}))
        .await;
    let e0 = a.recv_type("message_edited").await["data"]["id"]
        .as_i64()
        .unwrap();
    a.send(json!({"type": "delete", "id": m1})).await;
    let d1 = a.recv_type("message_deleted").await["data"]["id"]
        .as_i64()
        .unwrap();
    a.send(json!({"type": "edit", "id": m2, "content": "fixed"}))
        .await;
    let e2 = a.recv_type("message_edited").await["data"]["id"]
        .as_i64()
        .unwrap();

    let mut b = server.connect_on_shard(2, "b", 1).await;
    b.send(json!({"type": "join", "room": "r", "since": m0}))
        .await;
    let ack = b.recv_type("join_ack").await;
    assert_eq!(ack["data"]["recovered"], true, "{ack}");
    let got = recv_until(&mut b, |v| v["data"]["id"] == e2).await;
    let ids: Vec<i64> = got
        .iter()
        .map(|v| v["data"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [m1, m2, e0, d1, e2],
        "every row after since, once, in id order"
    );
    let kinds: Vec<&str> = got.iter().map(|v| v["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "message_edited",
            "message_deleted",
            "message_edited"
        ]
    );
    assert_eq!(got[0]["data"]["deleted"], true, "a tombstone: {}", got[0]);
    assert!(got[0]["data"].get("content").is_none());
    assert_eq!(got[1]["data"]["content"], "fixed", "current state");
    assert!(got[1]["data"]["edited_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(got[2]["data"]["target"], m0);
    assert_eq!(got[2]["data"]["content"], "before, fixed");
    assert_eq!(got[3]["data"]["target"], m1);
    assert_eq!(got[4]["data"]["target"], m2);
    for v in &got {
        assert!(!v.to_string().contains("gone-soon"), "{v}");
    }
    b.expect_nothing(Duration::from_millis(200)).await;

    // Live events after the replay arrive once too.
    a.send(json!({"type": "delete", "id": m2})).await;
    let d2 = a.recv_type("message_deleted").await["data"]["id"]
        .as_i64()
        .unwrap();
    assert_eq!(b.recv_type("message_deleted").await["data"]["id"], d2);
    b.expect_nothing(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn dm_sync_replays_edits_and_deletes_exactly_once() {
    let server = TestServer::start().await;
    server.connect(2, "b").await.close().await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let m0 = send_dm(&mut a, 2, "old").await;
    let m1 = send_dm(&mut a, 2, "private-detail").await;
    let e0 = ask(
        &mut a,
        json!({"type": "edit", "id": m0, "content": "old, fixed"}),
    )
    .await;
    let e0 = e0["data"]["id"].as_i64().unwrap();
    let d1 = ask(&mut a, json!({"type": "delete", "id": m1})).await;
    assert_eq!(d1["type"], "message_deleted", "{d1}");
    let d1 = d1["data"]["id"].as_i64().unwrap();

    let mut b = server.connect_on_shard(2, "b", 1).await;
    b.send(json!({"type": "dm_sync", "since": m0})).await;
    let ack = b.recv_type("dm_sync_ack").await;
    assert_eq!(ack["data"]["recovered"], true);
    let got = recv_until(&mut b, |v| v["data"]["id"] == d1).await;
    let ids: Vec<i64> = got
        .iter()
        .map(|v| v["data"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [m1, e0, d1]);
    assert_eq!(got[0]["type"], "dm");
    assert_eq!(got[0]["data"]["deleted"], true);
    assert_eq!(got[1]["type"], "message_edited");
    assert_eq!(got[1]["data"]["content"], "old, fixed");
    assert_eq!(got[2]["type"], "message_deleted");
    for v in &got {
        assert!(!v.to_string().contains("private-detail"), "{v}");
    }
    b.expect_nothing(Duration::from_millis(200)).await;

    // The sender's sync from 0, on a new connection, replays every row once.
    a.close().await;
    let mut a = server.connect_on_shard(1, "a", 1).await;
    a.send(json!({"type": "dm_sync", "since": 0})).await;
    a.recv_type("dm_sync_ack").await;
    let got = recv_until(&mut a, |v| v["data"]["id"] == d1).await;
    let ids: Vec<i64> = got
        .iter()
        .map(|v| v["data"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [m0, m1, e0, d1]);
    assert_eq!(got[0]["data"]["content"], "old, fixed");
    assert_eq!(stored_with(&server, "private-detail").await, 0);
}

#[tokio::test]
async fn history_returns_messages_in_their_current_state_without_events() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect(1, "a").await;
    a.join("r").await;
    let m0 = send_room(&mut a, "r", "first").await;
    let m1 = send_room(&mut a, "r", "classified").await;
    let m2 = send_room(&mut a, "r", "third").await;
    ask(
        &mut a,
        json!({"type": "edit", "id": m0, "content": "first!"}),
    )
    .await;
    ask(
        &mut a,
        json!({"type": "edit", "id": m1, "content": "still classified"}),
    )
    .await;
    ask(&mut a, json!({"type": "delete", "id": m1})).await;

    let h = ask(&mut a, json!({"type": "room_history", "room": "r"})).await;
    assert_eq!(h["type"], "room_history", "{h}");
    let entries = h["data"].as_array().unwrap();
    let ids: Vec<i64> = entries.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [m0, m1, m2], "events are not history entries");
    assert_eq!(entries[0]["content"], "first!");
    assert!(entries[0]["edited_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(entries[1]["deleted"], true);
    assert!(entries[1].get("content").is_none());
    assert!(entries[1].get("edited_at").is_none());
    assert!(entries[2].get("edited_at").is_none());
    assert!(entries[2].get("deleted").is_none());
    assert!(!h.to_string().contains("classified"));
    // A limit counts messages, not events.
    let h = ask(
        &mut a,
        json!({"type": "room_history", "room": "r", "limit": 2}),
    )
    .await;
    let ids: Vec<i64> = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [m1, m2]);
    let h = ask(
        &mut a,
        json!({"type": "room_history", "room": "r", "after": m0}),
    )
    .await;
    let ids: Vec<i64> = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [m1, m2]);

    server.connect(2, "b").await.close().await;
    let d0 = send_dm(&mut a, 2, "dm one").await;
    let d1 = send_dm(&mut a, 2, "dm two").await;
    ask(
        &mut a,
        json!({"type": "edit", "id": d0, "content": "dm one!"}),
    )
    .await;
    ask(&mut a, json!({"type": "delete", "id": d1})).await;
    let mut b = server.connect(2, "b").await;
    let h = ask(&mut b, json!({"type": "dm_history", "with": 1})).await;
    let entries = h["data"].as_array().unwrap();
    let ids: Vec<i64> = entries.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [d0, d1]);
    assert_eq!(entries[0]["content"], "dm one!");
    assert!(entries[0]["edited_at"].is_string());
    assert_eq!(entries[1]["deleted"], true);
    assert!(!h.to_string().contains("dm two"));
}

#[tokio::test]
async fn edit_and_delete_retries_with_a_client_id_return_the_original_event() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    a.join("r").await;
    b.join("r").await;
    let id = send_room(&mut a, "r", "draft").await;
    b.recv_type("message").await;

    let edit = json!({"type": "edit", "id": id, "content": "final", "client_id": "e-1", "ref": 1});
    let first = ask(&mut a, edit.clone()).await;
    assert_eq!(first["type"], "message_edited", "{first}");
    b.recv_type("message_edited").await;
    let mut retry = edit.clone();
    retry["ref"] = json!(2);
    // A retry, even with other content, from another connection of the user.
    retry["content"] = json!("final, again");
    let mut a2 = server.connect_on_shard(1, "a", 1).await;
    let again = ask(&mut a2, retry).await;
    assert_eq!(again["type"], "message_edited", "{again}");
    assert_eq!(again["ref"], 2);
    assert_eq!(again["data"], first["data"], "the original event");

    let delete = json!({"type": "delete", "id": id, "client_id": "d-1"});
    let first = ask(&mut a, delete.clone()).await;
    assert_eq!(first["type"], "message_deleted", "{first}");
    b.recv_type("message_deleted").await;
    let again = ask(&mut a, delete).await;
    assert_eq!(
        again["type"], "message_deleted",
        "a retry is not an error: {again}"
    );
    assert_eq!(again["data"], first["data"]);
    b.expect_nothing(Duration::from_millis(200)).await;
    assert_eq!(
        server
            .count("SELECT count(*) FROM messages WHERE kind <> 0")
            .await,
        2,
        "one row per event"
    );
    // A retried edit after the delete still answers its event, without content.
    let again = ask(&mut a, edit).await;
    assert_eq!(again["type"], "message_edited", "{again}");
    assert!(again["data"].get("content").is_none(), "{again}");
}

#[tokio::test]
async fn edits_and_deletes_refused_without_leaking() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    server.create_room("hidden").await;
    let mut a = server.connect(1, "a").await;
    let mut b = server.connect(2, "b").await;
    a.join("r").await;
    a.join("hidden").await;
    b.join("r").await;
    let mine = send_room(&mut a, "r", "mine").await;
    let secret = send_room(&mut a, "hidden", "not for b").await;
    let event = ask(
        &mut a,
        json!({"type": "edit", "id": mine, "content": "mine!"}),
    )
    .await;
    let event = event["data"]["id"].as_i64().unwrap();
    while b.recv().await["type"] != "message_edited" {}

    let missing = 987_654_321;
    for (id, request) in [
        (
            missing,
            json!({"type": "edit", "id": missing, "content": "x"}),
        ),
        (missing, json!({"type": "delete", "id": missing})),
        (
            secret,
            json!({"type": "edit", "id": secret, "content": "x"}),
        ),
        (secret, json!({"type": "delete", "id": secret})),
        (event, json!({"type": "delete", "id": event})),
    ] {
        let refused = ask(&mut b, request).await;
        assert_eq!(error_text(&refused), format!("message {id} does not exist"));
    }
    // An event is not a message, for its author either.
    let refused = ask(&mut a, json!({"type": "edit", "id": event, "content": "x"})).await;
    assert_eq!(
        error_text(&refused),
        format!("message {event} does not exist")
    );

    let refused = ask(
        &mut b,
        json!({"type": "edit", "id": mine, "content": "hijack"}),
    )
    .await;
    assert_eq!(
        error_text(&refused),
        format!("only its author can edit message {mine}")
    );
    let refused = ask(&mut b, json!({"type": "delete", "id": mine})).await;
    assert_eq!(
        error_text(&refused),
        format!("only its author or an owner or moderator of room 'r' can delete message {mine}")
    );
    let refused = ask(&mut a, json!({"type": "edit", "id": mine, "content": ""})).await;
    assert_eq!(error_text(&refused), "content must not be empty");

    ask(&mut a, json!({"type": "delete", "id": mine})).await;
    b.recv_type("message_deleted").await;
    let refused = ask(
        &mut a,
        json!({"type": "edit", "id": mine, "content": "back"}),
    )
    .await;
    assert_eq!(
        error_text(&refused),
        format!("message {mine} is deleted and cannot be edited")
    );
    let refused = ask(&mut a, json!({"type": "delete", "id": mine, "ref": 3})).await;
    assert_eq!(refused["ref"], 3);
    assert_eq!(
        error_text(&refused),
        format!("message {mine} is already deleted")
    );

    // After leaving, the author changes nothing until it joins again.
    let kept = send_room(&mut a, "hidden", "kept").await;
    a.send(json!({"type": "leave", "room": "hidden"})).await;
    a.recv_type("leave_ack").await;
    for request in [
        json!({"type": "edit", "id": kept, "content": "x"}),
        json!({"type": "delete", "id": kept}),
    ] {
        let refused = ask(&mut a, request).await;
        assert_eq!(
            error_text(&refused),
            format!("join room 'hidden' before changing message {kept} in it")
        );
    }
    a.join("hidden").await;
    let done = ask(&mut a, json!({"type": "delete", "id": kept})).await;
    assert_eq!(done["type"], "message_deleted", "{done}");
    b.expect_nothing(Duration::from_millis(100)).await;
    assert_eq!(
        server
            .count("SELECT count(*) FROM messages WHERE kind <> 0")
            .await,
        3,
        "nothing refused was stored"
    );
}

/// Two deletes of one message racing from two connections: one event is
/// stored; the other is refused (by the session's check or by the
/// writer's re-check in the transaction), with the same error.
#[tokio::test]
async fn racing_deletes_store_one_event() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut a2 = server.connect_on_shard(1, "a", 1).await;
    a.join("r").await;
    for round in 0..5 {
        let id = send_room(&mut a, "r", &format!("m{round}")).await;
        a2.recv_type("message").await;
        a.send(json!({"type": "delete", "id": id})).await;
        a2.send(json!({"type": "delete", "id": id})).await;
        // Each connection gets the one stored event live; one of the two
        // requests is refused, in either order with it.
        let (mut deleted, mut refused) = (0, 0);
        for c in [&mut a, &mut a2] {
            loop {
                let v = match tokio::time::timeout(Duration::from_millis(300), c.recv()).await {
                    Ok(v) => v,
                    Err(_) => break,
                };
                match v["type"].as_str().unwrap() {
                    "message_deleted" => deleted += 1,
                    "error" => {
                        assert_eq!(error_text(&v), format!("message {id} is already deleted"));
                        refused += 1;
                    }
                    other => panic!("unexpected {other}: {v}"),
                }
            }
        }
        assert_eq!((deleted, refused), (2, 1), "round {round}");
        assert_eq!(
            server
                .count(&format!(
                    "SELECT count(*) FROM messages WHERE kind = 2 AND target = {id}"
                ))
                .await,
            1
        );
    }
}

#[tokio::test]
async fn unread_counts_messages_only_and_last_id_is_the_newest_message() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect(1, "a").await;
    let mut b = server.connect(2, "b").await;
    a.join("r").await;
    b.join("r").await;
    let read = send_room(&mut a, "r", "read").await;
    b.send(json!({"type": "read", "room": "r", "up_to": read}))
        .await;
    b.recv_type("message").await;
    b.recv_type("read_ack").await;
    let m1 = send_room(&mut a, "r", "one").await;
    let m2 = send_room(&mut a, "r", "two").await;
    let m3 = send_room(&mut a, "r", "three").await;
    while b.recv().await["data"]["id"] != m3 {}
    let rooms = ask(&mut b, json!({"type": "rooms"})).await;
    assert_eq!(
        rooms["data"],
        json!([{"room": "r", "last_id": m3, "unread": 3}]),
        "{rooms}"
    );

    ask(&mut a, json!({"type": "edit", "id": m1, "content": "one!"})).await;
    ask(&mut a, json!({"type": "delete", "id": m2})).await;
    ask(&mut a, json!({"type": "delete", "id": m3})).await;
    loop {
        let v = b.recv().await;
        if v["type"] == "message_deleted" && v["data"]["target"] == m3 {
            break;
        }
    }
    let rooms = ask(&mut b, json!({"type": "rooms"})).await;
    assert_eq!(
        rooms["data"],
        json!([{"room": "r", "last_id": m3, "unread": 1}]),
        "events and deleted messages are not unread; last_id is the newest message, deleted or not"
    );
}

/// The writer's re-check, deterministic: one batch deletes a message twice
/// and then edits it. The first delete is stored; the second and the edit
/// find it deleted (inside the transaction) and store nothing. The same
/// batch retried with the same ids (a lost commit answer) stores nothing
/// again and tells the same fates.
#[tokio::test]
async fn the_writer_refuses_an_event_whose_target_was_deleted_first() {
    use std::sync::Arc;
    use std::time::Instant;

    use chat_server::protocol::{Kind, Target};
    use chat_server::router::Origin;
    use chat_server::store::writer::{BatchInserter, Fate, PersistRequest};

    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect(1, "a").await;
    a.join("r").await;
    let id = send_room(&mut a, "r", "doomed").await;

    let event = |kind: Kind, content: &str| PersistRequest {
        target: Target::Room(Arc::from("r")),
        from: 1,
        username: Arc::from("a"),
        content: content.to_owned(),
        origin: Origin { shard: 0, conn: 0 },
        enqueued: Instant::now(),
        reference: None,
        client_id: None,
        kind,
        reply: None,
    };
    let batch = [
        event(Kind::Delete { target: id }, ""),
        event(Kind::Delete { target: id }, ""),
        event(Kind::Edit { target: id }, "revived"),
    ];
    let mut w = BatchInserter::connect(&server.db_url).await.unwrap();
    let ids = w.reserve_ids(3).await.unwrap();
    let at = chrono::Utc::now();
    let want = [
        Fate::Stored,
        Fate::Refused(format!("message {id} is already deleted")),
        Fate::Refused(format!("message {id} is deleted and cannot be edited")),
    ];
    assert_eq!(w.insert_with_events(&batch, &ids, at).await.unwrap(), want);
    assert_eq!(
        w.insert_with_events(&batch, &ids, at).await.unwrap(),
        want,
        "a retry with the same ids"
    );
    let db = server.db().await;
    let rows: Vec<(i64, i16)> = db
        .query("SELECT id, kind FROM messages ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [(id, 0), (ids[0], 2)]);
    assert_eq!(stored_with(&server, "doomed").await, 0);
    assert_eq!(stored_with(&server, "revived").await, 0);
}

/// A member rejoins with `since` while the author keeps sending, editing
/// and deleting, on both shards: every row of the room after `since`
/// (messages, edits, deletes) reaches it exactly once, the replay in id
/// order before later live rows, and nothing deleted while it was away
/// shows its content.
#[tokio::test]
async fn a_rejoin_under_edits_and_deletes_gets_every_row_once() {
    let server = TestServer::start_with(|c| {
        c.replay_page = 7;
        c.replay_page_bytes = 400;
    })
    .await;
    server.create_room("r").await;
    let mut s0 = server.connect_on_shard(1, "s0", 0).await;
    let mut s1 = server.connect_on_shard(2, "s1", 1).await;
    let mut reader = server.connect(10, "reader").await;
    for c in [&mut s0, &mut s1, &mut reader] {
        c.join("r").await;
    }
    let seen = send_room(&mut s0, "r", "before").await;
    assert_eq!(reader.recv_type("message").await["data"]["id"], seen);
    reader.close().await;

    // While away: messages on both shards, a third deleted, the rest edited.
    for i in 0..12 {
        let (c, gone) = if i % 2 == 0 {
            (&mut s0, "gone")
        } else {
            (&mut s1, "kept")
        };
        let id = send_room(c, "r", &format!("{gone}-{i}")).await;
        let request = if i % 3 == 0 {
            json!({"type": "delete", "id": id})
        } else {
            json!({"type": "edit", "id": id, "content": format!("edited-{i}")})
        };
        c.send(request).await;
        loop {
            let v = c.recv().await;
            if v["data"]["target"] == id {
                break;
            }
        }
    }
    // During the rejoin: the author sends, edits and deletes on.
    let traffic = tokio::spawn(async move {
        for i in 0..40 {
            let id = send_room(&mut s0, "r", &format!("live-{i}")).await;
            let request = if i % 2 == 0 {
                json!({"type": "edit", "id": id, "content": format!("live-{i}!")})
            } else {
                json!({"type": "delete", "id": id})
            };
            s0.send(request).await;
            loop {
                let v = s0.recv().await;
                if v["data"]["target"] == id {
                    break;
                }
            }
        }
        send_room(&mut s0, "r", "end").await;
        s0
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut reader = server.connect(10, "reader").await;
    reader
        .send(json!({"type": "join", "room": "r", "since": seen}))
        .await;
    let frames = recv_until(&mut reader, |v| v["data"]["content"] == "end").await;
    traffic.await.unwrap();

    let ack_at = frames
        .iter()
        .position(|v| v["type"] == "join_ack")
        .expect("join_ack");
    assert_eq!(frames[ack_at]["data"]["recovered"], true);
    let id_of = |v: &Value| v["data"]["id"].as_i64().unwrap();
    let rows: Vec<&Value> = frames.iter().filter(|v| v["type"] != "join_ack").collect();
    let got: Vec<i64> = rows.iter().map(|v| id_of(v)).collect();
    let unique: std::collections::BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no duplicate: {got:?}");
    let db = server.db().await;
    let stored: std::collections::BTreeSet<i64> = db
        .query(
            "SELECT id FROM messages WHERE room = 'r' AND id > $1",
            &[&seen],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(unique, stored, "every row after since, no gap");
    let before_ack: Vec<i64> = frames[..ack_at].iter().map(id_of).collect();
    let after_ack: Vec<i64> = frames[ack_at + 1..].iter().map(id_of).collect();
    assert!(before_ack.windows(2).all(|w| w[0] < w[1]), "{before_ack:?}");
    let first_live = before_ack.first().copied().unwrap_or(i64::MAX);
    let (replay, live): (Vec<i64>, Vec<i64>) = after_ack.iter().partition(|&&id| id < first_live);
    assert!(replay.windows(2).all(|w| w[0] < w[1]), "{replay:?}");
    assert!(live.windows(2).all(|w| w[0] < w[1]), "{live:?}");
    assert_eq!(
        after_ack[..replay.len()],
        replay[..],
        "the replay comes first"
    );
    for v in &frames {
        assert!(!v.to_string().contains("gone-"), "deleted while away: {v}");
    }
    assert_eq!(stored_with(&server, "gone-").await, 0);
}

/// The one delete rule (`rooms::rules::may_delete`) with roles: a plain
/// member cannot delete another's message, a moderator (and an owner) of
/// the room can; the event names the moderator in `by`, and the content is
/// gone from storage.
#[tokio::test]
async fn owners_and_moderators_delete_any_message_of_their_room() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    let mut moderator = server.connect_on_shard(2, "moderator", 1).await;
    let mut author = server.connect_on_shard(3, "author", 0).await;
    let created = ask(&mut owner, json!({"type": "create_room", "room": "modded"})).await;
    assert_eq!(created["type"], "room_created", "{created}");
    for c in [&mut moderator, &mut author] {
        c.send(json!({"type": "join", "room": "modded"})).await;
        c.recv_type("join_ack").await;
    }
    let target = send_room(&mut author, "modded", "rude words").await;
    let is_reply = |v: &Value| matches!(v["type"].as_str(), Some("error" | "message_deleted"));

    // A plain member may not.
    moderator
        .send(json!({"type": "delete", "id": target, "ref": "d1"}))
        .await;
    let got = recv_until(&mut moderator, is_reply).await;
    let refused = got.last().unwrap();
    assert_eq!(refused["ref"], "d1", "{refused}");
    assert!(
        error_text(refused).contains("owner or moderator"),
        "{refused}"
    );

    // Made a moderator, it may.
    owner
        .send(json!({"type": "set_role", "room": "modded", "user": 2, "role": "moderator"}))
        .await;
    recv_until(&mut owner, |v| v["type"] == "set_role_ack").await;
    moderator
        .send(json!({"type": "delete", "id": target, "ref": "d2"}))
        .await;
    let got = recv_until(&mut moderator, is_reply).await;
    let deleted = got.last().unwrap();
    assert_eq!(deleted["type"], "message_deleted", "{deleted}");
    assert_eq!(deleted["data"]["target"], target);
    assert_eq!(deleted["data"]["by"], 2);
    let seen = recv_until(&mut author, |v| v["type"] == "message_deleted").await;
    assert_eq!(seen.last().unwrap()["data"]["by"], 2);
    assert_eq!(stored_with(&server, "rude words").await, 0);

    // The owner may too.
    let second = send_room(&mut author, "modded", "more rude words").await;
    owner
        .send(json!({"type": "delete", "id": second, "ref": "d3"}))
        .await;
    // Its reply by `ref`: the moderator's delete above reached it too.
    let got = recv_until(&mut owner, |v| v["ref"] == "d3").await;
    assert_eq!(got.last().unwrap()["type"], "message_deleted");
    assert_eq!(stored_with(&server, "more rude words").await, 0);
}

/// A muted member may not edit its messages in the room (an edit is a
/// message to the room), but may still delete them.
#[tokio::test]
async fn a_muted_member_cannot_edit_but_can_delete_its_messages() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    let mut author = server.connect_on_shard(2, "author", 1).await;
    let created = ask(&mut owner, json!({"type": "create_room", "room": "quiet"})).await;
    assert_eq!(created["type"], "room_created", "{created}");
    author.join("quiet").await;
    let id = send_room(&mut author, "quiet", "before the mute").await;
    owner
        .send(json!({"type": "mute", "room": "quiet", "user": 2}))
        .await;
    recv_until(&mut owner, |v| v["type"] == "mute_ack").await;
    // The mute reaches the author's shard through its inbox: wait for it.
    let mut refused = Value::Null;
    for _ in 0..50 {
        author
            .send(json!({"type": "edit", "id": id, "content": "after", "ref": "e"}))
            .await;
        let got = recv_until(&mut author, |v| {
            v["ref"] == "e" || v["type"] == "message_edited"
        })
        .await;
        refused = got.last().unwrap().clone();
        if refused["type"] == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        error_text(&refused),
        "you are muted in room 'quiet'",
        "{refused}"
    );
    author
        .send(json!({"type": "delete", "id": id, "ref": "d"}))
        .await;
    let got = recv_until(&mut author, |v| v["ref"] == "d").await;
    assert_eq!(got.last().unwrap()["type"], "message_deleted", "{got:?}");
    assert_eq!(stored_with(&server, "before the mute").await, 0);
}
