//! `/healthz` and `/readyz` follow the database: ready, not ready during an
//! outage (the process stays healthy), ready again by itself afterwards.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// `GET path` on the server's port; returns the status code.
async fn get(server: &ServerProcess, path: &str) -> u16 {
    let addr = server
        .url()
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("probe answered in time")
        .unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line")
}

async fn wait_for_status(
    server: &ServerProcess,
    path: &str,
    want: u16,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        if get(server, path).await == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{path} never answered {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_recovers_by_itself() {
    let _serial = SERIAL.lock().await;
    let pg = PrivatePg::create().await;
    let server = ServerProcess::start(&pg.url, &[]).await;
    assert_eq!(get(&server, "/healthz").await, 200);
    assert_eq!(get(&server, "/readyz").await, 200);

    pg.stop().await;
    wait_for_status(&server, "/readyz", 503, Duration::from_secs(10)).await;
    assert_eq!(get(&server, "/healthz").await, 200, "alive while not ready");

    pg.start().await;
    // No traffic needed: the writers reconnect by themselves.
    let took = wait_for_status(&server, "/readyz", 200, Duration::from_secs(15)).await;
    println!("ready again {took:?} after the database came back");
    server.assert_no_panic();
}
