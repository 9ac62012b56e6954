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
use tokio_tungstenite::WebSocketStream;

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
    run_on(config, ttl, 1 << 16, prepare, |ws, _| client(ws)).await
}

/// [`run`] over a socket that buffers `buffer` bytes each way, with the
/// connection's outbox given to the client script (to queue frames as the
/// shard would, while the connection runs).
async fn run_on<F, Fut>(
    config: Config,
    ttl: i64,
    buffer: usize,
    prepare: impl FnOnce(&Shard, &Outbox),
    client: F,
) -> (Closed, Rc<Shard>)
where
    F: FnOnce(Client, Rc<Outbox>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (shard, _inbox, _writer) = testing::shard(config);
    let (server_io, client_io) = tokio::io::duplex(buffer);
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
        flusher: &shard.flusher,
    };
    let server_ws =
        WebSocketStream::from_raw_socket(server_io, Role::Server, Some(ws_config(&shard.config)))
            .await;
    let client_ws = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    // The shard's flusher runs beside the connection, as on a real shard.
    let flusher = shard.flusher.run(shard.metrics(), shard.outbox_limits);
    let (closed, ()) = tokio::select! {
        both = async { tokio::join!(serve(host, SharedWs::new(server_ws), outbox.clone(), session), client(client_ws, outbox)) } => both,
        () = flusher => unreachable!("the flusher runs for the shard's life"),
    };
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

/// Issue 16: frames the shard queues for an idle connection are written by
/// the shard's flusher, straight to the socket, in order.
#[tokio::test]
async fn frames_for_an_idle_connection_are_written_directly_in_order() {
    let (closed, shard) = run_on(
        testing::config(),
        3600,
        1 << 16,
        |_, _| {},
        |mut ws, outbox| async move {
            let limits = OutboxLimits::from_config(&testing::config());
            for i in 0..3 {
                outbox.push(encode_error(&format!("live {i}")), limits);
            }
            for i in 0..3 {
                let v = next_text(&mut ws).await;
                assert_eq!(v["data"]["message"], format!("live {i}"));
            }
            assert_eq!(outbox.bytes(), 0, "written bytes no longer count");
            ws.close(None).await.unwrap();
            while ws.next().await.is_some() {}
        },
    )
    .await;
    assert_eq!(closed, Closed::ByClient);
    assert_eq!(shard.metrics().frames_out_direct.get(), 3);
}

/// Issue 16: when the socket is full, a direct write hands over to the
/// connection task, which finishes the flush: every frame arrives, whole
/// and in order, and the outbox's byte count comes back to zero.
#[tokio::test]
async fn a_full_socket_hands_the_rest_to_the_connection_task() {
    let bounded = std::time::Duration::from_secs(10);
    let (closed, shard) = tokio::time::timeout(
        bounded,
        run_on(
            testing::config(),
            3600,
            256,
            |_, _| {},
            |mut ws, outbox| async move {
                let limits = OutboxLimits::from_config(&testing::config());
                // Several passes while the client reads nothing: far more than
                // the socket's 256 bytes.
                for pass in 0..5 {
                    for i in 0..10 {
                        outbox.push(
                            encode_error(&format!("{pass}:{i}:{}", "x".repeat(100))),
                            limits,
                        );
                    }
                    tokio::task::yield_now().await;
                }
                for pass in 0..5 {
                    for i in 0..10 {
                        let v = next_text(&mut ws).await;
                        let text = v["data"]["message"].as_str().expect("message").to_owned();
                        assert!(text.starts_with(&format!("{pass}:{i}:")), "{text}");
                    }
                }
                // The last flush may complete just after the client read it all.
                for _ in 0..100 {
                    if outbox.bytes() == 0 {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                assert_eq!(outbox.bytes(), 0, "every byte written is accounted for");
                ws.close(None).await.unwrap();
                while ws.next().await.is_some() {}
            },
        ),
    )
    .await
    .expect("every frame arrives");
    assert_eq!(closed, Closed::ByClient);
    let direct = shard.metrics().frames_out_direct.get();
    assert!(direct > 0, "the first frames went directly");
    assert_eq!(
        shard.metrics().frames_out.get(),
        50,
        "each frame written once"
    );
}

/// Issue 16: one delivery pass to hundreds of idle connections (a hot
/// room) writes every one of them directly: tokio's cooperative budget
/// (128 socket operations per poll) must not turn the writes past it into
/// hand-offs to the connections' tasks.
#[tokio::test]
async fn one_pass_writes_hundreds_of_connections_directly() {
    const CONNS: usize = 300;
    let (shard, _inbox, _writer) = testing::shard(testing::config());
    let mut clients = Vec::new();
    let mut outboxes = Vec::new();
    for i in 0..CONNS {
        let (server_io, client_io) = tokio::io::duplex(1 << 12);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let outbox = Rc::new(Outbox::new(i as u64, 7));
        outbox.attach(Rc::new(SharedWs::new(server)), shard.flusher.clone());
        outboxes.push(outbox);
        clients.push(WebSocketStream::from_raw_socket(client_io, Role::Client, None).await);
    }
    for outbox in &outboxes {
        outbox.push(encode_error("to everyone"), shard.outbox_limits);
    }
    let flusher = shard.flusher.run(shard.metrics(), shard.outbox_limits);
    let read_all = async {
        for client in &mut clients {
            assert_eq!(next_text(client).await["data"]["message"], "to everyone");
        }
    };
    tokio::select! {
        () = flusher => unreachable!("the flusher runs for the shard's life"),
        read = tokio::time::timeout(std::time::Duration::from_secs(10), read_all) => {
            read.expect("every connection got its frame");
        }
    }
    assert_eq!(shard.metrics().frames_out_direct.get(), CONNS as u64);
    assert_eq!(
        shard.metrics().direct_handoffs.get(),
        0,
        "no connection task had to write"
    );
}
