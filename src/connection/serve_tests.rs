//! [`serve`] over an in-memory socket, with a real session on a test
//! shard context: what the client sees for each way a connection ends.
use super::*;
use crate::auth::Identity;
use crate::config::Config;
use crate::router::Origin;
use crate::shard::testing;
use crate::shard::Shard;
use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::protocol::Role;

type Client = WebSocketStream<DuplexStream>;

/// Runs `serve` for user 7 (token valid for `ttl` seconds) against the
/// client script `client`; returns why the server side ended, and the
/// shard (for its counters).
async fn run<F, Fut>(
    config: Config,
    ttl: i64,
    prepare: impl FnOnce(&Shard, &Outbox),
    client: F,
) -> (Closed, Rc<Shard>)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (shard, _inbox, _writer) = testing::shard(config);
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let outbox = Rc::new(Outbox::new(0, 7));
    shard.registry.borrow_mut().register(outbox.clone(), []);
    prepare(&shard, &outbox);
    let identity = Identity {
        user_id: 7,
        username: "alice".into(),
        expires_at: chrono::Utc::now().timestamp() + ttl,
    };
    let session = Session::new(
        shard.clone(),
        Origin { shard: 0, conn: 0 },
        &identity,
        shard
            .user_limits
            .open(identity.user_id)
            .expect("slot")
            .budget(),
    );
    let host = Host {
        config: &shard.config,
        metrics: shard.metrics(),
        draining: shard.draining_flag(),
        outbox_limits: shard.outbox_limits,
    };
    let server_ws =
        WebSocketStream::from_raw_socket(server_io, Role::Server, Some(ws_config(&shard.config)))
            .await;
    let client_ws = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    let (closed, ()) = tokio::join!(serve(host, server_ws, outbox, session), client(client_ws));
    (closed, shard)
}

async fn next_text(ws: &mut Client) -> serde_json::Value {
    loop {
        match ws.next().await.expect("a frame").expect("no error") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

async fn close_code(ws: &mut Client) -> u16 {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn requests_are_answered_and_a_client_close_ends_it() {
    let (closed, _) = run(
        testing::config(),
        3600,
        |_, _| {},
        |mut ws| async move {
            ws.send(Message::text(r#"{"type":"nope","ref":1}"#))
                .await
                .unwrap();
            let v = next_text(&mut ws).await;
            assert_eq!(
                (v["type"].as_str(), v["ref"].as_i64()),
                (Some("error"), Some(1))
            );
            ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
            let v = next_text(&mut ws).await;
            assert!(
                v["data"]["message"].as_str().unwrap().contains("binary"),
                "{v}"
            );
            ws.close(None).await.unwrap();
            while ws.next().await.is_some() {}
        },
    )
    .await;
    assert_eq!(closed, Closed::ByClient);
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let mut config = testing::config();
    config.max_message_bytes = 64;
    let (closed, _) = run(
        config,
        3600,
        |_, _| {},
        |mut ws| async move {
            ws.send(Message::text("x".repeat(100))).await.unwrap();
            assert_eq!(close_code(&mut ws).await, 1009);
        },
    )
    .await;
    assert_eq!(closed, Closed::BadInput("message too big"));
}

#[tokio::test]
async fn a_flooder_is_refused_then_closed_with_1008_and_counted() {
    let mut config = testing::config();
    config.rate_limit = 1;
    config.rate_burst = 1;
    config.flood_close_secs = 0;
    let (closed, shard) = run(
        config,
        3600,
        |_, _| {},
        |mut ws| async move {
            for _ in 0..2 {
                ws.send(Message::text(r#"{"type":"rooms"}"#)).await.unwrap();
            }
            assert_eq!(close_code(&mut ws).await, 1008);
        },
    )
    .await;
    assert_eq!(closed, Closed::Flood);
    assert_eq!(shard.metrics().flood_disconnects.get(), 1);
    assert_eq!(
        shard.metrics().rate_limited.get(),
        0,
        "closed at the first refusal"
    );
}

#[tokio::test]
async fn an_expired_token_closes_with_4001() {
    let mut config = testing::config();
    config.jwt_leeway_secs = 0;
    let (closed, _) = run(
        config,
        -10,
        |_, _| {},
        |mut ws| async move {
            assert_eq!(close_code(&mut ws).await, TOKEN_EXPIRED);
        },
    )
    .await;
    assert_eq!(closed, Closed::TokenExpired);
}

#[tokio::test]
async fn an_overflowing_outbox_closes_with_1008() {
    let (closed, shard) = run(
        testing::config(),
        3600,
        |shard, outbox| {
            let limits = OutboxLimits {
                frames: 2,
                ..shard.outbox_limits
            };
            // Past twice the bound: slow at once.
            for _ in 0..5 {
                outbox.push(encode_error("filler"), limits);
            }
        },
        |mut ws| async move {
            assert_eq!(close_code(&mut ws).await, 1008);
        },
    )
    .await;
    assert_eq!(closed, Closed::SlowConsumer);
    assert_eq!(shard.metrics().slow_consumers.get(), 1);
}

#[tokio::test]
async fn going_away_writes_what_is_queued_then_closes_with_1001() {
    let (closed, _) = run(
        testing::config(),
        3600,
        |shard, outbox| {
            shard.draining_flag().set(true);
            outbox.push(encode_error("last words"), shard.outbox_limits);
            outbox.go_away();
        },
        |mut ws| async move {
            let v = next_text(&mut ws).await;
            assert_eq!(v["data"]["message"], "last words");
            assert_eq!(close_code(&mut ws).await, 1001);
        },
    )
    .await;
    assert_eq!(closed, Closed::ShuttingDown);
}
