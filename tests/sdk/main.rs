//! The JavaScript SDK's tests (`clients/js/test/`, `node --test`) against
//! the real server binary and PostgreSQL: this test creates a fresh
//! database and hands node the binary, the database URL, the JWT secret
//! and a psql command; the node tests start, kill and restart the server
//! themselves (loopback ports, bounded waits) and check the type
//! declarations with `tsc --noEmit`. `scripts/test.sh` installs Node.js
//! and the SDK's pinned dev dependency (TypeScript).

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// Every node test together must finish within this.
const NODE_TIMEOUT: Duration = Duration::from_secs(240);

/// Node 22 has a global `WebSocket`; Node 20 and 21 need a flag for it.
fn node_options() -> Option<&'static str> {
    let out = std::process::Command::new("node")
        .arg("--version")
        .output()
        .expect("node not found: install Node.js 20+ (scripts/test.sh does)");
    let version = String::from_utf8_lossy(&out.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "the SDK needs Node.js 20 or later, found {version}"
    );
    (major < 22).then_some("--experimental-websocket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_node_tests_against_the_real_server() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sdk = repo.join("clients/js");
    assert!(
        sdk.join("node_modules/typescript").exists(),
        "TypeScript is not installed: run `npm ci` in {} (scripts/test.sh does)",
        sdk.display()
    );
    let database = helpers::fresh_database().await;
    let psql = serde_json::json!([repo.join("scripts/pg.sh"), "psql"]).to_string();
    let mut node = Command::new("node");
    node.args([
        "--test",
        "--test-concurrency=1",
        "test/unit.test.mjs",
        "test/types.test.mjs",
        "test/readme.test.mjs",
        "test/sdk.test.mjs",
    ])
    .current_dir(&sdk)
    .env("CHAT_SDK_SERVER", env!("CARGO_BIN_EXE_chat_server"))
    .env("CHAT_SDK_DATABASE_URL", &database)
    .env("CHAT_SDK_JWT_SECRET", "sdk-test-secret")
    .env("CHAT_SDK_PSQL", psql)
    .kill_on_drop(true);
    if let Some(flag) = node_options() {
        node.env("NODE_OPTIONS", flag);
    }
    let out = tokio::time::timeout(NODE_TIMEOUT, node.output())
        .await
        .expect("the SDK's node tests did not finish in time")
        .expect("node not found: install Node.js 20+ (scripts/test.sh does)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node --test clients/js/test/ failed ({}):\n{stdout}{stderr}",
        out.status
    );
    eprintln!("{stdout}");
}
