//! Browser test: the embedded page in headless Chromium (Debian's
//! `chromium`), driven by `tests/browser/chat.mjs` (playwright-core). Two
//! users sign in (one with a dev token, one by pasting a token), scroll up
//! through a room's history, create and join a room, chat, exchange a DM,
//! run a private room (invitation, roles, a mute, edits and deletes, seen
//! live, after a cut-off connection recovers with `since`, and after a
//! reload), and keep chatting across a server restart without losing or
//! duplicating a message. `scripts/test.sh` installs Chromium and the npm
//! packages. Also runs the unit tests of the page's modules
//! (`modules.test.mjs`, Node.js only).

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use helpers::TestServer;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Messages in `general` before the pages open (more than one history page).
const HISTORY_MESSAGES: usize = 80;

/// The whole browser scenario must finish within this.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

fn chromium() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "Chromium not found at {} (set CHROMIUM, or run scripts/test.sh, which installs Debian's `chromium`)",
        path.display()
    );
    path
}

fn script_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci` in {} (scripts/test.sh does)",
        dir.display()
    );
    dir
}

fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("browser")
}

/// The page's modules (`web/edits.js`, `web/members.js`) under
/// `node --test`: edits and deletes applied in id order give the current
/// state; who may edit, delete and moderate.
#[test]
fn page_modules_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = std::process::Command::new("node")
        .args(["--test", "modules.test.mjs"])
        .current_dir(&dir)
        .output()
        .expect("node not found: install Node.js (scripts/test.sh needs it for the browser test)");
    assert!(
        out.status.success(),
        "node --test modules.test.mjs failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_in_the_browser_across_a_restart() {
    let chromium = chromium();
    let dir = script_dir();
    let mut server = TestServer::start_with(|c| c.dev = true).await;
    server.create_room("general").await;
    // History for the page to scroll through: more than one page (50).
    let mut carol = server.connect(3, "carol").await;
    carol.join("general").await;
    for i in 0..HISTORY_MESSAGES {
        carol
            .send(
                json!({"type": "message", "room": "general", "content": format!("history {i:02}")}),
            )
            .await;
    }
    for _ in 0..HISTORY_MESSAGES {
        carol.recv_type("message").await;
    }
    carol.close().await;
    let url = format!("http://{}/", server.addr());

    let mut child = Command::new("node")
        .arg("chat.mjs")
        .arg(&url)
        .current_dir(&dir)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT_DIR", screenshot_dir())
        .env("HISTORY_MESSAGES", HISTORY_MESSAGES.to_string())
        .env("BOB_TOKEN", server.token(2, "bob"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node not found: install Node.js (scripts/test.sh needs it for the browser test)");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();

    let scenario = async {
        while let Some(line) = stdout.next_line().await.expect("read the script's output") {
            let answer = match line.trim() {
                "STOP" => {
                    server.stop().await;
                    "STOPPED\n"
                }
                "START" => {
                    server.restart().await;
                    "STARTED\n"
                }
                other => {
                    eprintln!("chat.mjs: {other}");
                    continue;
                }
            };
            stdin
                .write_all(answer.as_bytes())
                .await
                .expect("answer the script");
        }
        child.wait().await.expect("wait for node")
    };
    let status = tokio::time::timeout(SCENARIO_TIMEOUT, scenario)
        .await
        .expect("the browser scenario did not finish in time");
    assert!(
        status.success(),
        "the browser scenario failed ({status}); see chat.mjs output above"
    );
    let shot = screenshot_dir().join("chat.png");
    assert!(shot.exists(), "no screenshot at {}", shot.display());
}
