//! Start-up while the database is down: the server waits (retrying with
//! back-off) and becomes ready once the database is up.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_once_the_database_comes_up() {
    let _serial = SERIAL.lock().await;
    let pg = PrivatePg::create().await;
    pg.stop().await;

    let mut server = ServerProcess::spawn(&pg.url, &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        server.is_running(),
        "the server exited while the database was down ({:?}):\n{}",
        server.try_status(),
        server.log_text()
    );
    server.assert_no_panic();
    assert!(
        server.log_contains("database unreachable"),
        "expected a 'database unreachable' warning:\n{}",
        server.log_text()
    );
    assert!(
        !server.log_contains("chat server ready"),
        "ready without a database:\n{}",
        server.log_text()
    );

    pg.start().await;
    server.wait_ready(Duration::from_secs(30)).await;

    create_room(&pg.url, "late").await;
    let mut alice = Client::connect(&server, 1, "alice").await;
    alice.join("late").await;
    alice
        .send(json!({"type": "message", "room": "late", "content": "finally"}))
        .await;
    let echo = alice.recv().await;
    assert_eq!(echo["type"], "message", "{echo}");
    assert_eq!(echo["data"]["content"], "finally");
    let id = echo["data"]["id"].as_i64().unwrap();
    let stored = stored_by_id(&pg.url, &[id]).await;
    assert_eq!(stored.get(&id).map(String::as_str), Some("finally"));
    server.assert_no_panic();
    drop(server);
    drop(pg);
}
