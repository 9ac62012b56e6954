//! Identity and request strictness (issue 13, items 7, 10 and 11): the
//! maximum token lifetime, the user id range and canonical `sub`, username
//! rules and look-alike collisions, `ref` kept on ill-typed fields, only
//! JSON objects as requests, and the JWT `crit` header.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, Refused, TestServer, SECRET};

/// 2^53 - 1, the largest user id (JavaScript's `Number.MAX_SAFE_INTEGER`).
const MAX_USER_ID: i64 = (1 << 53) - 1;

fn exp_in(secs: i64) -> i64 {
    chrono::Utc::now().timestamp() + secs
}

fn sign_with(header: &Header, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn sign(claims: Value) -> String {
    sign_with(&Header::new(Algorithm::HS256), &claims)
}

async fn handshake(server: &TestServer, token: &str) -> Result<Client, Refused> {
    Client::connect_url(&format!("{}?token={token}", server.url()), None).await
}

async fn refused(server: &TestServer, token: &str, what: &str) -> Refused {
    match handshake(server, token).await {
        Ok(_) => panic!("{what}: accepted"),
        Err(r) => Refused {
            status: r.status,
            body: r.body.trim_end().to_owned(),
        },
    }
}

/// The next error frame: its `ref` and message.
async fn error(c: &mut Client) -> (Value, String) {
    let v = c.recv_type("error").await;
    let text = v["data"]["message"].as_str().unwrap().to_owned();
    (v["ref"].clone(), text)
}

/// The connection still answers (and still belongs to the same user).
async fn still_usable(c: &mut Client) {
    c.send(json!({"type": "rooms", "ref": "alive"})).await;
    assert_eq!(c.recv_type("rooms").await["ref"], "alive");
}

#[tokio::test]
async fn a_token_living_longer_than_the_maximum_is_refused() {
    let server = TestServer::start().await;
    for exp in [i64::MAX, exp_in(400 * 86_400), exp_in(86_400 + 120)] {
        let token = sign(json!({"user_id": 1, "username": "al", "exp": exp}));
        let r = refused(&server, &token, &format!("exp {exp}")).await;
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.body, "token lifetime exceeds the server's maximum");
    }
    // Within the default day: accepted.
    let token = sign(json!({"user_id": 1, "username": "al", "exp": exp_in(86_000)}));
    let mut c = handshake(&server, &token).await.unwrap();
    // `refresh` to a longer-lived token: refused with the ref, and the
    // connection stays open on its old token.
    let long = sign(json!({"user_id": 1, "username": "al", "exp": exp_in(30 * 86_400)}));
    c.send(json!({"type": "refresh", "token": long, "ref": "R7"}))
        .await;
    let (r, text) = error(&mut c).await;
    assert_eq!(r, "R7");
    assert_eq!(
        text,
        "refresh refused: token lifetime exceeds the server's maximum"
    );
    still_usable(&mut c).await;
    let ok = sign(json!({"user_id": 1, "username": "al", "exp": exp_in(3_600)}));
    c.send(json!({"type": "refresh", "token": ok, "ref": 8}))
        .await;
    assert_eq!(c.recv_type("refresh_ack").await["ref"], 8);
}

#[tokio::test]
async fn the_maximum_token_lifetime_is_a_setting() {
    let server = TestServer::start_with(|c| c.max_token_lifetime_secs = 600).await;
    let r = refused(&server, &server.token(1, "al"), "a 1 h token").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "token lifetime exceeds the server's maximum")
    );
    let token = sign(json!({"user_id": 1, "username": "al", "exp": exp_in(500)}));
    handshake(&server, &token).await.unwrap();
}

#[tokio::test]
async fn user_ids_outside_1_to_2_pow_53_minus_1_and_odd_subs_are_refused() {
    let server = TestServer::start().await;
    let exp = exp_in(600);
    let bad = [
        json!({"user_id": 0}),
        json!({"user_id": -1}),
        json!({"user_id": MAX_USER_ID + 1}),
        json!({"user_id": i64::MAX}),
        json!({"sub": 0}),
        json!({"sub": "0"}),
        json!({"sub": "-3"}),
        json!({"sub": "+7"}),
        json!({"sub": "007"}),
        json!({"sub": " 7"}),
        json!({"sub": "7 "}),
        json!({"sub": "7.0"}),
        json!({"sub": 7.0}),
        json!({"sub": 7.5}),
        json!({"sub": "9007199254740992"}),
        json!({"sub": ""}),
    ];
    for (i, claims) in bad.iter().enumerate() {
        let mut c = claims.clone();
        c["username"] = json!(format!("u{i}"));
        c["exp"] = json!(exp);
        let r = refused(&server, &sign(c.clone()), &c.to_string()).await;
        assert_eq!(r.status, 401, "{c}");
        assert!(r.body.contains("user id"), "{c}: {}", r.body);
    }
    assert_eq!(
        server
            .count("SELECT count(*) FROM users WHERE id <> 0")
            .await,
        0
    );
    for (i, claims) in [
        json!({"user_id": MAX_USER_ID}),
        json!({"sub": "7"}),
        json!({"sub": 8}),
        json!({"user_id": 1}),
    ]
    .iter()
    .enumerate()
    {
        let mut c = claims.clone();
        c["username"] = json!(format!("ok{i}"));
        c["exp"] = json!(exp);
        handshake(&server, &sign(c.clone()))
            .await
            .unwrap_or_else(|r| panic!("{c}: {r:?}"));
    }
}

#[tokio::test]
async fn requests_naming_a_user_outside_the_range_get_an_error_with_their_ref() {
    let server = TestServer::start().await;
    let mut c = server.connect(1, "al").await;
    for (i, (request, field)) in [
        (json!({"type": "dm", "to": 0, "content": "x"}), "to"),
        (json!({"type": "dm", "to": -5, "content": "x"}), "to"),
        (
            json!({"type": "dm", "to": MAX_USER_ID + 1, "content": "x"}),
            "to",
        ),
        (json!({"type": "dm_history", "with": 0}), "with"),
        (
            json!({"type": "dm_history", "with": MAX_USER_ID + 1}),
            "with",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = request;
        request["ref"] = json!(i);
        c.send(request.clone()).await;
        let (r, text) = error(&mut c).await;
        assert_eq!(r, json!(i), "{request}");
        assert_eq!(
            text,
            format!("`{field}` must be a user id (1 to 9007199254740991)"),
            "{request}"
        );
    }
    assert_eq!(server.count("SELECT count(*) FROM messages").await, 0);
    still_usable(&mut c).await;
}

#[tokio::test]
async fn usernames_with_control_invisible_or_bidi_characters_are_refused() {
    let server = TestServer::start().await;
    let long = "x".repeat(65);
    for (i, name) in [
        "",
        "   ",
        "a\u{0007}b",
        "tab\tname",
        "line\nbreak",
        "\u{7f}del",
        "zero\u{200B}width",
        "zw\u{200C}nj",
        "zw\u{200D}j",
        "\u{FEFF}bom",
        "left\u{200E}mark",
        "right\u{200F}mark",
        "arabic\u{061C}mark",
        "evil\u{202E}gnp.exe",
        "emb\u{202A}ed",
        "iso\u{2066}late",
        "pop\u{2069}",
        long.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        let token = sign(json!({"user_id": i + 1, "username": name, "exp": exp_in(600)}));
        let r = refused(&server, &token, &format!("{name:?}")).await;
        assert_eq!(r.status, 401, "{name:?}");
        assert!(r.body.contains("username"), "{name:?}: {}", r.body);
    }
    assert_eq!(
        server
            .count("SELECT count(*) FROM users WHERE id <> 0")
            .await,
        0
    );
    // 64 bytes, accents and spaces inside are fine.
    for (i, name) in ["x".repeat(64), "Zoë Ångström".into(), "名前".into()]
        .into_iter()
        .enumerate()
    {
        let token = sign(json!({"user_id": 100 + i, "username": name, "exp": exp_in(600)}));
        handshake(&server, &token)
            .await
            .unwrap_or_else(|r| panic!("{name:?}: {r:?}"));
    }
}

#[tokio::test]
async fn look_alike_usernames_collide_with_the_original() {
    let server = TestServer::start().await;
    let alice = server.connect(1, "alice").await;
    for (id, name) in [
        (2, "Alice"),
        (3, "alice "),
        (4, " ALICE"),
        (5, "\u{430}lice"),   // Cyrillic а
        (6, "ａｌｉｃｅ"),    // fullwidth: NFKC
        (7, "al\u{200B}ice"), // zero-width space
    ] {
        let r = refused(&server, &server.token(id, name), &format!("{name:?}")).await;
        if name.contains('\u{200B}') {
            assert!([401, 409].contains(&r.status), "{name:?}: {r:?}");
        } else {
            assert_eq!(
                (r.status, r.body.as_str()),
                (409, "username already taken by another user"),
                "{name:?}"
            );
        }
    }
    alice.close().await;
    // The owner may change the case of its own name.
    let mut again = server.connect(1, "Alice").await;
    still_usable(&mut again).await;
    let db = server.db().await;
    let names: Vec<String> = db
        .query("SELECT username FROM users WHERE id <> 0 ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, vec!["Alice".to_owned()]);
    // Someone else can take a name that only looks different enough.
    server.connect(9, "bob").await;
}

#[tokio::test]
async fn existing_users_get_their_keys_at_start_up_and_the_oldest_keeps_a_contested_name() {
    let mut server = TestServer::start().await;
    let db = server.db().await;
    // Rows from before the key column (as the migration leaves them).
    db.batch_execute(
        "INSERT INTO users (id, username, created_at) VALUES \
           (10, 'Bob', now() - interval '2 days'), \
           (11, 'bob', now() - interval '1 day'), \
           (12, 'carol', now())",
    )
    .await
    .unwrap();
    server.restart().await;
    let keys: Vec<(i64, Option<String>)> = db
        .query(
            "SELECT id, username_key FROM users WHERE id <> 0 ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(keys[0].1.is_some(), "{keys:?}");
    assert_eq!(
        keys[1].1, None,
        "the later duplicate keeps no key: {keys:?}"
    );
    assert!(keys[2].1.is_some(), "{keys:?}");
    server.connect(10, "Bob").await;
    server.connect(12, "carol").await;
    let r = refused(&server, &server.token(11, "bob"), "later duplicate").await;
    assert_eq!(r.status, 409);
    // With a name of its own, the later user is back.
    server.connect(11, "bobby").await;
}

#[tokio::test]
async fn ref_is_kept_when_a_field_has_the_wrong_type() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let mut c = server.connect(1, "al").await;
    for (i, text) in [
        r#"{"type":"dm_history","with":"1","ref":"R1"}"#,
        r#"{"type":"dm","to":"two","content":"x","ref":"R2"}"#,
        r#"{"type":"room_history","room":5,"ref":"R3"}"#,
        r#"{"ref":"R4","type":"join","room":"r","since":"yesterday"}"#,
        r#"{"type":"message","room":"r","content":["x"],"ref":"R5"}"#,
        r#"{"type":7,"ref":"R6"}"#,
        r#"{"type":"read","room":"r","up_to":1.5,"ref":"R7"}"#,
        r#"{"type":"refresh","token":{},"ref":"R8"}"#,
    ]
    .into_iter()
    .enumerate()
    {
        c.send_raw(Message::text(text)).await;
        let (r, message) = error(&mut c).await;
        assert_eq!(r, format!("R{}", i + 1), "{text}: {message}");
        assert!(message.contains("invalid type"), "{text}: {message}");
    }
    // A numeric ref too.
    c.send_raw(Message::text(
        r#"{"type":"dm_history","with":"1","ref":42}"#,
    ))
    .await;
    assert_eq!(error(&mut c).await.0, 42);
    // Not JSON at all: no ref to give back.
    c.send_raw(Message::text(r#"{"type":"rooms","ref":"R9""#))
        .await;
    assert_eq!(error(&mut c).await.0, Value::Null);
    still_usable(&mut c).await;
}

#[tokio::test]
async fn only_json_objects_are_requests() {
    let server = TestServer::start().await;
    server.create_room("general").await;
    let mut c = server.connect(1, "al").await;
    c.join("general").await;
    for text in [
        r#"["message",null,"general","hi"]"#,
        r#"  ["message", null, "general", "hi"]"#,
        r#"["join","general"]"#,
        r#""rooms""#,
        "5",
        "null",
        "true",
    ] {
        c.send_raw(Message::text(text)).await;
        let (r, message) = error(&mut c).await;
        assert_eq!(r, Value::Null, "{text}");
        assert_eq!(message, "request must be a JSON object", "{text}");
    }
    c.expect_nothing(Duration::from_millis(200)).await;
    assert_eq!(server.count("SELECT count(*) FROM messages").await, 0);
    // Whitespace before an object is still an object.
    c.send_raw(Message::text(" \n{\"type\":\"rooms\",\"ref\":1}"))
        .await;
    assert_eq!(c.recv_type("rooms").await["ref"], 1);
}

#[tokio::test]
async fn a_token_with_a_crit_header_is_refused() {
    let server = TestServer::start().await;
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp".into()]);
    let claims = json!({"user_id": 1, "username": "al", "exp": exp_in(600)});
    let crit = sign_with(&header, &claims);
    let r = refused(&server, &crit, "crit").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            401,
            "token header has a crit member (no extension is understood)"
        )
    );
    let mut c = server.connect(1, "al").await;
    c.send(json!({"type": "refresh", "token": crit, "ref": "c"}))
        .await;
    let (r, text) = error(&mut c).await;
    assert_eq!(r, "c");
    assert_eq!(
        text,
        "refresh refused: token header has a crit member (no extension is understood)"
    );
    still_usable(&mut c).await;
}
