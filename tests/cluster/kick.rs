//! A kick across nodes (issue 14): ordered in the room's stream, so no
//! message committed after it (a higher id) reaches the kicked user's
//! connections on either node, while senders on both nodes flood the room.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{send_message, Client, SharedDb, Sink, SERIAL};
use crate::nodes::{finish, nats_url, start_node};

/// Sends `request` with `ref` and returns the reply carrying it.
async fn ask(c: &mut Client, mut request: Value, r: i64) -> Value {
    request["ref"] = json!(r);
    c.send(request).await;
    loop {
        let v = c.recv().await;
        if v["ref"] == r {
            return v;
        }
    }
}

/// Sends `count` messages to `room`, one every 2 ms (the kick lands in
/// the middle); yields how many were written, and the sink.
async fn paced(mut sink: Sink, room: &'static str, count: usize) -> (usize, Sink) {
    let mut written = 0;
    for i in 0..count {
        if send_message(&mut sink, room, &format!("m{i}"))
            .await
            .is_err()
        {
            break;
        }
        written += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (written, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_above_the_kick_reaches_the_kicked_user_on_either_node() {
    const ROOM: &str = "ring";
    const PER_SENDER: usize = 150;
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let nats = nats_url();
    let nodes = [
        start_node(&db.url, &nats, "a").await,
        start_node(&db.url, &nats, "b").await,
    ];
    let mut owner = Client::connect(&nodes[0], 1, "owner").await;
    let created = ask(&mut owner, json!({"type": "create_room", "room": ROOM}), 1).await;
    assert_eq!(created["type"], "room_created", "{created}");
    let mut victims = Vec::new();
    for node in &nodes {
        let mut v = Client::connect(node, 2, "victim").await;
        v.join(ROOM).await;
        victims.push(v.split());
    }
    let mut sinks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            let user = 10 + (i * 2 + j) as i64;
            let mut c = Client::connect(node, user, &format!("sender{user}")).await;
            c.join(ROOM).await;
            let (sink, reader) = c.split();
            sinks.push((sink, reader));
        }
    }
    let bursts: Vec<_> = sinks
        .into_iter()
        .map(|(sink, reader)| (tokio::spawn(paced(sink, ROOM, PER_SENDER)), reader))
        .collect();
    // Kick in the middle of the flood.
    let client = chat_server::store::connect(&db.url).await.unwrap();
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count("SELECT count(*) FROM messages WHERE room = 'ring' AND kind = 0").await
        < PER_SENDER as i64
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the flood did not start"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ack = ask(
        &mut owner,
        json!({"type": "kick", "room": ROOM, "user": 2}),
        2,
    )
    .await;
    assert_eq!(ack["type"], "kick_ack", "{ack}");
    let mut readers = Vec::new();
    for (b, reader) in bursts {
        let (written, sink) = b.await.unwrap();
        assert_eq!(written, PER_SENDER);
        readers.push((sink, reader));
    }
    // Every sender saw the whole flood: it is delivered everywhere.
    for (_, reader) in &readers {
        reader
            .wait_for("the whole flood", Duration::from_secs(20), |l| {
                l.messages.len() >= 4 * PER_SENDER
            })
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let kick_id: i64 = client
        .query_one(
            "SELECT event_id FROM moderation_log WHERE room = $1 AND action = 'kicked' AND target = 2",
            &[&ROOM],
        )
        .await
        .unwrap()
        .get(0);
    let below: Vec<i64> = client
        .query(
            "SELECT id FROM messages WHERE room = $1 AND kind = 0 AND id < $2 ORDER BY id",
            &[&ROOM, &kick_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let above = count("SELECT count(*) FROM messages WHERE room = 'ring' AND kind = 0").await
        - below.len() as i64;
    assert!(above > 0, "the flood went on after the kick");
    for (i, (_sink, reader)) in victims.iter().enumerate() {
        let seen: Vec<i64> = reader.snapshot().messages.iter().map(|m| m.id).collect();
        let max = seen.iter().max().copied().unwrap_or(0);
        assert!(
            max < kick_id,
            "victim on node {i}: received {max} above the kick {kick_id}"
        );
        assert_eq!(
            seen, below,
            "victim on node {i}: every message below the kick, once, in order"
        );
    }
    drop(victims);
    drop(readers);
    finish(nodes, db).await;
}
