//! Malformed input of each kind gets an error frame, and the connection
//! keeps working afterwards.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::TestServer;

#[tokio::test]
async fn each_kind_of_bad_request_gets_an_error_and_the_connection_stays_usable() {
    let server = TestServer::start_with(|c| c.max_content = 100).await;
    server.create_room("r").await;
    server.create_room("other").await;
    let mut a = server.connect(1, "a").await;
    a.join("r").await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "malformed request"),
        (Message::text("[1,2,3]"), "request must be a JSON object"),
        (Message::text(r#"{"room":"r"}"#), "missing field `type`"),
        (
            Message::text(r#"{"type":"shout"}"#),
            "unknown request type `shout`",
        ),
        (Message::text(r#"{"type":"join"}"#), "missing field `room`"),
        (
            Message::text(r#"{"type":"message","room":"r"}"#),
            "missing field `content`",
        ),
        (
            Message::text(r#"{"type":"dm","content":"x"}"#),
            "missing field `to`",
        ),
        (
            Message::text(r#"{"type":"dm","to":"two","content":"x"}"#),
            "invalid type",
        ),
        (
            Message::text(r#"{"type":"room_history","room":5}"#),
            "invalid type",
        ),
        (
            Message::text(r#"{"type":"message","room":"r","content":""}"#),
            "must not be empty",
        ),
        (
            Message::text(
                json!({"type":"message","room":"r","content":"x".repeat(101)}).to_string(),
            ),
            "too long",
        ),
        (
            Message::text(r#"{"type":"message","room":"r","content":"a\u0000b"}"#),
            "NUL",
        ),
        (
            Message::text(r#"{"type":"message","room":"other","content":"hi"}"#),
            "join room 'other'",
        ),
        (
            Message::text(r#"{"type":"room_history","room":"other"}"#),
            "join room 'other'",
        ),
        (
            Message::text(r#"{"type":"room_history","room":"r","limit":0}"#),
            "limit must be a positive integer",
        ),
        (
            Message::text(r#"{"type":"join","room":""}"#),
            "invalid room name",
        ),
        (
            Message::binary(vec![1u8, 2, 3]),
            "binary frames are not supported",
        ),
    ];
    for (frame, expected) in cases {
        let shown = format!("{frame:?}");
        a.send_raw(frame).await;
        let e = a.recv_type("error").await;
        let msg = e["data"]["message"].as_str().unwrap();
        assert!(msg.contains(expected), "{shown}: got {msg:?}");
    }
    // Exactly 100 characters (multi-byte) is accepted.
    let max = "é".repeat(100);
    a.send(json!({"type": "message", "room": "r", "content": max}))
        .await;
    assert_eq!(a.recv_type("message").await["data"]["content"], max);
    a.expect_nothing(Duration::from_millis(200)).await;
    let n = server.count("SELECT count(*) FROM messages").await;
    assert_eq!(n, 1, "nothing refused was stored");
}
