use super::*;

fn config() -> crate::config::Config {
    let mut c =
        crate::config::Config::for_tests("postgres://x", "s", "127.0.0.1:0".parse().unwrap());
    c.ping_interval_secs = 10;
    c.idle_timeout_secs = 25;
    c
}

#[test]
fn heartbeat_pings_then_times_out_idle_clients() {
    let now = Instant::now();
    let exp = chrono::Utc::now().timestamp() + 3600;
    let mut h = Heartbeat::new(&config(), exp, now);
    assert_eq!(h.next_deadline(), now + Duration::from_secs(10));
    assert_eq!(h.tick(now + Duration::from_secs(5)), Tick::Wait);
    assert_eq!(h.tick(now + Duration::from_secs(10)), Tick::Ping);
    assert_eq!(h.next_deadline(), now + Duration::from_secs(20));
    h.heard_from_client(now + Duration::from_secs(12));
    assert_eq!(h.tick(now + Duration::from_secs(20)), Tick::Ping);
    assert_eq!(
        h.tick(now + Duration::from_secs(37)),
        Tick::Idle,
        "25 s after the last frame"
    );
}

#[test]
fn heartbeat_closes_at_token_expiry() {
    let now = Instant::now();
    let exp = chrono::Utc::now().timestamp() + 4;
    let h = Heartbeat::new(&config(), exp, now);
    assert!(h.next_deadline() <= now + Duration::from_secs(4));
    let mut h = h;
    assert_eq!(h.tick(now + Duration::from_secs(5)), Tick::Expired);
    let past = Heartbeat::new(&config(), exp - 100, now);
    assert_eq!(past.next_deadline(), now);
}

#[test]
fn an_expiry_far_in_the_future_does_not_overflow() {
    let now = Instant::now();
    let h = Heartbeat::new(&config(), i64::MAX, now);
    assert!(h.next_deadline() > now);
    let h = Heartbeat::new(&config(), i64::MIN, now);
    assert_eq!(h.next_deadline(), now);
}

#[test]
fn refresh_moves_the_expiry() {
    let now = Instant::now();
    let exp = chrono::Utc::now().timestamp() + 4;
    let mut h = Heartbeat::new(&config(), exp, now);
    h.refresh(exp + 3600, now);
    assert_eq!(h.tick(now + Duration::from_secs(5)), Tick::Wait);
    assert!(
        h.next_deadline() <= now + Duration::from_secs(10),
        "pings go on"
    );
}

/// The size of the future `f` returns, without building its arguments.
fn future_size<A, F: std::future::Future>(_: impl FnOnce(A) -> F) -> usize {
    std::mem::size_of::<F>()
}

#[test]
fn print_future_sizes() {
    type Ws = WebSocketStream<tokio::net::TcpStream>;
    let serve =
        future_size(|(h, ws, o, s): (Host<'_>, Ws, Rc<Outbox>, Session)| serve(h, ws, o, s));
    let accept = crate::accept::connection_task_size();
    let wq = future_size(|(ws, o, m): (&mut Ws, &Outbox, &ShardMetrics)| {
        write_queued(
            ws,
            o,
            Duration::ZERO,
            m,
            OutboxLimits {
                frames: 0,
                bytes: 0,
                grace: Duration::ZERO,
            },
        )
    });
    let ws_ = future_size(
        |(ws, o, st, m): (&mut Ws, &Outbox, ReplyStream, &ShardMetrics)| {
            write_stream(
                ws,
                o,
                st,
                Duration::ZERO,
                m,
                OutboxLimits {
                    frames: 0,
                    bytes: 0,
                    grace: Duration::ZERO,
                },
            )
        },
    );
    let cl = future_size(|ws: &mut Ws| close(ws, CloseCode::Away, ""));
    eprintln!(
        "SIZES reply {} wserr {} msg {} outcome {} sleep {} notified {} limiter {} heartbeat {}",
        std::mem::size_of::<Reply>(),
        std::mem::size_of::<WsError>(),
        std::mem::size_of::<Message>(),
        std::mem::size_of::<Outcome>(),
        std::mem::size_of::<tokio::time::Sleep>(),
        std::mem::size_of::<tokio::sync::futures::Notified<'static>>(),
        std::mem::size_of::<RateLimiter>(),
        std::mem::size_of::<Heartbeat>(),
    );
    eprintln!("SIZES write_queued {wq} write_stream {ws_} close {cl}");
    eprintln!(
        "SIZES serve {serve} accept {accept} ws {} session {} outbox {}",
        std::mem::size_of::<Ws>(),
        std::mem::size_of::<Session>(),
        std::mem::size_of::<Outbox>()
    );
}
