//! The cluster writer's transaction against a real database: ids and
//! predecessors per stream, and how a lost commit answer is resolved.

use std::sync::Arc;
use std::time::Instant;

use chat_server::protocol::{Kind, Target};
use chat_server::router::Origin;
use chat_server::store::writer::{BatchInserter, Fate, PersistRequest};

use crate::harness::{create_room, SharedDb, SERIAL};

fn request(target: Target, from: i64, content: &str) -> PersistRequest {
    PersistRequest {
        target,
        from,
        username: Arc::from(format!("u{from}")),
        content: content.to_owned(),
        origin: Origin { shard: 0, conn: 0 },
        enqueued: Instant::now(),
        reference: None,
        client_id: None,
        kind: Kind::Message,
        reply: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_batches_chain_each_stream_and_resolve_lost_commits() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let mut client = chat_server::store::connect(&db.url).await.expect("connect");
    chat_server::store::migrate(&mut client)
        .await
        .expect("migrate");
    client
        .batch_execute("INSERT INTO users (id, username) VALUES (1, 'u1'), (2, 'u2'), (3, 'u3')")
        .await
        .expect("users");
    create_room(&db.url, "a").await;
    create_room(&db.url, "b").await;
    let mut w = BatchInserter::connect(&db.url).await.expect("writer");
    let room = |r: &str| Target::Room(Arc::from(r));
    let batch = vec![
        request(room("a"), 1, "a1"),
        request(Target::User(2), 1, "dm 1->2"),
        request(room("b"), 2, "b1"),
        request(room("a"), 2, "a2"),
        request(Target::User(3), 2, "dm 2->3"),
    ];
    let mut pending = None;
    let first = w
        .commit_cluster(&batch, &mut pending)
        .await
        .expect("commit");
    let ids = &first.ids;
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids ascend in batch order: {ids:?}"
    );
    assert_eq!(first.prevs[0], [0, 0], "first message of room a");
    assert_eq!(first.prevs[1], [0, 0], "first DM of users 1 and 2");
    assert_eq!(first.prevs[2], [0, 0], "first message of room b");
    assert_eq!(first.prevs[3], [ids[0], ids[0]], "a2 follows a1");
    assert_eq!(
        first.prevs[4],
        [ids[1], 0],
        "user 2's previous DM; user 3's first"
    );
    assert!(first.fates.is_empty());
    assert_eq!(w.resolve(first.xid).await.expect("status"), Some(true));

    // A second batch chains onto what is stored (read under the row locks).
    let second = w
        .commit_cluster(
            &[
                request(room("a"), 3, "a3"),
                request(Target::User(1), 3, "dm 3->1"),
            ],
            &mut pending,
        )
        .await
        .expect("commit");
    assert!(second.ids[0] > ids[4]);
    assert_eq!(second.prevs[0], [ids[3], ids[3]]);
    assert_eq!(second.prevs[1], [ids[4], ids[1]], "user 3 then user 1");

    // A transaction that never committed resolves as not committed.
    let tx = client.transaction().await.expect("begin");
    let xid: i64 = tx
        .query_one("SELECT txid_current()::int8", &[])
        .await
        .expect("xid")
        .get(0);
    tx.rollback().await.expect("rollback");
    assert_eq!(w.resolve(xid).await.expect("status"), Some(false));
    drop(w);
    drop(client);
    db.drop_now().await;
}

/// Issue 14 in cluster mode: a batch's edit and delete are rows of their
/// stream, chained to its previous row like messages; one refused (its
/// target deleted earlier in the batch) is not stored and chains nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_batches_chain_edits_and_deletes_in_their_stream() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let mut client = chat_server::store::connect(&db.url).await.expect("connect");
    chat_server::store::migrate(&mut client)
        .await
        .expect("migrate");
    client
        .batch_execute("INSERT INTO users (id, username) VALUES (1, 'u1'), (2, 'u2')")
        .await
        .expect("users");
    create_room(&db.url, "a").await;
    let mut w = BatchInserter::connect(&db.url).await.expect("writer");
    let room = || Target::Room(Arc::from("a"));
    let mut pending = None;
    let first = w
        .commit_cluster(&[request(room(), 1, "a1")], &mut pending)
        .await
        .expect("commit");
    let m = first.ids[0];
    let event = |kind: Kind, content: &str| PersistRequest {
        kind,
        reply: None,
        ..request(room(), 1, content)
    };
    let batch = [
        event(Kind::Edit { target: m }, "a1!"),
        request(room(), 2, "a2"),
        event(Kind::Delete { target: m }, ""),
        event(Kind::Delete { target: m }, ""),
    ];
    let second = w
        .commit_cluster(&batch, &mut pending)
        .await
        .expect("commit");
    let ids = &second.ids;
    assert_eq!(
        second.prevs,
        [[m, m], [ids[0], ids[0]], [ids[1], ids[1]], [0, 0]],
        "events chain like messages; the refused one chains nothing"
    );
    assert_eq!(
        second.fates,
        [
            Fate::Stored,
            Fate::Stored,
            Fate::Stored,
            Fate::Refused(format!("message {m} is already deleted")),
        ]
    );
    let stored: Vec<(i64, i16, String, bool)> = client
        .query(
            "SELECT id, kind, content, deleted FROM messages ORDER BY id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        stored,
        [
            (m, 0, String::new(), true),
            (ids[0], 1, String::new(), true),
            (ids[1], 0, "a2".to_owned(), false),
            (ids[2], 2, String::new(), false),
        ]
    );
    db.drop_now().await;
}
