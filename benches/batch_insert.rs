//! Batch insert of 1, 100 and 1000 room messages into a real PostgreSQL
//! with `chat_server::store::writer::BatchInserter`, the very statements a
//! writer thread runs (`INSERT ... SELECT FROM UNNEST` and the id
//! reservation from `messages_id_seq`). Throughput is in rows.
//!
//! Every message is committed before it is delivered, so rows/s per writer
//! connection is the ceiling of the server's message rate, and the curve
//! from 1 to 1000 rows shows how much batching buys.
//!
//! Two measurements per size: `insert` times the insert alone (ids are
//! reserved beforehand, untimed), `reserve_and_insert` times both round
//! trips, which is a writer's commit when its block of ids runs out.
//!
//! Needs `DATABASE_URL` (e.g. the URL `scripts/pg.sh start` prints). The
//! bench uses its own database `chat_bench` on that server (created if
//! missing, migrated, its `messages` table truncated before each size). If
//! `DATABASE_URL` is unset or the server is unreachable, it prints a
//! "skipped" line and registers no benchmark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_server::protocol::{Kind, Target};
use chat_server::router::Origin;
use chat_server::store::writer::{BatchInserter, PersistRequest};
use chat_server::store::{connect, create_room, migrate};
use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput};
use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// The bench's own database on the `DATABASE_URL` server.
const BENCH_DB: &str = "chat_bench";
const ROOM: &str = "bench";
const SENDER: i64 = 1;
const SIZES: [usize; 3] = [1, 100, 1000];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// `url` with its database name replaced by `db` (URL or key=value form).
fn with_dbname(url: &str, db: &str) -> String {
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (base, query) = match rest.find('?') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = base.split('/').next().unwrap_or("");
            return format!("{scheme}{authority}/{db}{query}");
        }
    }
    // key=value: a later key overrides an earlier one.
    format!("{url} dbname={db}")
}

async fn connect_in_time(url: &str) -> Result<Client, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect(url)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => {
            // Display the whole chain: "error connecting to server: Connection refused".
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                let part = s.to_string();
                if !text.contains(&part) {
                    text.push_str(&format!(": {part}"));
                }
                source = s.source();
            }
            Err(text)
        }
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// Creates (if missing) and migrates the bench database, adds the sender
/// and the room. `Err` only when the server cannot be reached.
async fn prepare(admin_url: &str) -> Result<String, String> {
    let admin = connect_in_time(admin_url).await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&BENCH_DB])
        .await
        .expect("query pg_database")
        .is_some();
    if !exists {
        if let Err(e) = admin
            .batch_execute(&format!("CREATE DATABASE {BENCH_DB}"))
            .await
        {
            // Another run may have created it in the meantime.
            assert_eq!(
                e.code(),
                Some(&SqlState::DUPLICATE_DATABASE),
                "CREATE DATABASE {BENCH_DB}: {e}"
            );
        }
    }
    let url = with_dbname(admin_url, BENCH_DB);
    let mut client = connect_in_time(&url).await?;
    migrate(&mut client).await.expect("migrate bench database");
    client
        .execute(
            "INSERT INTO users (id, username) VALUES ($1, 'bench') ON CONFLICT DO NOTHING",
            &[&SENDER],
        )
        .await
        .expect("insert bench user");
    create_room(&client, ROOM).await.expect("create bench room");
    Ok(url)
}

async fn truncate_messages(url: &str) {
    let client = connect_in_time(url)
        .await
        .expect("reconnect bench database");
    client
        .batch_execute("TRUNCATE messages")
        .await
        .expect("truncate messages");
}

fn batch(n: usize) -> Vec<PersistRequest> {
    let room: Arc<str> = Arc::from(ROOM);
    let username: Arc<str> = Arc::from("bench");
    (0..n)
        .map(|i| PersistRequest {
            target: Target::Room(room.clone()),
            from: SENDER,
            username: username.clone(),
            // ~100 bytes, like a typical chat line.
            content: format!(
                "message {i:06}: the quick brown fox jumps over the lazy dog and keeps on chatting here"
            ),
            origin: Origin { shard: 0, conn: 0 },
            enqueued: Instant::now(),
            reference: None,
            client_id: None,
            kind: Kind::Message,
            reply: None,
        })
        .collect()
}

fn bench_batch_insert(c: &mut Criterion, rt: &Runtime, url: &str) {
    let db = rt
        .block_on(BatchInserter::connect(url))
        .expect("BatchInserter::connect");
    let mut g = c.benchmark_group("batch_insert");
    // A 1000-row batch takes ~25 ms: 10 samples fit short measurement times.
    g.sample_size(10);
    for n in SIZES {
        rt.block_on(truncate_messages(url));
        let rows = batch(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("insert", n), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let ids = db.reserve_ids(n).await.expect("reserve_ids");
                        let started = Instant::now();
                        let inserted = db.insert(&rows, &ids, Utc::now()).await.expect("insert");
                        spent += started.elapsed();
                        assert_eq!(inserted, n as u64);
                    }
                    spent
                })
            })
        });
        g.bench_function(BenchmarkId::new("reserve_and_insert", n), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let ids = db.reserve_ids(n).await.expect("reserve_ids");
                        let inserted = db.insert(&rows, &ids, Utc::now()).await.expect("insert");
                        assert_eq!(inserted, n as u64);
                    }
                    started.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn main() {
    let Ok(admin_url) = std::env::var("DATABASE_URL") else {
        println!(
            "batch_insert: skipped: set DATABASE_URL to a reachable PostgreSQL \
             (e.g. the URL `scripts/pg.sh start` prints)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let url = match rt.block_on(prepare(&admin_url)) {
        Ok(url) => url,
        Err(e) => {
            println!(
                "batch_insert: skipped: set DATABASE_URL to a reachable PostgreSQL \
                 (cannot connect: {e})"
            );
            return;
        }
    };
    let mut c = Criterion::default().configure_from_args();
    bench_batch_insert(&mut c, &rt, &url);
    c.final_summary();
}
