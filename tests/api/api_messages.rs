//! Issue 15: the server API's message routes. A message posted through the
//! API is committed by the room's writer and delivered exactly like a
//! client's (same frame, same order among concurrent WebSocket messages,
//! recovered by `join` + `since`); a retried `client_id` answers the
//! original; DMs reach both users; edits (as the author) and deletes (as
//! the operator, `by: null`) reach clients and history; each appends its
//! feed event. And every route's errors.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::helpers::{Client, TestServer};
use crate::http::{self, code, Api};

async fn start() -> (TestServer, Api) {
    let server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    (server, api)
}

/// A user that never connected (a bot): a `users` row only.
async fn bot(server: &TestServer, id: i64, name: &str) {
    server
        .db()
        .await
        .execute(
            "INSERT INTO users (id, username) VALUES ($1, $2)",
            &[&id, &name],
        )
        .await
        .unwrap();
}

/// The next frame of type `kind` (other frames skipped).
async fn next_of(c: &mut Client, kind: &str) -> Value {
    loop {
        let v = c.recv().await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// Posts `content` to room `room` as `from` and returns the stored message.
async fn post(api: &Api, room: &str, from: i64, content: &str) -> Value {
    let (status, body) = api
        .post(
            &format!("/v1/rooms/{room}/messages"),
            &json!({"from_user": from, "content": content}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn every_message_route_needs_the_key() {
    let (server, api) = start().await;
    server.create_room("r").await;
    bot(&server, 90, "bot").await;
    let id = post(&api, "r", 90, "hello").await["id"].as_i64().unwrap();
    for key in [None, Some("wrong-key")] {
        let anon = api.with_key(key);
        let calls = [
            anon.post(
                "/v1/rooms/r/messages",
                &json!({"from_user": 90, "content": "x"}),
            )
            .await,
            anon.get("/v1/rooms/r/messages").await,
            anon.post(
                "/v1/dms",
                &json!({"from_user": 90, "to": 90, "content": "x"}),
            )
            .await,
            anon.patch(&format!("/v1/messages/{id}"), &json!({"content": "y"}))
                .await,
            anon.delete(&format!("/v1/messages/{id}"), None).await,
        ];
        for (status, body) in calls {
            assert_eq!(status, 401, "{key:?}: {body}");
            assert_eq!(code(&body), "unauthorized", "{body}");
        }
    }
    // Nothing was stored or changed by them.
    assert_eq!(server.count("SELECT count(*) FROM messages").await, 1);
}

#[tokio::test]
async fn unknown_rooms_users_and_messages_are_404_also_when_named_in_the_body() {
    let (server, api) = start().await;
    server.create_room("r").await;
    bot(&server, 90, "bot").await;
    let cases = [
        api.post(
            "/v1/rooms/nowhere/messages",
            &json!({"from_user": 90, "content": "x"}),
        )
        .await,
        api.post(
            "/v1/rooms/r/messages",
            &json!({"from_user": 91, "content": "x"}),
        )
        .await,
        // The operator's own row (user 0) is no sender.
        api.post(
            "/v1/rooms/r/messages",
            &json!({"from_user": 0, "content": "x"}),
        )
        .await,
        api.get("/v1/rooms/nowhere/messages").await,
        api.post(
            "/v1/dms",
            &json!({"from_user": 90, "to": 91, "content": "x"}),
        )
        .await,
        api.post(
            "/v1/dms",
            &json!({"from_user": 91, "to": 90, "content": "x"}),
        )
        .await,
        api.post(
            "/v1/dms",
            &json!({"from_user": 90, "to": 0, "content": "x"}),
        )
        .await,
        api.patch("/v1/messages/12345", &json!({"content": "y"}))
            .await,
        api.delete("/v1/messages/12345", None).await,
    ];
    for (i, (status, body)) in cases.into_iter().enumerate() {
        assert_eq!(status, 404, "case {i}: {body}");
        assert_eq!(code(&body), "not_found", "case {i}: {body}");
    }
    // An event's id is no message either; a deleted message is gone.
    let id = post(&api, "r", 90, "soon gone").await["id"]
        .as_i64()
        .unwrap();
    let (status, deleted) = api.delete(&format!("/v1/messages/{id}"), None).await;
    assert_eq!(status, 200, "{deleted}");
    let event = deleted["id"].as_i64().unwrap();
    for (status, body) in [
        api.patch(&format!("/v1/messages/{event}"), &json!({"content": "y"}))
            .await,
        api.delete(&format!("/v1/messages/{event}"), None).await,
        api.delete(&format!("/v1/messages/{id}"), None).await,
        api.patch(&format!("/v1/messages/{id}"), &json!({"content": "y"}))
            .await,
    ] {
        assert_eq!(status, 404, "{body}");
        assert_eq!(code(&body), "not_found", "{body}");
    }
    assert_eq!(server.count("SELECT count(*) FROM messages").await, 2);
}

#[tokio::test]
async fn invalid_input_is_400_and_an_oversized_body_413() {
    let (server, api) = start().await;
    server.create_room("r").await;
    bot(&server, 90, "bot").await;
    let id = post(&api, "r", 90, "hello").await["id"].as_i64().unwrap();
    let max = server.config.max_content;
    let too_long = "é".repeat(max + 1);
    let cases = [
        api.call_raw("POST", "/v1/rooms/r/messages", b"{not json".to_vec())
            .await,
        api.post("/v1/rooms/r/messages", &json!({"content": "no sender"}))
            .await,
        api.post(
            "/v1/rooms/r/messages",
            &json!({"from_user": "ninety", "content": "x"}),
        )
        .await,
        api.post(
            "/v1/rooms/r/messages",
            &json!({"from_user": 90, "content": too_long}),
        )
        .await,
        api.post(
            "/v1/rooms/r/messages",
            &json!({"from_user": 90, "content": ""}),
        )
        .await,
        api.post(
            "/v1/rooms/r/messages",
            &json!({"from_user": 90, "content": "x", "client_id": "c".repeat(65)}),
        )
        .await,
        api.post("/v1/dms", &json!({"from_user": 90, "content": "no to"}))
            .await,
        api.post(
            "/v1/dms",
            &json!({"from_user": 90, "to": 90, "content": too_long}),
        )
        .await,
        api.patch(&format!("/v1/messages/{id}"), &json!({"content": too_long}))
            .await,
        api.patch(&format!("/v1/messages/{id}"), &json!({"text": "x"}))
            .await,
        api.patch("/v1/messages/abc", &json!({"content": "x"}))
            .await,
        api.delete("/v1/messages/abc", None).await,
        api.get("/v1/rooms/r/messages?limit=0").await,
        api.get(&format!(
            "/v1/rooms/r/messages?limit={}",
            server.config.history_max + 1
        ))
        .await,
        api.get("/v1/rooms/r/messages?before=soon").await,
    ];
    for (i, (status, body)) in cases.into_iter().enumerate() {
        assert_eq!(status, 400, "case {i}: {body}");
        assert_eq!(code(&body), "invalid", "case {i}: {body}");
    }
    let (_, body) = api
        .post(
            "/v1/rooms/r/messages",
            &json!({"from_user": 90, "content": too_long}),
        )
        .await;
    assert_eq!(
        body["error"]["message"],
        format!("content too long (at most {max} characters)"),
        "the WebSocket door's words"
    );
    // Over --api-max-body: 413, whatever the content rules would say.
    let big = json!({"from_user": 90, "content": "x".repeat(server.config.api_max_body)});
    let (status, body) = api.post("/v1/rooms/r/messages", &big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(code(&body), "too_large", "{body}");
    // None of it was stored; the first message is untouched.
    assert_eq!(server.count("SELECT count(*) FROM messages").await, 1);
    let (_, history) = api.get("/v1/rooms/r/messages").await;
    assert_eq!(history["items"][0]["content"], "hello", "{history}");
}

/// A bot that is not a member posts while a member sends over its
/// WebSocket: members on both shards get every message in id order, the
/// API's as the same frame a client's is (its data is the response body),
/// and a member that was away recovers them with `join` + `since`.
#[tokio::test]
async fn an_api_post_reaches_members_on_both_shards_in_order_and_is_recovered() {
    let (server, api) = start().await;
    server.create_room("r").await;
    bot(&server, 90, "bot").await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    let mut c = server.connect(3, "c").await;
    a.join("r").await;
    b.join("r").await;
    c.join("r").await;

    // One API post alone: the same frame for members on both shards.
    let first = post(&api, "r", 90, "from the backend").await;
    assert_eq!(first["room"], "r");
    assert_eq!(first["fromUser"], 90);
    assert_eq!(first["username"], "bot");
    let mut seen = Vec::new();
    for m in [&mut a, &mut b, &mut c] {
        let frame = next_of(m, "message").await;
        assert!(frame.get("ref").is_none(), "{frame}");
        assert_eq!(frame["data"], first, "the frame's data is the API's answer");
        seen.push(frame);
    }
    // A client's message has the same shape.
    a.send(json!({"type": "message", "room": "r", "content": "from a client"}))
        .await;
    let client_frame = next_of(&mut b, "message").await;
    next_of(&mut a, "message").await;
    let since = next_of(&mut c, "message").await["data"]["id"]
        .as_i64()
        .unwrap();
    assert_eq!(keys(&client_frame), keys(&seen[0]));
    assert_eq!(keys(&client_frame["data"]), keys(&seen[0]["data"]));
    c.close().await;

    // Concurrent: the API posts while a sends over its WebSocket.
    const N: usize = 15;
    let poster = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..N {
                ids.push(
                    post(&api, "r", 90, &format!("api {i}")).await["id"]
                        .as_i64()
                        .unwrap(),
                );
            }
            ids
        })
    };
    for i in 0..N {
        a.send(json!({"type": "message", "room": "r", "content": format!("ws {i}")}))
            .await;
    }
    let api_ids = poster.await.unwrap();
    for (who, m) in [("a", &mut a), ("b", &mut b)] {
        let mut ids = Vec::new();
        while ids.len() < 2 * N {
            ids.push(next_of(m, "message").await["data"]["id"].as_i64().unwrap());
        }
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{who}: ids in increasing order: {ids:?}"
        );
        let got: HashSet<i64> = ids.iter().copied().collect();
        assert!(
            api_ids.iter().all(|id| got.contains(id)),
            "{who} got every API post: {api_ids:?} in {ids:?}"
        );
    }

    // c was away: join + since recovers the API's posts with the rest.
    let mut c = server.connect(3, "c").await;
    c.send(json!({"type": "join", "room": "r", "since": since}))
        .await;
    let ack = c.recv_type("join_ack").await;
    assert_eq!(ack["data"]["recovered"], true, "{ack}");
    let mut replayed = Vec::new();
    while replayed.len() < 2 * N {
        replayed.push(
            next_of(&mut c, "message").await["data"]["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let db = server.db().await;
    let stored: Vec<i64> = db
        .query(
            "SELECT id FROM messages WHERE room = 'r' AND id > $1 ORDER BY id",
            &[&since],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        replayed, stored,
        "the replay is the stored room after since"
    );
    assert!(api_ids.iter().all(|id| stored.contains(id)));
}

#[tokio::test]
async fn a_retried_client_id_answers_the_original_and_is_stored_once() {
    let (server, api) = start().await;
    server.create_room("r").await;
    bot(&server, 90, "bot").await;
    let mut a = server.connect(1, "a").await;
    a.join("r").await;
    let body = json!({"from_user": 90, "content": "once", "client_id": "k-1"});
    let (status, first) = api.post("/v1/rooms/r/messages", &body).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = api.post("/v1/rooms/r/messages", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first, "the original, same id");
    // The same key for a DM of the same sender is the same original.
    let (status, dm) = api
        .post(
            "/v1/dms",
            &json!({"from_user": 90, "to": 1, "content": "once", "client_id": "k-1"}),
        )
        .await;
    assert_eq!(status, 200, "{dm}");
    assert_eq!(dm["id"], first["id"]);
    let (status, dm) = api
        .post(
            "/v1/dms",
            &json!({"from_user": 90, "to": 1, "content": "dm once", "client_id": "k-2"}),
        )
        .await;
    assert_eq!(status, 201, "{dm}");
    let (status, dm_again) = api
        .post(
            "/v1/dms",
            &json!({"from_user": 90, "to": 1, "content": "dm once", "client_id": "k-2"}),
        )
        .await;
    assert_eq!((status, &dm_again), (200, &dm));
    assert_eq!(
        server
            .count("SELECT count(*) FROM messages WHERE from_user = 90")
            .await,
        2,
        "each stored once"
    );
    // Delivered once each.
    assert_eq!(next_of(&mut a, "message").await["data"], first);
    assert_eq!(next_of(&mut a, "dm").await["data"], dm);
    a.expect_nothing(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn an_api_dm_reaches_both_users() {
    let (server, api) = start().await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut a2 = server.connect_on_shard(1, "a", 1).await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    let (status, dm) = api
        .post(
            "/v1/dms",
            &json!({"from_user": 1, "to": 2, "content": "hi b"}),
        )
        .await;
    assert_eq!(status, 201, "{dm}");
    assert_eq!(dm["to"], 2);
    assert_eq!(dm["fromUser"], 1);
    assert_eq!(dm["username"], "a");
    for c in [&mut a, &mut a2, &mut b] {
        let frame = next_of(c, "dm").await;
        assert_eq!(frame["data"], dm);
    }
    // An edit through the API is the author's, in the pair's stream.
    let (status, edit) = api
        .patch(
            &format!("/v1/messages/{}", dm["id"]),
            &json!({"content": "hi, b"}),
        )
        .await;
    assert_eq!(status, 200, "{edit}");
    assert_eq!((&edit["fromUser"], &edit["to"]), (&json!(1), &json!(2)));
    for c in [&mut a, &mut a2, &mut b] {
        assert_eq!(next_of(c, "message_edited").await["data"], edit);
    }
    // A new connection of b recovers it with dm_sync.
    let mut b2 = server.connect(2, "b").await;
    b2.send(json!({"type": "dm_sync", "since": 0})).await;
    assert_eq!(
        next_of(&mut b2, "dm_sync_ack").await["data"]["recovered"],
        true
    );
    let mut synced = next_of(&mut b2, "dm").await["data"].clone();
    assert!(synced["edited_at"].is_string(), "{synced}");
    synced["content"] = dm["content"].clone();
    synced.as_object_mut().unwrap().remove("edited_at");
    assert_eq!(synced, dm, "the DM in its current state");
}

/// An edit through the API is the author's (`message_edited` from it,
/// whatever its membership); a delete is the operator's (`by: null`);
/// both reach members on both shards, and history shows the current
/// state (the edit, then the tombstone).
#[tokio::test]
async fn api_edits_and_deletes_reach_clients_and_history() {
    let (server, api) = start().await;
    server.create_room("r").await;
    let mut a = server.connect_on_shard(1, "a", 0).await;
    let mut b = server.connect_on_shard(2, "b", 1).await;
    a.join("r").await;
    b.join("r").await;
    a.send(json!({"type": "message", "room": "r", "content": "tpyo"}))
        .await;
    let id = next_of(&mut a, "message").await["data"]["id"]
        .as_i64()
        .unwrap();
    next_of(&mut b, "message").await;
    // The author left: the API still edits on its behalf.
    a.send(json!({"type": "leave", "room": "r"})).await;
    next_of(&mut a, "leave_ack").await;

    let (status, edit) = api
        .patch(&format!("/v1/messages/{id}"), &json!({"content": "typo"}))
        .await;
    assert_eq!(status, 200, "{edit}");
    assert_eq!(edit["target"], id);
    assert_eq!(edit["fromUser"], 1);
    assert_eq!(edit["content"], "typo");
    let seen = next_of(&mut b, "message_edited").await;
    assert_eq!(seen["data"], edit);
    let (_, history) = api.get("/v1/rooms/r/messages").await;
    assert_eq!(history["items"][0]["content"], "typo", "{history}");
    assert!(history["items"][0]["edited_at"].is_string(), "{history}");

    a.join("r").await;
    let (status, deleted) = api.delete(&format!("/v1/messages/{id}"), None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["by"], Value::Null);
    assert_eq!(keys(&deleted), ["by", "id", "room", "target", "timestamp"]);
    for c in [&mut a, &mut b] {
        let seen = next_of(c, "message_deleted").await;
        assert_eq!(seen["data"], deleted);
        assert_eq!(seen["data"]["by"], Value::Null);
    }
    // History, through the API and the WebSocket: a tombstone.
    let (_, history) = api.get("/v1/rooms/r/messages").await;
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{history}");
    assert_eq!(items[0]["id"], id);
    assert_eq!(items[0]["deleted"], true);
    assert!(items[0].get("content").is_none(), "{history}");
    b.send(json!({"type": "room_history", "room": "r"})).await;
    let h = next_of(&mut b, "room_history").await;
    assert_eq!(h["data"][0], items[0]);
    assert_eq!(
        server
            .count("SELECT count(*) FROM messages WHERE position('typo' in content) > 0")
            .await,
        0,
        "the content is erased"
    );

    // A DM's delete is written as its author's: both users get it.
    let (_, dm) = api
        .post(
            "/v1/dms",
            &json!({"from_user": 2, "to": 1, "content": "psst"}),
        )
        .await;
    next_of(&mut a, "dm").await;
    next_of(&mut b, "dm").await;
    let (status, deleted) = api
        .delete(&format!("/v1/messages/{}", dm["id"]), None)
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["by"], 2);
    for c in [&mut a, &mut b] {
        assert_eq!(next_of(c, "message_deleted").await["data"], deleted);
    }
}

#[tokio::test]
async fn history_pages_with_before_after_and_limit() {
    let (server, api) = start().await;
    server.create_room("r").await;
    bot(&server, 90, "bot").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            post(&api, "r", 90, &format!("m{i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let page = |v: Value| -> Vec<i64> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(page(api.get("/v1/rooms/r/messages").await.1), ids);
    assert_eq!(
        page(api.get("/v1/rooms/r/messages?limit=2").await.1),
        ids[3..],
        "the newest first page, oldest first"
    );
    assert_eq!(
        page(
            api.get(&format!("/v1/rooms/r/messages?limit=2&before={}", ids[3]))
                .await
                .1
        ),
        ids[1..3]
    );
    assert_eq!(
        page(
            api.get(&format!("/v1/rooms/r/messages?limit=2&after={}", ids[1]))
                .await
                .1
        ),
        ids[2..4]
    );
    // An empty room: no items.
    server.create_room("empty").await;
    let (status, body) = api.get("/v1/rooms/empty/messages").await;
    assert_eq!((status, body), (200, json!({"items": []})));
}

/// What the API's posts, edits and deletes append to the feed.
#[tokio::test]
async fn api_posts_edits_and_deletes_append_their_feed_events() {
    let (server, api) = start().await;
    server.create_room("r").await;
    bot(&server, 90, "bot").await;
    bot(&server, 91, "other").await;
    let m = post(&api, "r", 90, "hello").await;
    let id = m["id"].as_i64().unwrap();
    let (_, dm) = api
        .post(
            "/v1/dms",
            &json!({"from_user": 90, "to": 91, "content": "psst"}),
        )
        .await;
    let (_, edit) = api
        .patch(&format!("/v1/messages/{id}"), &json!({"content": "hello!"}))
        .await;
    let (_, deleted) = api.delete(&format!("/v1/messages/{id}"), None).await;

    let db = server.db().await;
    let events: Vec<Value> = chat_server::store::feed::read(&db, 0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .filter(|e| e["type"].as_str().unwrap().starts_with("message."))
        .collect();
    let summary: Vec<(&str, Value, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["message"]["id"].clone(),
                e["user"].clone(),
                e["by"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("message.created", m["id"].clone(), json!(90), Value::Null),
            ("message.created", dm["id"].clone(), json!(90), Value::Null),
            ("message.edited", edit["id"].clone(), json!(90), Value::Null),
            (
                "message.deleted",
                deleted["id"].clone(),
                Value::Null,
                Value::Null
            ),
        ],
        "{events:?}"
    );
    assert_eq!(events[0]["room"], "r");
    assert!(events[0].get("by").is_none(), "the operator: no by");
    assert_eq!(events[3]["message"], deleted);
    // The delete erased the content from the feed too.
    assert_eq!(events[0]["message"]["deleted"], true, "{events:?}");
    assert!(events[0]["message"].get("content").is_none());
    assert!(events[2]["message"].get("content").is_none());
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

/// The API acts with the operator's authority: a muted member, and a user
/// who is no member of a private room, post through it (what the
/// WebSocket door refuses them), and members get the messages.
#[tokio::test]
async fn mutes_and_membership_do_not_restrict_api_posts() {
    let (server, api) = start().await;
    server.create_room("r").await;
    // Before a connects, so that its handshake loads the membership and
    // the mute.
    server
        .db()
        .await
        .batch_execute(
            "INSERT INTO users (id, username) VALUES (1, 'a'); \
             INSERT INTO room_members (user_id, room) VALUES (1, 'r'); \
             INSERT INTO room_mutes (room, user_id) VALUES ('r', 1); \
             UPDATE rooms SET visibility = 'private' WHERE name = 'r'",
        )
        .await
        .unwrap();
    let mut a = server.connect(1, "a").await;
    let refused = a
        .refusal(json!({"type": "message", "room": "r", "content": "hi"}))
        .await;
    assert!(refused.contains("muted"), "{refused}");
    let mut outsider = server.connect(2, "outsider").await;
    let refused = outsider
        .refusal(json!({"type": "message", "room": "r", "content": "hi"}))
        .await;
    assert!(refused.contains("join room"), "{refused}");

    let by_muted = post(&api, "r", 1, "muted, but the backend speaks").await;
    let by_outsider = post(&api, "r", 2, "an outsider, through the backend").await;
    assert_eq!(next_of(&mut a, "message").await["data"], by_muted);
    assert_eq!(next_of(&mut a, "message").await["data"], by_outsider);
    // The outsider is still no member: it got nothing.
    outsider
        .expect_nothing(std::time::Duration::from_millis(300))
        .await;
}
