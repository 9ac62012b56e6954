//! Issue 15, the event feed's reads: `GET /v1/events` under concurrent
//! traffic on several writers (every event once, in order, compared with
//! the database), a delete erasing content from earlier events, the long
//! poll, bad parameters, and retention's 410.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{Client, TestServer};
use crate::http::{self, Api};

/// `GET /v1/events?{query}`, asserting 200; the items.
async fn events(api: &Api, query: &str) -> Vec<Value> {
    let (status, body) = api.get(&format!("/v1/events?{query}")).await;
    assert_eq!(status, 200, "{query} → {body}");
    body["items"].as_array().expect("items").clone()
}

/// Sends a room message and waits for its own copy (committed).
async fn say(c: &mut Client, room: &str, content: &str) -> Value {
    let v = c
        .ask(json!({"type": "message", "room": room, "content": content}))
        .await;
    assert_eq!(v["type"], "message", "{v}");
    v
}

/// Joins `room` (other traffic may arrive before the ack).
async fn join(c: &mut Client, room: &str) {
    let v = c.ask(json!({"type": "join", "room": room})).await;
    assert_eq!(v["type"], "join_ack", "{v}");
}

fn seq(e: &Value) -> i64 {
    e["seq"].as_i64().expect("seq")
}

#[tokio::test]
async fn a_tailing_consumer_sees_every_event_once_in_order_under_concurrent_writers() {
    let server = TestServer::start_with(|c| {
        http::with_api(c);
        c.writers = 3;
        c.user_message_rate = 0;
    })
    .await;
    let api = Api::of(&server);
    let rooms: Vec<String> = (0..6).map(|i| format!("feed-{i}")).collect();
    let mut owner = server.connect(1, "owner").await;
    for r in &rooms {
        let v = owner.ask(json!({"type": "create_room", "room": r})).await;
        assert_eq!(v["type"], "room_created", "{v}");
    }

    // Members the owner moderates (they stay silent).
    let mut bystanders = Vec::new();
    for (i, r) in rooms.iter().enumerate() {
        let mut b = server
            .connect(40 + i as i64, &format!("bystander{i}"))
            .await;
        join(&mut b, r).await;
        bystanders.push(b);
    }

    // The consumer tails from the start while the traffic runs.
    let done = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (api, done) = (api.clone(), done.clone());
        tokio::spawn(async move {
            let (mut after, mut got) = (0i64, Vec::new());
            loop {
                let items = events(&api, &format!("after={after}&limit=37&wait=1")).await;
                if items.is_empty() && done.load(Ordering::SeqCst) {
                    return got;
                }
                for e in items {
                    assert!(seq(&e) > after, "seq {} after {after}", seq(&e));
                    after = seq(&e);
                    got.push(e);
                }
            }
        })
    };

    let mut tasks = Vec::new();
    for u in 0..6i64 {
        let mut c = server.connect(10 + u, &format!("sender{u}")).await;
        let mine: Vec<String> = (0..3)
            .map(|k| rooms[((u + k) % 6) as usize].clone())
            .collect();
        tasks.push(tokio::spawn(async move {
            for r in &mine {
                join(&mut c, r).await;
            }
            for i in 0..30 {
                say(&mut c, &mine[i % mine.len()], &format!("u{u} m{i}")).await;
            }
        }));
    }
    // Joins and leaves, and moderation through `rooms::act`, at the same time.
    let mut mover = server.connect(30, "mover").await;
    tasks.push(tokio::spawn(async move {
        for i in 0..6 {
            let room = format!("feed-{}", i % 6);
            join(&mut mover, &room).await;
            let v = mover.ask(json!({"type": "leave", "room": room})).await;
            assert_eq!(v["type"], "leave_ack", "{v}");
        }
    }));
    tasks.push(tokio::spawn(async move {
        for i in 0..6i64 {
            let room = format!("feed-{i}");
            let user = 40 + i;
            owner
                .acked(
                    json!({"type": "mute", "room": room, "user": user, "seconds": 60}),
                    "mute_ack",
                )
                .await;
            owner
                .acked(
                    json!({"type": "unmute", "room": room, "user": user}),
                    "unmute_ack",
                )
                .await;
            owner
                .acked(
                    json!({"type": "set_role", "room": room, "user": user, "role": "moderator"}),
                    "set_role_ack",
                )
                .await;
        }
    }));
    for t in tasks {
        t.await.expect("traffic task");
    }
    done.store(true, Ordering::SeqCst);
    let got = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("the consumer catches up")
        .expect("consumer task");

    // Exactly the database's feed, in order.
    let db = server.db().await;
    let stored: Vec<i64> = db
        .query("SELECT seq FROM feed ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let seen: Vec<i64> = got.iter().map(seq).collect();
    assert_eq!(seen, stored, "the consumer's events are the feed's");
    assert_eq!(
        seen,
        (1..=stored.len() as i64).collect::<Vec<_>>(),
        "no gap"
    );

    // Every stored message is one message.created event; per room in id order.
    let messages: HashSet<i64> = db
        .query(
            "SELECT id FROM messages WHERE kind = 0 AND room LIKE 'feed-%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(messages.len(), 6 * 30);
    let mut last_id: HashMap<String, i64> = HashMap::new();
    let mut created = HashSet::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in &got {
        *counts
            .entry(e["type"].as_str().unwrap().to_owned())
            .or_default() += 1;
        if e["type"] == "message.created" {
            let id = e["message"]["id"].as_i64().unwrap();
            let room = e["room"].as_str().unwrap().to_owned();
            assert_eq!(e["message"]["room"], room.as_str(), "{e}");
            assert!(created.insert(id), "message {id} twice");
            let last = last_id.entry(room.clone()).or_insert(0);
            assert!(id > *last, "room {room}: message {id} after {last}");
            *last = id;
        }
    }
    assert_eq!(created, messages, "every message exactly once");
    assert_eq!(counts["room.created"], 6, "{counts:?}");
    assert_eq!(counts["member.left"], 6, "{counts:?}");
    assert_eq!(counts["member.muted"], 6, "{counts:?}");
    assert_eq!(counts["member.unmuted"], 6, "{counts:?}");
    assert_eq!(counts["member.role"], 6, "{counts:?}");
    assert_eq!(counts["member.joined"], 6 * 3 + 6 + 6, "{counts:?}");
    drop(bystanders);
}

#[tokio::test]
async fn a_delete_erases_the_content_from_earlier_events_too() {
    let server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    server.create_room("r").await;
    let mut a = server.connect(1, "alice").await;
    a.join("r").await;
    let id = say(&mut a, "r", "a secret to erase").await["data"]["id"]
        .as_i64()
        .unwrap();
    let v = a
        .ask(json!({"type": "edit", "id": id, "content": "an edited secret"}))
        .await;
    assert_eq!(v["type"], "message_edited", "{v}");
    let before = events(&api, "after=0").await;
    assert!(json!(before).to_string().contains("an edited secret"));
    let v = a.ask(json!({"type": "delete", "id": id})).await;
    assert_eq!(v["type"], "message_deleted", "{v}");

    let after = events(&api, "after=0").await;
    let text = json!(after).to_string();
    assert!(!text.contains("secret"), "content left in the feed: {text}");
    let types: Vec<&str> = after.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &types[types.len() - 3..],
        ["message.created", "message.edited", "message.deleted"]
    );
    let created = &after[after.len() - 3];
    assert_eq!(created["message"]["id"], id);
    assert_eq!(created["message"]["deleted"], true, "{created}");
    assert_eq!(created["user"], 1);
    let deleted = &after[after.len() - 1];
    assert_eq!(deleted["by"], 1, "{deleted}");
    assert_eq!(deleted["message"]["target"], id, "{deleted}");
}

#[tokio::test]
async fn a_long_poll_wakes_on_a_new_event_and_an_empty_one_waits() {
    let server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    server.create_room("r").await;
    let mut a = server.connect(1, "alice").await;
    a.join("r").await;
    let head = events(&api, "after=0").await.last().map_or(0, seq);

    // Nothing new: answered empty after the wait.
    let started = Instant::now();
    assert!(events(&api, &format!("after={head}&wait=1"))
        .await
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Something new while waiting: answered with it, long before the wait ends.
    let poll = {
        let api = api.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (
                events(&api, &format!("after={head}&wait=25")).await,
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "answered before any event");
    say(&mut a, "r", "wake up").await;
    let (items, took) = poll.await.unwrap();
    assert!(
        took < Duration::from_secs(20),
        "woke only at the end: {took:?}"
    );
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["type"], "message.created");
    assert_eq!(items[0]["message"]["content"], "wake up");
    assert_eq!(seq(&items[0]), head + 1);
}

#[tokio::test]
async fn bad_parameters_are_400_and_a_missing_key_401() {
    let server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    for q in [
        "limit=0",
        "limit=1001",
        "wait=31",
        "wait=-1",
        "after=-1",
        "after=abc",
        "limit=1.5",
    ] {
        let (status, body) = api.get(&format!("/v1/events?{q}")).await;
        assert_eq!(
            (status, http::code(&body)),
            (400, "invalid"),
            "{q} → {body}"
        );
    }
    let (status, body) = api.get("/v1/events?limit=1000&wait=0").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.with_key(None).get("/v1/events").await;
    assert_eq!((status, http::code(&body)), (401, "unauthorized"));
    let (status, body) = api.with_key(Some("wrong")).get("/v1/events").await;
    assert_eq!((status, http::code(&body)), (401, "unauthorized"));
}

#[tokio::test]
async fn events_older_than_retention_are_gone_with_the_oldest_kept() {
    let server = TestServer::start_with(|c| {
        http::with_api(c);
        c.feed_retention = Duration::from_secs(1);
        c.feed_purge_chunk = 3;
    })
    .await;
    let api = Api::of(&server);
    server.create_room("r").await;
    let mut a = server.connect(1, "alice").await;
    a.join("r").await;
    for i in 0..8 {
        say(&mut a, "r", &format!("old {i}")).await;
    }
    let old_head = events(&api, "after=0").await.last().map_or(0, seq);
    assert!(old_head >= 10);

    // Retention deletes them (in chunks of 3) once older than a second.
    let deadline = Instant::now() + Duration::from_secs(20);
    let gone = loop {
        let (status, body) = api.get("/v1/events?after=0").await;
        if status == 410 {
            if body["error"]["oldest"] == old_head + 1 {
                break body;
            }
        } else {
            assert_eq!(status, 200, "{body}");
        }
        assert!(Instant::now() < deadline, "never purged: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(http::code(&gone), "gone", "{gone}");
    let purged: i64 = server
        .db()
        .await
        .query_one("SELECT purged_through FROM feed_head", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(purged, old_head);
    let (status, body) = api.get(&format!("/v1/events?after={}", old_head - 1)).await;
    assert_eq!(
        (status, body["error"]["oldest"].clone()),
        (410, json!(old_head + 1))
    );

    // Asking from the oldest kept is fine; a new event is there (younger than retention).
    assert!(events(&api, &format!("after={old_head}")).await.is_empty());
    say(&mut a, "r", "new").await;
    let items = events(&api, &format!("after={old_head}")).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["message"]["content"], "new");
}

#[tokio::test]
async fn retention_deletes_only_the_oldest_prefix_in_chunks_one_node_at_a_time() {
    use chat_server::store::feed::{sql, upkeep};
    let server = TestServer::start().await;
    let mut db = server.db().await;
    // Old, old, young, old, old: only the first two may go.
    db.batch_execute(
        "INSERT INTO feed (seq, type, at) VALUES \
           (1, 6, now() - interval '10 days'), (2, 6, now() - interval '10 days'), \
           (3, 6, now() - interval '1 hour'), \
           (4, 6, now() - interval '10 days'), (5, 6, now() - interval '10 days'); \
         UPDATE feed_head SET seq = 5;",
    )
    .await
    .unwrap();
    let week = Duration::from_secs(7 * 86_400);

    // Another node holds the retention lock: nothing is done.
    let mut other = server.db().await;
    let tx = other.transaction().await.unwrap();
    let locked: bool = tx
        .query_one(
            sql::TRY_RETENTION_LOCK,
            &[&sql::LOCK_CLASS, &sql::RETENTION_LOCK],
        )
        .await
        .unwrap()
        .get(0);
    assert!(locked);
    assert_eq!(upkeep::purge(&mut db, week, 1).await.unwrap(), 0);
    tx.rollback().await.unwrap();

    // One event per transaction (chunk 1), and never past the young one.
    assert_eq!(upkeep::purge(&mut db, week, 1).await.unwrap(), 1);
    assert_eq!(upkeep::purge(&mut db, week, 1).await.unwrap(), 1);
    assert_eq!(upkeep::purge(&mut db, week, 100).await.unwrap(), 0);
    let kept: Vec<i64> = db
        .query("SELECT seq FROM feed ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, [3, 4, 5]);
    let purged: i64 = db
        .query_one("SELECT purged_through FROM feed_head", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(purged, 2);
    let head: i64 = db
        .query_one("SELECT seq FROM feed_head", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(head, 5, "retention never moves the head");
}

#[tokio::test]
async fn a_long_poll_does_not_hold_a_graceful_shutdown() {
    let mut server = TestServer::start_with(http::with_api).await;
    let api = Api::of(&server);
    let poll = tokio::spawn(async move { api.get("/v1/events?after=0&wait=30").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished());
    let started = Instant::now();
    server.stop().await;
    let (status, body) = poll.await.unwrap();
    assert_eq!((status, body), (200, json!({"items": []})));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the stop waited for the poll: {:?}",
        started.elapsed()
    );
}
