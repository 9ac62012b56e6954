//! Starting nodes, a private NATS server, and reading a room's stored order.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Msg, ServerProcess, SharedDb};

/// The shared NATS server of the test run.
pub fn nats_url() -> String {
    std::env::var("CHAT_TEST_NATS_URL")
        .expect("set CHAT_TEST_NATS_URL (scripts/test.sh starts a local nats-server)")
}

/// Starts a cluster node (two shards, port 0) on `db_url` and `nats`.
pub async fn start_node(db_url: &str, nats: &str, name: &str) -> ServerProcess {
    ServerProcess::start(
        db_url,
        &[
            ("CHAT_CLUSTER_URL", nats),
            ("CHAT_NODE_ID", name),
            ("CHAT_CLUSTER_CHECK_MS", "300"),
        ],
    )
    .await
}

/// Ends a test: checks that no node panicked, stops the nodes, then drops
/// the test database.
pub async fn finish<const N: usize>(nodes: [ServerProcess; N], db: SharedDb) {
    for n in &nodes {
        n.assert_no_panic();
    }
    drop(nodes);
    db.drop_now().await;
}

/// A private `nats-server` on a free loopback port, which a test may stop
/// and start again on the same port. Dropping it kills it.
pub struct PrivateNats {
    pub port: u16,
    child: Option<Child>,
}

fn nats_bin() -> String {
    for b in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if std::path::Path::new(b).exists() {
            return b.to_owned();
        }
    }
    "nats-server".to_owned()
}

impl PrivateNats {
    pub async fn start() -> PrivateNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut n = PrivateNats { port, child: None };
        n.restart().await;
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn restart(&mut self) {
        let child = Command::new(nats_bin())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (SIGKILL): every node loses its link at once.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The room's stored message ids, in `room_history` order.
pub async fn stored_room_ids(db_url: &str, room: &str) -> Vec<i64> {
    let client = chat_server::store::connect(db_url)
        .await
        .expect("connect to the test database");
    client
        .query(
            "SELECT id FROM messages WHERE room = $1 ORDER BY id",
            &[&room],
        )
        .await
        .expect("query room")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Asserts a client saw exactly the stored room, in order.
pub fn assert_same_as_stored(seen: &[Msg], stored: &[i64], who: &str) {
    let ids: Vec<i64> = seen.iter().map(|m| m.id).collect();
    if ids != stored {
        let missing: Vec<_> = stored
            .iter()
            .filter(|i| !ids.contains(i))
            .take(10)
            .collect();
        let extra: Vec<_> = ids
            .iter()
            .filter(|i| !stored.contains(i))
            .take(10)
            .collect();
        let order = ids.windows(2).find(|w| w[0] >= w[1]);
        panic!(
            "{who}: saw {} messages, {} stored; missing {missing:?}, not stored {extra:?}, first out of order/duplicate {order:?}",
            ids.len(),
            stored.len()
        );
    }
}
