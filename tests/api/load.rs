//! Bursts and crowds: completeness, order, and that whatever was delivered
//! is stored exactly as delivered.

use std::collections::HashMap;

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::{Client, TestServer};

/// Reads `n` frames of type `message`, returning (id, content) in arrival order.
async fn read_messages(c: &mut Client, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = c.recv_type("message").await;
        out.push((
            m["data"]["id"].as_i64().unwrap(),
            m["data"]["content"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

#[tokio::test]
async fn a_burst_of_500_arrives_complete_and_in_order_at_every_member_and_is_stored() {
    // One user's burst of 500 is over the default per-user message burst.
    let server = TestServer::start_with(|c| c.user_message_burst = 1000).await;
    server.create_room("burst").await;
    let mut members = Vec::new();
    for (i, shard) in [(1, 0), (2, 1), (3, 0), (4, 1)] {
        let mut c = server.connect_on_shard(i, &format!("m{i}"), shard).await;
        c.join("burst").await;
        members.push(c);
    }
    let mut sender = members.remove(0);
    // Send everything without waiting for echoes.
    for i in 0..500 {
        sender
            .send(json!({"type": "message", "room": "burst", "content": format!("burst {i}")}))
            .await;
    }
    let expected: Vec<String> = (0..500).map(|i| format!("burst {i}")).collect();
    let mut all = vec![read_messages(&mut sender, 500).await];
    for m in &mut members {
        all.push(read_messages(m, 500).await);
    }
    for got in &all {
        let contents: Vec<&String> = got.iter().map(|(_, c)| c).collect();
        assert_eq!(
            contents,
            expected.iter().collect::<Vec<_>>(),
            "complete, in send order"
        );
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0),
            "ids strictly increase"
        );
        assert_eq!(got, &all[0], "everyone saw the same ids");
    }
    // Every delivered id is in the table with the same content.
    let db = server.db().await;
    let rows = db
        .query(
            "SELECT id, content FROM messages WHERE room = 'burst' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(stored, all[0]);
}

#[tokio::test]
async fn two_hundred_concurrent_clients_all_receive_a_broadcast() {
    // 200 handshakes at once from one address: past the default
    // per-address cap on pending handshakes (64), which this is not about.
    let server = TestServer::start_with(|c| c.max_pending_handshakes_per_ip = 0).await;
    server.create_room("crowd").await;
    let clients = join_all((0..200).map(|i| {
        let server = &server;
        async move {
            let mut c = server.connect(1000 + i, &format!("u{i}")).await;
            c.join("crowd").await;
            c
        }
    }))
    .await;
    let mut shards = HashMap::new();
    for c in &clients {
        *shards.entry(c.shard).or_insert(0) += 1;
    }
    assert_eq!(
        shards.len(),
        2,
        "clients spread over both shards: {shards:?}"
    );
    let mut clients = clients;
    clients[17]
        .send(json!({"type": "message", "room": "crowd", "content": "to the crowd"}))
        .await;
    let ids = join_all(clients.iter_mut().map(|c| async move {
        let m = c.recv_type("message").await;
        assert_eq!(m["data"]["content"], "to the crowd");
        assert_eq!(m["data"]["fromUser"], 1017);
        m["data"]["id"].as_i64().unwrap()
    }))
    .await;
    assert!(ids.iter().all(|&id| id == ids[0]));
    let db = server.db().await;
    let row = db
        .query_one("SELECT content FROM messages WHERE id = $1", &[&ids[0]])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "to the crowd");
}

#[tokio::test]
async fn concurrent_senders_on_both_shards_give_every_member_the_same_order() {
    let server = TestServer::start().await;
    server.create_room("race").await;
    let mut senders = Vec::new();
    for (i, shard) in [(1, 0), (2, 1), (3, 0), (4, 1)] {
        let mut c = server.connect_on_shard(i, &format!("s{i}"), shard).await;
        c.join("race").await;
        senders.push(c);
    }
    // Each sender sends 100 without waiting.
    for (n, s) in senders.iter_mut().enumerate() {
        for i in 0..100 {
            s.send(json!({"type": "message", "room": "race", "content": format!("{n}:{i}")}))
                .await;
        }
    }
    let seen = join_all(senders.iter_mut().map(|s| read_messages(s, 400))).await;
    for got in &seen {
        assert_eq!(got, &seen[0], "identical order everywhere");
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        // Per sender, send order is kept.
        for n in 0..4 {
            let mine: Vec<usize> = got
                .iter()
                .filter_map(|(_, c)| c.strip_prefix(&format!("{n}:")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..100).collect::<Vec<_>>());
        }
    }
    let db = server.db().await;
    let rows = db
        .query(
            "SELECT id, content FROM messages WHERE room = 'race' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(stored, seen[0], "history order is delivery order");
}
