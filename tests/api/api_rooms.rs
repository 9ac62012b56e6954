//! Issue 15, the server API's rooms routes: rooms created and listed;
//! members added with roles, mutes, kicks and bans done with the
//! operator's authority, reaching WebSocket clients on both shards exactly
//! as the WebSocket door's do (`member` frames with `by: null`, a kicked
//! user's connections no longer following the room), with their feed
//! events and audit rows.

use std::time::Duration;

use serde_json::{json, Value};

use crate::api_users::feed_of;
use crate::helpers::{Client, TestServer};
use crate::http::{self, code, Api};

/// Next `member` event with `action`, skipping every other frame.
async fn member_event(c: &mut Client, action: &str) -> Value {
    loop {
        let v = c.recv_any().await;
        if v["type"] == "member" && v["data"]["action"] == action {
            return v["data"].clone();
        }
    }
}

/// Sends a message to `room` and waits for its own copy; returns its id.
async fn say(c: &mut Client, room: &str, content: &str) -> i64 {
    let v = c
        .ask(json!({"type": "message", "room": room, "content": content}))
        .await;
    assert_eq!(v["type"], "message", "{v}");
    v["data"]["id"].as_i64().unwrap()
}

/// Waits until `c` receives message `id` of `room`.
async fn receives(c: &mut Client, room: &str, id: i64) {
    loop {
        let v = c.recv_any().await;
        if v["type"] == "message" && v["data"]["room"] == room && v["data"]["id"] == id {
            return;
        }
    }
}

/// Asserts `c` gets nothing of `room` but member events for `wait`.
async fn nothing_of(c: &mut Client, room: &str, wait: Duration) {
    let until = tokio::time::Instant::now() + wait;
    while let Ok(v) = tokio::time::timeout_at(until, c.recv_any()).await {
        assert!(
            v["data"]["room"] != room || v["type"] == "member",
            "got {v} after the kick"
        );
    }
}

#[tokio::test]
async fn rooms_are_created_listed_and_read() {
    let server = TestServer::start_with(|c| {
        http::with_api(c);
        c.api_max_body = 1024;
    })
    .await;
    let api = Api::of(&server);
    let (s, v) = api.post("/v1/rooms", &json!({"name": "alpha"})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (&v["name"], &v["visibility"], &v["members"], &v["owner"]),
        (&json!("alpha"), &json!("public"), &json!(0), &Value::Null)
    );
    let (s, v) = api.post("/v1/rooms", &json!({"name": "alpha"})).await;
    assert_eq!((s, code(&v)), (409, "conflict"), "{v}");
    let (s, v) = api
        .post("/v1/rooms", &json!({"name": "beta", "owner": 77}))
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    let (s, _) = api
        .put("/v1/users/77", &json!({"username": "owner77"}))
        .await;
    assert_eq!(s, 201);
    // The owner is online: its connection follows its new room at once.
    let mut owner = server.connect(77, "owner77").await;
    let (s, v) = api
        .post(
            "/v1/rooms",
            &json!({"name": "beta", "visibility": "private", "owner": 77}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (&v["visibility"], &v["members"]),
        (&json!("private"), &json!(1))
    );
    // Its shard applies the membership from its inbox, right after the
    // API's answer: a message sent at once may still be refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = owner
            .ask(json!({"type": "message", "room": "beta", "content": "mine"}))
            .await;
        if v["type"] == "message" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for body in [
        json!({"name": "bad name"}),
        json!({"name": ""}),
        json!({"name": "gamma", "visibility": "secret"}),
        json!({"name": "gamma", "owner": 0}),
        json!({"room": "gamma"}),
    ] {
        let (s, v) = api.post("/v1/rooms", &body).await;
        assert_eq!((s, code(&v)), (400, "invalid"), "{body} → {v}");
    }
    let (s, v) = api.call_raw("POST", "/v1/rooms", b"[1,".to_vec()).await;
    assert_eq!((s, code(&v)), (400, "invalid"), "{v}");
    let big = json!({"name": "x".repeat(3000)}).to_string().into_bytes();
    let (s, v) = api.call_raw("POST", "/v1/rooms", big).await;
    assert_eq!((s, code(&v)), (413, "too_large"), "{v}");
    let (s, _) = api
        .with_key(Some("nope"))
        .post("/v1/rooms", &json!({"name": "delta"}))
        .await;
    assert_eq!(s, 401);

    // Paged by name.
    let (s, v) = api.get("/v1/rooms?limit=1").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["items"][0]["name"], "alpha");
    let (_, v) = api.get("/v1/rooms?after=alpha&limit=5").await;
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta"]);
    let (s, v) = api.get("/v1/rooms?limit=0").await;
    assert_eq!((s, code(&v)), (400, "invalid"), "{v}");
    let (s, v) = api.get("/v1/rooms?limit=x").await;
    assert_eq!((s, code(&v)), (400, "invalid"), "{v}");
    let (s, v) = api.get("/v1/rooms/beta").await;
    assert_eq!((s, &v["members"]), (200, &json!(1)), "{v}");
    let (s, v) = api.get("/v1/rooms/nope").await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");

    // Two room.created events, by the operator.
    let feed = feed_of(&server, &[6]).await;
    assert_eq!(feed.len(), 2, "{feed:?}");
    assert_eq!((feed[1].1, feed[1].2), (Some(77), None));
    owner.close().await;
}

#[tokio::test]
async fn members_added_with_roles_and_muted_are_told_to_websocket_clients_with_by_null() {
    let server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    let mut owner = server.connect_on_shard(1, "one", 0).await;
    let mut guest = server.connect_on_shard(2, "two", 1).await;
    let (s, _) = api
        .post(
            "/v1/rooms",
            &json!({"name": "club", "visibility": "private", "owner": 1}),
        )
        .await;
    assert_eq!(s, 201);

    let (s, v) = api
        .put("/v1/rooms/club/members/2", &json!({"role": "moderator"}))
        .await;
    assert_eq!(
        (s, v),
        (201, json!({"room": "club", "user": 2, "role": "moderator"}))
    );
    for c in [&mut owner, &mut guest] {
        let e = member_event(c, "invited").await;
        assert_eq!((&e["user"], &e["by"]), (&json!(2), &Value::Null), "{e}");
        let e = member_event(c, "role").await;
        assert_eq!(
            (&e["role"], &e["by"]),
            (&json!("moderator"), &Value::Null),
            "{e}"
        );
    }
    // The guest's connection (another shard) follows the private room now.
    let id = say(&mut owner, "club", "welcome").await;
    receives(&mut guest, "club", id).await;
    // Again: already a member, role changed back.
    let (s, v) = api
        .put("/v1/rooms/club/members/2", &json!({"role": "member"}))
        .await;
    assert_eq!((s, &v["role"]), (200, &json!("member")), "{v}");
    let (s, v) = api.call("PUT", "/v1/rooms/club/members/2", None).await;
    assert_eq!((s, &v["role"]), (200, &json!("member")), "{v}");

    let (s, v) = api.get("/v1/rooms/club/members?limit=10").await;
    assert_eq!(s, 200, "{v}");
    let roles: Vec<(i64, &str)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user"].as_i64().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [(1, "owner"), (2, "member")]);
    let (_, v) = api.get("/v1/rooms/club/members?after=1").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");

    // A mute holds on the guest's shard; lifting it is told too.
    let (s, v) = api
        .put(
            "/v1/rooms/club/mutes/2",
            &json!({"seconds": 600, "reason": "calm"}),
        )
        .await;
    assert_eq!((s, v["muted"].clone()), (200, json!(true)), "{v}");
    assert!(v["until"].is_string(), "{v}");
    let e = member_event(&mut guest, "muted").await;
    assert_eq!(e["by"], Value::Null, "{e}");
    let refusal = guest
        .refusal(json!({"type": "message", "room": "club", "content": "hi"}))
        .await;
    assert!(refusal.contains("muted"), "{refusal}");
    let (s, v) = api.delete("/v1/rooms/club/mutes/2", None).await;
    assert_eq!((s, v["unmuted"].clone()), (200, json!(true)), "{v}");
    member_event(&mut guest, "unmuted").await;
    let id = say(&mut guest, "club", "free").await;
    receives(&mut owner, "club", id).await;
    let (_, v) = api.delete("/v1/rooms/club/mutes/2", None).await;
    assert_eq!(v["unmuted"], false, "{v}");

    // Errors.
    for (method, path, body, status) in [
        ("PUT", "/v1/rooms/club/members/999", json!({}), 404),
        ("PUT", "/v1/rooms/nope/members/2", json!({}), 404),
        (
            "PUT",
            "/v1/rooms/club/members/2",
            json!({"role": "king"}),
            400,
        ),
        ("PUT", "/v1/rooms/club/members/x", json!({}), 400),
        ("PUT", "/v1/rooms/club/mutes/999", json!({}), 404),
        ("PUT", "/v1/rooms/club/mutes/2", json!({"seconds": -1}), 400),
        ("DELETE", "/v1/rooms/nope/mutes/2", json!({}), 404),
    ] {
        let (s, v) = api.call(method, path, Some(&body)).await;
        assert_eq!(s, status, "{method} {path} {body} → {v}");
    }
    let (s, v) = api.get("/v1/rooms/nope/members").await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    let (s, _) = api.with_key(None).get("/v1/rooms/club/members").await;
    assert_eq!(s, 401);

    // Feed: added, role (moderator, then member), muted, unmuted; by null.
    let feed = feed_of(&server, &[7, 11, 12, 13]).await;
    let kinds: Vec<i16> = feed.iter().map(|e| e.0).collect();
    assert_eq!(kinds, [7, 13, 13, 11, 12], "{feed:?}");
    assert!(
        feed.iter().all(|e| e.1 == Some(2) && e.2.is_none()),
        "{feed:?}"
    );
    let muted = feed[3].3.as_ref().expect("detail");
    assert_eq!(muted["reason"], "calm", "{muted}");
    assert!(muted["until"].is_string(), "{muted}");
    // The audit log has the same, with the mute's reason.
    let (_, v) = api.get("/v1/rooms/club/moderation").await;
    let log: Vec<(&str, &Value)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), &a["reason"]))
        .collect();
    assert_eq!(
        log,
        [
            ("invited", &Value::Null),
            ("role", &Value::Null),
            ("role", &Value::Null),
            ("muted", &json!("calm")),
            ("unmuted", &Value::Null)
        ]
    );
    owner.close().await;
    guest.close().await;
}

#[tokio::test]
async fn kicks_and_bans_through_the_api_end_the_users_subscriptions_on_both_shards() {
    let server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    server.create_room("hall").await;
    let mut speaker = server.connect(3, "three").await;
    speaker.join("hall").await;
    let mut k0 = server.connect_on_shard(4, "four", 0).await;
    let mut k1 = server.connect_on_shard(4, "four", 1).await;
    k0.join("hall").await;
    // The second connection follows the room through the first one's join.
    let id = say(&mut speaker, "hall", "before").await;
    receives(&mut k0, "hall", id).await;
    receives(&mut k1, "hall", id).await;

    let (s, v) = api
        .call(
            "DELETE",
            "/v1/rooms/hall/members/4",
            Some(&json!({"reason": "rude"})),
        )
        .await;
    assert_eq!((s, v["kicked"].clone()), (200, json!(true)), "{v}");
    let kick_id = v["id"].as_i64().unwrap();
    assert!(kick_id > id, "{v}");
    for c in [&mut k0, &mut k1, &mut speaker] {
        let e = member_event(c, "kicked").await;
        assert_eq!((&e["user"], &e["by"]), (&json!(4), &Value::Null), "{e}");
    }
    let after = say(&mut speaker, "hall", "after").await;
    assert!(after > kick_id);
    nothing_of(&mut k0, "hall", Duration::from_millis(400)).await;
    nothing_of(&mut k1, "hall", Duration::from_millis(100)).await;
    let (s, v) = api.call("DELETE", "/v1/rooms/hall/members/4", None).await;
    assert_eq!(
        (s, code(&v)),
        (404, "not_found"),
        "not a member any more: {v}"
    );

    // A ban: told, joins refused until it is lifted.
    k0.join("hall").await;
    let (s, v) = api
        .put(
            "/v1/rooms/hall/bans/4",
            &json!({"seconds": 600, "reason": "again"}),
        )
        .await;
    assert_eq!((s, v["banned"].clone()), (200, json!(true)), "{v}");
    assert!(v["until"].is_string(), "{v}");
    // Both connections are told (each shard applies the ban in the room's
    // order; a join answered before its shard applied it is answered from
    // the subscription the connection still had).
    for c in [&mut k0, &mut k1] {
        let e = member_event(c, "banned").await;
        assert_eq!(e["by"], Value::Null, "{e}");
    }
    let refusal = k1.refusal(json!({"type": "join", "room": "hall"})).await;
    assert!(refusal.contains("banned"), "{refusal}");
    let (s, v) = api.delete("/v1/rooms/hall/bans/4", None).await;
    assert_eq!((s, v["unbanned"].clone()), (200, json!(true)), "{v}");
    k1.join("hall").await;
    let (s, v) = api.delete("/v1/rooms/hall/bans/4", None).await;
    assert_eq!((s, v["unbanned"].clone()), (200, json!(false)), "{v}");

    for (method, path, status) in [
        ("PUT", "/v1/rooms/nope/bans/4", 404),
        ("PUT", "/v1/rooms/hall/bans/999", 404),
        ("DELETE", "/v1/rooms/hall/bans/999", 404),
        ("DELETE", "/v1/rooms/nope/members/4", 404),
    ] {
        let (s, v) = api.call(method, path, None).await;
        assert_eq!(s, status, "{method} {path} → {v}");
    }
    let (s, v) = api
        .put("/v1/rooms/hall/bans/4", &json!({"seconds": 0}))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid"), "{v}");

    // Feed and audit log: kicked, banned, unbanned, by the operator.
    let feed = feed_of(&server, &[4, 5, 10]).await;
    let kinds: Vec<(i16, Option<i64>, Option<i64>)> =
        feed.iter().map(|e| (e.0, e.1, e.2)).collect();
    assert_eq!(
        kinds,
        [(4, Some(4), None), (5, Some(4), None), (10, Some(4), None)],
        "{feed:?}"
    );
    let (s, v) = api.get("/v1/rooms/hall/moderation").await;
    assert_eq!(s, 200, "{v}");
    let log: Vec<(&str, Value)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["by"].clone()))
        .collect();
    assert_eq!(
        log,
        [
            ("kicked", Value::Null),
            ("banned", Value::Null),
            ("unbanned", Value::Null)
        ]
    );
    assert_eq!(v["items"][0]["message"], kick_id, "{v}");
    let first = v["items"][0]["id"].as_i64().unwrap();
    let (_, v) = api
        .get(&format!("/v1/rooms/hall/moderation?after={first}&limit=1"))
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["items"][0]["action"], "banned", "{v}");
    let (s, _) = api.get("/v1/rooms/nope/moderation").await;
    assert_eq!(s, 404);
    speaker.close().await;
    k0.close().await;
    k1.close().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_users_and_rooms_route() {
    let server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    let (s, doc) = api.with_key(None).get("/v1/openapi.json").await;
    assert_eq!(s, 200);
    for (method, path) in [
        ("put", "/v1/users/{id}"),
        ("get", "/v1/users/{id}"),
        ("post", "/v1/users/{id}/disconnect"),
        ("delete", "/v1/users/{id}/block"),
        ("post", "/v1/rooms"),
        ("get", "/v1/rooms"),
        ("get", "/v1/rooms/{room}"),
        ("put", "/v1/rooms/{room}/members/{user}"),
        ("delete", "/v1/rooms/{room}/members/{user}"),
        ("get", "/v1/rooms/{room}/members"),
        ("put", "/v1/rooms/{room}/bans/{user}"),
        ("delete", "/v1/rooms/{room}/bans/{user}"),
        ("put", "/v1/rooms/{room}/mutes/{user}"),
        ("delete", "/v1/rooms/{room}/mutes/{user}"),
        ("get", "/v1/rooms/{room}/moderation"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op["summary"].is_string(), "{method} {path}: {op}");
        let responses = op["responses"].as_object().expect("responses");
        assert!(responses.contains_key("401"), "{method} {path}");
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{method} {path}"
        );
        // Every path parameter is declared.
        for name in path.split('{').skip(1).map(|p| &p[..p.find('}').unwrap()]) {
            let declared = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
            assert!(declared, "{method} {path}: {name}");
        }
    }
}
