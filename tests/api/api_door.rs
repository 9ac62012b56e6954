//! Issue 15: the server API's door itself: its keys, its errors, and its
//! OpenAPI document kept true (every described route answers, every route
//! the server is built with is described).

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{fresh_database, TestServer, SECRET};
use crate::http::{self, code, Api};

/// A concrete path for a described one: `{room}` → `general`, any other
/// parameter → `1`.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closed parameter") + open;
        out.push_str(match &rest[open + 1..close] {
            "room" => "general",
            _ => "1",
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The (method, path) pairs a document describes.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            ops.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    ops.sort();
    ops
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_that_answer() {
    let server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    // Served without a key.
    let (status, doc) = api.with_key(None).get("/v1/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    let described = operations(&doc);

    // Every route the router is built from is described, with responses.
    let mut table: Vec<(String, String)> = chat_server::api::routes()
        .into_iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    table.sort();
    assert_eq!(table, described, "route table and document differ");
    for (method, path) in &described {
        let op = &doc["paths"][path][method.to_ascii_lowercase()];
        assert!(
            op["responses"].is_object() && op["summary"].is_string(),
            "{method} {path} lacks a summary or responses: {op}"
        );
    }
    // The issue's routes are all there.
    for (method, path) in [
        ("PUT", "/v1/users/{id}"),
        ("GET", "/v1/users/{id}"),
        ("POST", "/v1/users/{id}/disconnect"),
        ("DELETE", "/v1/users/{id}/block"),
        ("POST", "/v1/rooms"),
        ("GET", "/v1/rooms"),
        ("GET", "/v1/rooms/{room}"),
        ("PUT", "/v1/rooms/{room}/members/{user}"),
        ("DELETE", "/v1/rooms/{room}/members/{user}"),
        ("GET", "/v1/rooms/{room}/members"),
        ("PUT", "/v1/rooms/{room}/bans/{user}"),
        ("DELETE", "/v1/rooms/{room}/bans/{user}"),
        ("PUT", "/v1/rooms/{room}/mutes/{user}"),
        ("DELETE", "/v1/rooms/{room}/mutes/{user}"),
        ("GET", "/v1/rooms/{room}/moderation"),
        ("POST", "/v1/rooms/{room}/messages"),
        ("GET", "/v1/rooms/{room}/messages"),
        ("POST", "/v1/dms"),
        ("PATCH", "/v1/messages/{id}"),
        ("DELETE", "/v1/messages/{id}"),
        ("GET", "/v1/events"),
    ] {
        assert!(
            described.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is not described"
        );
    }

    // Every described route answers (whatever its verdict on this input:
    // never "no such route"), and refuses a request without the key.
    for (method, path) in &described {
        let url = concrete(path);
        let body = (method != "GET").then(|| json!({}));
        let (status, reply) = api.call(method, &url, body.as_ref()).await;
        assert_ne!(code(&reply), "no_route", "{method} {url}: {status} {reply}");
        assert!(status != 405, "{method} {url}: {status}");
        let (status, reply) = api.with_key(None).call(method, &url, body.as_ref()).await;
        assert_eq!(
            (status, code(&reply)),
            (401, "unauthorized"),
            "{method} {url}"
        );
    }

    // And what is not described does not answer.
    let (status, reply) = api.get("/v1/nothing-here").await;
    assert_eq!((status, code(&reply)), (404, "no_route"), "{reply}");
    let (status, reply) = api.call("PATCH", "/v1/rooms", Some(&json!({}))).await;
    assert_eq!((status, code(&reply)), (404, "no_route"), "{reply}");
}

#[tokio::test]
async fn keys_are_checked_and_several_are_accepted_for_rotation() {
    let server = TestServer::start_with(|c| {
        http::with_api(c);
        c.api_keys = vec![
            "old-key-0123456789abcdef".into(),
            "new-key-0123456789abcdef".into(),
        ];
    })
    .await;
    let api = Api::of(&server);
    for key in ["old-key-0123456789abcdef", "new-key-0123456789abcdef"] {
        let (status, reply) = api.with_key(Some(key)).get("/v1/rooms").await;
        assert_eq!(status, 200, "{key}: {reply}");
    }
    for key in [
        Some("old-key-0123456789abcde"),
        Some("NEW-key-0123456789abcdef"),
        Some(""),
        None,
    ] {
        let (status, reply) = api.with_key(key).get("/v1/rooms").await;
        assert_eq!((status, code(&reply)), (401, "unauthorized"), "{key:?}");
        assert!(reply["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn bad_json_and_oversized_bodies_get_400_and_413() {
    let server = TestServer::start_with(|c| {
        http::with_api(c);
        c.api_max_body = 1024;
    })
    .await;
    let api = Api::of(&server);
    let (status, reply) = api
        .call_raw("POST", "/v1/rooms", b"{not json".to_vec())
        .await;
    assert_eq!((status, code(&reply)), (400, "invalid"), "{reply}");
    let (status, reply) = api
        .call_raw("POST", "/v1/rooms", br#"{"name": 5}"#.to_vec())
        .await;
    assert_eq!((status, code(&reply)), (400, "invalid"), "{reply}");
    let big = json!({ "name": "x".repeat(2048) }).to_string().into_bytes();
    let (status, reply) = api.call_raw("POST", "/v1/rooms", big).await;
    assert_eq!((status, code(&reply)), (413, "too_large"), "{reply}");
    // The server is fine afterwards.
    let (status, _) = api.post("/v1/rooms", &json!({ "name": "after" })).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn the_api_does_not_start_without_a_key() {
    let db = fresh_database().await;
    for keys in [vec![], vec!["short".to_owned()]] {
        let mut c = chat_server::Config::for_tests(&db, SECRET, "127.0.0.1:0".parse().unwrap());
        c.api_bind = Some("127.0.0.1:0".parse().unwrap());
        c.api_keys = keys.clone();
        let started = tokio::task::spawn_blocking(move || {
            chat_server::server::start_with_db_wait(c, Duration::from_secs(10))
        })
        .await
        .unwrap();
        match started {
            Err(e) => assert!(e.to_string().contains("CHAT_API_KEYS"), "{keys:?}: {e}"),
            Ok(h) => {
                h.shutdown();
                panic!("started the API with keys {keys:?}");
            }
        }
    }
}
