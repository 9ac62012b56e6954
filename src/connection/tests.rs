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

/// A connection's task lives as long as the connection: its future is
/// part of the memory of every connection (issue 16). The handshake's
/// states, paged replies, closing, pings and writes are boxed or run
/// elsewhere, so that what stays is what serving needs (release: 1552
/// bytes since the socket lives in its own allocation, shared with the
/// shard's flusher; 2144 before that; 14 KiB when the handshake's task
/// served the WebSocket).
#[test]
fn a_connection_task_keeps_only_what_serving_needs() {
    let task = crate::accept::connection_task_size();
    assert!(task <= 2560, "a connection's task future is {task} bytes");
}
