//! The plain-HTTP side of the port: the page and its assets, `/metrics`,
//! `/dev/token`; and WebSocket upgrades still working on `/` and `/ws`.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Client, TestServer};

/// A response read from a raw socket.
struct Http {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

async fn get(server: &TestServer, target: &str) -> Http {
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(crate::helpers::RECV_TIMEOUT, s.read_to_end(&mut raw))
        .await
        .expect("the server closes after its response")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("complete head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Http {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// Sum of every sample of `name` (any labels) in an OpenMetrics text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn page_and_assets_are_served_with_their_headers() {
    let server = TestServer::start().await;
    let page = get(&server, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        page.header("content-length"),
        Some(page.body.len().to_string().as_str())
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert!(page
        .text()
        .contains(r#"<script type="module" src="/app.js""#));

    for (path, kind, needle) in [
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "from './sdk/chat.js'",
        ),
        // The page's connection: the JavaScript SDK (clients/js).
        (
            "/sdk/chat.js",
            "text/javascript; charset=utf-8",
            "new this.WebSocket(",
        ),
        (
            "/edits.js",
            "text/javascript; charset=utf-8",
            "export function",
        ),
        (
            "/members.js",
            "text/javascript; charset=utf-8",
            "export function",
        ),
        ("/style.css", "text/css; charset=utf-8", ".composer"),
        ("/favicon.svg", "image/svg+xml", "<svg"),
        ("/index.html", "text/html; charset=utf-8", "<!doctype html>"),
    ] {
        let r = get(&server, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(kind), "{path}");
        assert!(r.text().contains(needle), "{path}");
    }
    assert_eq!(get(&server, "/nope").await.status, 404);
    // `/ws` is only a WebSocket endpoint.
    assert_eq!(get(&server, "/ws").await.status, 400);
    assert_eq!(get(&server, "/healthz").await.status, 200);
}

#[tokio::test]
async fn websocket_upgrades_on_root_and_on_ws() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    for path in ["/", "/ws"] {
        let url = format!(
            "ws://{}{path}?token={}",
            server.addr(),
            server.token(1, "ana")
        );
        let mut c = Client::connect_url(&url, None).await.expect("upgrade");
        c.join("r").await;
        c.send(json!({"type": "message", "room": "r", "content": path}))
            .await;
        assert_eq!(c.recv_type("message").await["data"]["content"], path);
        c.close().await;
    }
}

#[tokio::test]
async fn dev_token_is_404_without_dev() {
    let server = TestServer::start().await;
    let r = get(&server, "/dev/token?user_id=1&username=ana").await;
    assert_eq!(r.status, 404);
    assert!(!r.text().contains('.'), "no token leaked: {}", r.text());
    let enabled = get(&server, "/dev/enabled").await;
    assert_eq!((enabled.status, enabled.text()), (200, "false\n"));
}

#[tokio::test]
async fn dev_token_signs_a_working_token_with_dev() {
    let server = TestServer::start_with(|c| c.dev = true).await;
    server.create_room("r").await;
    let enabled = get(&server, "/dev/enabled").await;
    assert_eq!(enabled.text(), "true\n");
    assert_eq!(get(&server, "/dev/token").await.status, 400);
    assert_eq!(
        get(&server, "/dev/token?user_id=-4&username=ana")
            .await
            .status,
        400
    );
    let r = get(&server, "/dev/token?user_id=42&username=ana%20b").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let token = r.text().trim();
    let url = format!("ws://{}/ws?token={token}", server.addr());
    let mut c = Client::connect_url(&url, None)
        .await
        .expect("dev token accepted");
    c.join("r").await;
    c.send(json!({"type": "message", "room": "r", "content": "hi"}))
        .await;
    let m = c.recv_type("message").await;
    assert_eq!(m["data"]["fromUser"], 42);
    assert_eq!(m["data"]["username"], "ana b");
}

#[tokio::test]
async fn metrics_count_connections_refusals_frames_and_messages() {
    let server = TestServer::start().await;
    server.create_room("r").await;
    let before = get(&server, "/metrics").await;
    assert_eq!(before.status, 200);
    assert!(before
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = before.text();
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(metric(text, "chat_connections"), 0.0);
    assert_eq!(metric(text, "chat_messages_persisted_total"), 0.0);

    let mut a = server.connect(1, "ana").await;
    let mut b = server.connect(2, "ben").await;
    a.join("r").await;
    b.join("r").await;
    for i in 0..3 {
        a.send(json!({"type": "message", "room": "r", "content": format!("m{i}")}))
            .await;
        a.recv_type("message").await;
        b.recv_type("message").await;
    }
    let refused = Client::connect_url(&format!("{}?token=garbage", server.url()), None)
        .await
        .expect_err("bad token refused");
    assert_eq!(refused.status, 401);

    let after = get(&server, "/metrics").await;
    let text = after.text();
    assert_eq!(metric(text, "chat_connections"), 2.0, "{text}");
    assert!(metric(text, "chat_handshakes_accepted_total") >= 2.0);
    let invalid: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("chat_handshakes_refused_total{")
                && l.contains("reason=\"invalid_token\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(invalid, 1.0, "{text}");
    assert!(
        metric(text, "chat_frames_in_total") >= 5.0,
        "2 joins + 3 messages"
    );
    assert!(
        metric(text, "chat_frames_out_total") >= 8.0,
        "2 acks + 3 x 2 copies"
    );
    assert_eq!(metric(text, "chat_messages_persisted_total"), 3.0);
    assert!(metric(text, "chat_batch_size_count") >= 1.0);
    assert_eq!(metric(text, "chat_batch_size_sum"), 3.0);
    assert!(metric(text, "chat_commit_latency_seconds_count") >= 1.0);
    assert_eq!(metric(text, "chat_delivery_latency_seconds_count"), 3.0);
    assert!(text.contains("chat_shard_inbox_depth{shard=\"1\"}"));
    assert!(text.contains("chat_writer_queue_depth{writer=\"0\"}"));
    for family in [
        "chat_slow_consumer_disconnects_total",
        "chat_rate_limited_requests_total",
        "chat_db_errors_total",
    ] {
        assert!(text.contains(family), "{family} missing");
    }

    a.close().await;
    b.close().await;
    // Closed connections leave the gauge.
    let deadline = tokio::time::Instant::now() + crate::helpers::RECV_TIMEOUT;
    loop {
        let text = get(&server, "/metrics").await.text().to_owned();
        if metric(&text, "chat_connections") == 0.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rate_limited_requests_are_counted() {
    let server = TestServer::start_with(|c| {
        c.rate_limit = 1;
        c.rate_burst = 2;
        c.flood_close_secs = 60;
    })
    .await;
    let mut a = server.connect(1, "ana").await;
    for _ in 0..5 {
        a.send(json!({"type": "dm_history", "with": 1})).await;
    }
    let mut limited = 0;
    for _ in 0..5 {
        let f = a.recv().await;
        if f["type"] == "error" && f["data"]["message"] == "rate limited" {
            limited += 1;
        }
    }
    assert!(limited >= 2, "{limited}");
    let text = get(&server, "/metrics").await.text().to_owned();
    assert_eq!(
        metric(&text, "chat_rate_limited_requests_total"),
        f64::from(limited),
        "{text}"
    );
}
