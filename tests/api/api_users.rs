//! Issue 15, the server API's users routes: upserts with the handshake's
//! username rules, the user's connections counted on both shards, and an
//! operator's disconnect (4003 on every shard) and block (403 handshakes
//! until it ends or is lifted), with their feed events.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Client, Refused, TestServer};
use crate::http::{self, code, Api};

/// The feed's events of the given type codes, in seq order:
/// (type, user, by, detail).
pub(crate) async fn feed_of(
    server: &TestServer,
    types: &[i16],
) -> Vec<(i16, Option<i64>, Option<i64>, Option<Value>)> {
    let rows = server
        .db()
        .await
        .query(
            "SELECT type, user_id, by_user, detail FROM feed WHERE type = ANY($1) ORDER BY seq",
            &[&types],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// A handshake of `user`: the client, or the refusal.
pub(crate) async fn handshake(
    server: &TestServer,
    user: i64,
    name: &str,
) -> Result<Client, Refused> {
    let url = format!("{}?token={}", server.url(), server.token(user, name));
    Client::connect_url(&url, None).await
}

#[tokio::test]
async fn users_are_created_renamed_and_look_alikes_refused() {
    let server = TestServer::start_with(|c| {
        http::with_api(c);
        c.api_max_body = 1024;
    })
    .await;
    let api = Api::of(&server);

    let (s, v) = api.put("/v1/users/41", &json!({"username": "alice"})).await;
    assert_eq!((s, &v), (201, &json!({"id": 41, "username": "alice"})));
    let (s, v) = api
        .put("/v1/users/41", &json!({"username": "alice2"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.get("/v1/users/41").await;
    assert_eq!(
        (s, v),
        (
            200,
            json!({"id": 41, "username": "alice2", "online": false, "connections": 0})
        )
    );
    // The handshake's look-alike rule: case and confusables.
    let (s, v) = api
        .put("/v1/users/42", &json!({"username": "ALICE2"}))
        .await;
    assert_eq!((s, code(&v)), (409, "conflict"), "{v}");
    // The row the handshake would write is the one the API wrote.
    let c = server.connect(41, "alice2").await;
    c.close().await;
    let (s, v) = server_handshake_refusal(&server, 42, "alice2").await;
    assert_eq!(s, 409, "{v}");

    for (path, body) in [
        ("/v1/users/43", json!({"username": ""})),
        ("/v1/users/43", json!({"username": "bad\u{202e}name"})),
        ("/v1/users/43", json!({"name": "x"})),
        ("/v1/users/0", json!({"username": "zero"})),
        ("/v1/users/abc", json!({"username": "abc"})),
        ("/v1/users/9007199254740992", json!({"username": "big"})),
    ] {
        let (s, v) = api.put(path, &body).await;
        assert_eq!((s, code(&v)), (400, "invalid"), "{path} {body} → {v}");
    }
    let (s, v) = api
        .call_raw("PUT", "/v1/users/43", b"{not json".to_vec())
        .await;
    assert_eq!((s, code(&v)), (400, "invalid"), "{v}");
    let big = json!({ "username": "x".repeat(2000) })
        .to_string()
        .into_bytes();
    let (s, v) = api.call_raw("PUT", "/v1/users/43", big).await;
    assert_eq!((s, code(&v)), (413, "too_large"), "{v}");
    let (s, v) = api.get("/v1/users/999").await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    for key in [None, Some("wrong-key")] {
        let (s, v) = api.with_key(key).get("/v1/users/41").await;
        assert_eq!((s, code(&v)), (401, "unauthorized"), "{v}");
        let (s, _) = api
            .with_key(key)
            .put("/v1/users/44", &json!({"username": "mallory"}))
            .await;
        assert_eq!(s, 401);
    }
    assert_eq!(
        server
            .count("SELECT count(*) FROM users WHERE id = 44")
            .await,
        0
    );
}

/// The status and body of a refused handshake.
async fn server_handshake_refusal(server: &TestServer, user: i64, name: &str) -> (u16, String) {
    match handshake(server, user, name).await {
        Ok(_) => panic!("handshake of {user} accepted"),
        Err(r) => (r.status, r.body),
    }
}

#[tokio::test]
async fn a_user_is_online_with_its_connections_on_both_shards() {
    let server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    let a = server.connect_on_shard(7, "seven", 0).await;
    let b = server.connect_on_shard(7, "seven", 1).await;
    let (s, v) = api.get("/v1/users/7").await;
    assert_eq!(
        (s, v),
        (
            200,
            json!({"id": 7, "username": "seven", "online": true, "connections": 2})
        )
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn disconnect_closes_every_connection_with_4003_and_a_block_refuses_handshakes_until_lifted()
{
    let server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    let mut a = server.connect_on_shard(5, "five", 0).await;
    let mut b = server.connect_on_shard(5, "five", 1).await;
    let mut other = server.connect(6, "six").await;

    let (s, v) = api
        .post(
            "/v1/users/5/disconnect",
            &json!({"reason": "spam", "block_seconds": 600}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["blocked"], true, "{v}");
    assert!(v["until"].is_string(), "{v}");
    let within = Duration::from_secs(5);
    assert_eq!(a.close_code(within).await, Some(4003));
    assert_eq!(b.close_code(within).await, Some(4003));
    // Nobody else is touched.
    let pong = other.ask(json!({"type": "rooms"})).await;
    assert_eq!(pong["type"], "rooms", "{pong}");

    // Blocked: 403 on every shard (a few handshakes land on both).
    for _ in 0..6 {
        let (s, body) = server_handshake_refusal(&server, 5, "five").await;
        assert_eq!(s, 403, "{body}");
        assert!(body.contains("blocked"), "{body}");
    }
    // Offline once both connections ended (each releases its count as its
    // task ends, after the close handshake).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (s, v) = api.get("/v1/users/5").await;
        assert_eq!(s, 200, "{v}");
        if v["online"] == false && v["connections"] == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still online: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (s, v) = api.delete("/v1/users/5/block", None).await;
    assert_eq!((s, v), (200, json!({"id": 5, "unblocked": true})));
    let c = server.connect(5, "five").await;
    c.close().await;
    let (s, v) = api.delete("/v1/users/5/block", None).await;
    assert_eq!((s, v), (200, json!({"id": 5, "unblocked": false})));

    // One user.blocked (with its end and reason), one user.unblocked.
    let feed = feed_of(&server, &[14, 15]).await;
    assert_eq!(feed.len(), 2, "{feed:?}");
    let (t, user, by, detail) = &feed[0];
    assert_eq!((*t, *user, *by), (14, Some(5), None));
    let detail = detail.as_ref().expect("detail");
    assert_eq!(detail["reason"], "spam");
    assert!(detail["until"].is_string(), "{detail}");
    assert_eq!((feed[1].0, feed[1].1, feed[1].2), (15, Some(5), None));
    other.close().await;
}

#[tokio::test]
async fn a_block_ends_by_itself_and_a_plain_disconnect_lets_the_user_back() {
    let server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    let mut a = server.connect(8, "eight").await;
    // No body at all: a disconnect without a block.
    let (s, v) = api.call("POST", "/v1/users/8/disconnect", None).await;
    assert_eq!((s, v["blocked"].clone()), (200, json!(false)), "{v}");
    assert_eq!(a.close_code(Duration::from_secs(5)).await, Some(4003));
    let mut a = server.connect(8, "eight").await;

    let (s, _) = api
        .post("/v1/users/8/disconnect", &json!({"block_seconds": 1}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(a.close_code(Duration::from_secs(5)).await, Some(4003));
    let (s, body) = server_handshake_refusal(&server, 8, "eight").await;
    assert_eq!(s, 403, "{body}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c = server.connect(8, "eight").await;
    c.close().await;
    // An expiry is no event.
    assert_eq!(feed_of(&server, &[14, 15]).await.len(), 1);

    for (path, body) in [
        ("/v1/users/8/disconnect", json!({"block_seconds": 0})),
        ("/v1/users/8/disconnect", json!({"block_seconds": "soon"})),
        ("/v1/users/8/disconnect", json!({"reason": ""})),
        ("/v1/users/8/disconnect", json!({"why": "x"})),
    ] {
        let (s, v) = api.post(path, &body).await;
        assert_eq!((s, code(&v)), (400, "invalid"), "{body} → {v}");
    }
    let (s, v) = api
        .post("/v1/users/999/disconnect", &json!({"block_seconds": 5}))
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    let (s, v) = api.post("/v1/users/999/disconnect", &json!({})).await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    let (s, v) = api.delete("/v1/users/999/block", None).await;
    assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
    let (s, _) = api
        .with_key(None)
        .post("/v1/users/8/disconnect", &json!({}))
        .await;
    assert_eq!(s, 401);
}
