//! Handshake authentication: both token placements, each way a token can
//! be bad, and the user row upserted from the claims.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::{Client, TestServer, SECRET};

fn sign(claims: serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn exp_in(secs: i64) -> i64 {
    chrono::Utc::now().timestamp() + secs
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn token_in_query_or_bearer_header_both_work() {
    let server = TestServer::start().await;
    server.create_room("lobby").await;
    let token = server.token(1, "alice");
    let mut a = Client::connect_url(&format!("{}?token={token}", server.url()), None)
        .await
        .unwrap();
    let mut b = Client::connect_url(
        &server.url(),
        Some(&format!("Bearer {}", server.token(2, "bob"))),
    )
    .await
    .unwrap();
    a.join("lobby").await;
    b.join("lobby").await;
    // The user rows were upserted from the claims.
    let db = server.db().await;
    let rows = db
        .query(
            "SELECT id, username FROM users WHERE id <> 0 ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let users: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(users, vec![(1, "alice".into()), (2, "bob".into())]);
}

#[tokio::test]
async fn every_bad_token_is_refused_with_401_and_a_reason() {
    let server = TestServer::start().await;
    let good = json!({"user_id": 5, "username": "eve", "exp": exp_in(600)});
    let none_token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good.to_string().as_bytes())
    );
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "missing token"),
        ("garbage", Some("not.a.jwt".into()), "malformed token"),
        (
            "wrong signature",
            Some(sign(good.clone(), Algorithm::HS256, b"another-secret")),
            "invalid token signature",
        ),
        ("alg none", Some(none_token), "token"),
        (
            "other algorithm",
            Some(sign(good.clone(), Algorithm::HS512, SECRET.as_bytes())),
            "token algorithm not accepted",
        ),
        (
            "expired",
            Some(sign(
                json!({"user_id": 5, "username": "eve", "exp": exp_in(-30)}),
                Algorithm::HS256,
                SECRET.as_bytes(),
            )),
            "token expired",
        ),
        (
            "no exp",
            Some(sign(
                json!({"user_id": 5, "username": "eve"}),
                Algorithm::HS256,
                SECRET.as_bytes(),
            )),
            "token has no exp claim",
        ),
        (
            "not yet valid",
            Some(sign(
                json!({"user_id": 5, "username": "eve", "exp": exp_in(900), "nbf": exp_in(600)}),
                Algorithm::HS256,
                SECRET.as_bytes(),
            )),
            "token not yet valid",
        ),
        (
            "no user id",
            Some(sign(
                json!({"username": "eve", "exp": exp_in(600)}),
                Algorithm::HS256,
                SECRET.as_bytes(),
            )),
            "token has no user id",
        ),
    ];
    for (what, token, reason) in cases {
        let url = match &token {
            Some(t) => format!("{}?token={t}", server.url()),
            None => server.url(),
        };
        let refused = match Client::connect_url(&url, None).await {
            Ok(_) => panic!("{what}: handshake accepted"),
            Err(r) => r,
        };
        assert_eq!(refused.status, 401, "{what}");
        assert!(
            refused.body.contains(reason),
            "{what}: body {:?}",
            refused.body
        );
        // Same through the header.
        if let Some(t) = token {
            let refused = Client::connect_url(&server.url(), Some(&format!("Bearer {t}")))
                .await
                .err()
                .unwrap_or_else(|| panic!("{what} (header): accepted"));
            assert_eq!(refused.status, 401, "{what} (header)");
        }
    }
    let n = server
        .count("SELECT count(*) FROM users WHERE id <> 0")
        .await;
    assert_eq!(n, 0, "no refused token created a user");
}

#[tokio::test]
async fn username_taken_by_another_id_is_a_conflict() {
    let server = TestServer::start().await;
    let _alice = server.connect(1, "alice").await;
    let refused = Client::connect_url(
        &format!("{}?token={}", server.url(), server.token(2, "alice")),
        None,
    )
    .await
    .expect_err("refused");
    assert_eq!(refused.status, 409);
}

#[tokio::test]
async fn non_websocket_requests_get_clear_http_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    for (request, status) in [
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        // A browser's plain GET / gets the web page.
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "200"),
        ("GET /nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", "404"),
        ("garbage\r\n\r\n", "400"),
        ("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "200"),
        ("GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", "200"),
    ] {
        let mut s = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{request:?} -> {out:?}");
    }
}
