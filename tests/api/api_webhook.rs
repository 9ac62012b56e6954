//! Issue 15, the webhook deliverer: signed batches in seq order to a
//! receiver that fails (500), times out and refuses connections for a
//! while, across a server restart; then recovers and gets every event, in
//! order, and the cursor in PostgreSQL matches. A new webhook starts at
//! the feed's head.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Client, TestServer};
use crate::webhook_receiver::{Mode, Receiver};

const SECRET: &str = "webhook-test-secret";

fn with_webhook(c: &mut chat_server::Config, url: &str) {
    c.webhook_url = Some(url.to_owned());
    c.webhook_secret = Some(SECRET.into());
    c.webhook_batch = 7;
    c.webhook_timeout = Duration::from_millis(300);
    c.webhook_backoff_max = Duration::from_millis(200);
    c.feed_poll_ms = 20;
}

async fn say(c: &mut Client, room: &str, content: &str) {
    let v = c
        .ask(json!({"type": "message", "room": room, "content": content}))
        .await;
    assert_eq!(v["type"], "message", "{v}");
}

async fn one(server: &TestServer, sql: &str, url: &str) -> Option<i64> {
    server
        .db()
        .await
        .query_opt(sql, &[&url])
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// The webhook's stored cursor, once it exists.
async fn stored_cursor(server: &TestServer, url: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(c) = one(
            server,
            "SELECT seq FROM webhook_cursors WHERE url = $1",
            url,
        )
        .await
        {
            return c;
        }
        assert!(Instant::now() < deadline, "no cursor for {url}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn head(server: &TestServer) -> i64 {
    server.count("SELECT seq FROM feed_head").await
}

/// Waits until `what` holds, failing after `within`.
async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_event_arrives_signed_in_order_through_failures_timeouts_refusals_and_a_restart() {
    let mut receiver = Receiver::start(SECRET);
    let url = receiver.url();
    let mut server = TestServer::start_with(|c| with_webhook(c, &url)).await;
    assert_eq!(
        stored_cursor(&server, &url).await,
        0,
        "a new webhook starts at the head (0)"
    );
    server.create_room("r").await;
    let mut a = server.connect(1, "alice").await;
    a.join("r").await;

    // Healthy: batches of at most 7 arrive.
    for i in 0..10 {
        say(&mut a, "r", &format!("ok {i}")).await;
    }
    let h = head(&server).await;
    until("the first events", Duration::from_secs(20), || {
        receiver.seen(|s| s.last()) == h
    })
    .await;

    // 500s, then answers too late: retried, nothing recorded.
    receiver.set_mode(Mode::Fail);
    for i in 0..5 {
        say(&mut a, "r", &format!("failed {i}")).await;
    }
    until("three 500s", Duration::from_secs(20), || {
        receiver.seen(|s| s.failed) >= 3
    })
    .await;
    receiver.set_mode(Mode::Slow(Duration::from_secs(2)));
    until("two timeouts", Duration::from_secs(20), || {
        receiver.seen(|s| s.slow) >= 2
    })
    .await;

    // Refused connections, and a restart of the server meanwhile.
    receiver.stop();
    for i in 0..5 {
        say(&mut a, "r", &format!("refused {i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chat_webhook_failures_total "))
        .expect("chat_webhook_failures_total")
        .parse()
        .unwrap();
    assert!(failures >= 5, "{metrics}");
    assert!(metrics.contains("chat_webhook_delivering 1"), "{metrics}");
    a.close().await;
    server.stop().await;
    let cursor_at_restart = one(
        &server,
        "SELECT seq FROM webhook_cursors WHERE url = $1",
        &url,
    )
    .await
    .unwrap();
    assert_eq!(cursor_at_restart, receiver.seen(|s| s.last()));
    server.restart().await;
    let mut a = server.connect(1, "alice").await;
    a.join("r").await;
    for i in 0..5 {
        say(&mut a, "r", &format!("after restart {i}")).await;
    }
    let accepted_before = receiver.seen(|s| s.accepted.len());

    // Recovery: everything arrives.
    receiver.set_mode(Mode::Ok);
    receiver.resume();
    let h = head(&server).await;
    until("every event", Duration::from_secs(30), || {
        receiver.seen(|s| s.last()) == h
    })
    .await;

    receiver.seen(|s| {
        assert!(s.bad.is_empty(), "{:?}", s.bad);
        assert!(s
            .accepted
            .iter()
            .all(|(_, b)| !b.is_empty() && b.len() <= 7));
        // In order, every seq; a re-send starts at a batch's start.
        assert_eq!(s.assert_every_seq_in_order(), h);
        // The restarted server resumed from the stored cursor.
        let (_, resumed) = &s.accepted[accepted_before];
        assert_eq!(resumed[0]["seq"].as_i64().unwrap(), cursor_at_restart + 1);
        let contents: Vec<&str> = s
            .accepted
            .iter()
            .flat_map(|(_, b)| b.iter())
            .filter(|e| e["type"] == "message.created")
            .map(|e| e["message"]["content"].as_str().unwrap())
            .collect();
        assert!(contents.contains(&"failed 4") && contents.contains(&"after restart 4"));
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while one(
        &server,
        "SELECT seq FROM webhook_cursors WHERE url = $1",
        &url,
    )
    .await
        != Some(h)
    {
        assert!(
            Instant::now() < deadline,
            "the stored cursor never reached {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_webhook_configured_for_the_first_time_starts_at_the_feeds_head() {
    let receiver = Receiver::start(SECRET);
    let url = receiver.url();
    let mut server = TestServer::start().await;
    server.create_room("r").await;
    let mut a = server.connect(1, "alice").await;
    a.join("r").await;
    say(&mut a, "r", "before the webhook").await;
    let h = head(&server).await;
    assert!(h >= 3);
    a.close().await;

    server.stop().await;
    with_webhook(&mut server.config, &url);
    server.restart().await;
    assert_eq!(stored_cursor(&server, &url).await, h);
    let mut a = server.connect(1, "alice").await;
    a.join("r").await;
    say(&mut a, "r", "after").await;
    let new_head = head(&server).await;
    until("the new events", Duration::from_secs(20), || {
        receiver.seen(|s| s.last()) == new_head
    })
    .await;
    let seqs = receiver.seen(|s| s.seqs());
    assert_eq!(seqs, ((h + 1)..=new_head).collect::<Vec<_>>());
}
