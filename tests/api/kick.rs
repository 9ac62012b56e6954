//! Kicks and bans (issue 14, moderation): the kick ordered in the room's
//! stream under concurrent senders on both shards, ban expiry, unban, the
//! role rules, the audit rows with the event's id, and what a kicked user
//! may no longer do.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Client, TestServer};

/// Next `member` event with `action`, skipping every other frame.
async fn member_event(c: &mut Client, action: &str) -> Value {
    loop {
        let v = c.recv_any().await;
        if v["type"] == "member" && v["data"]["action"] == action {
            return v["data"].clone();
        }
    }
}

async fn create(c: &mut Client, room: &str, visibility: &str) {
    let v = c
        .ask(json!({"type": "create_room", "room": room, "visibility": visibility}))
        .await;
    assert_eq!(v["type"], "room_created", "{v}");
}

async fn invite(owner: &mut Client, room: &str, user: i64) {
    owner
        .acked(
            json!({"type": "invite", "room": room, "user": user}),
            "invite_ack",
        )
        .await;
}

/// What one connection of the kicked user received of the room: every
/// message id (in order), then the kick; and anything of the room after it.
#[derive(Debug, Default)]
struct Seen {
    ids: Vec<i64>,
    kick: Option<Value>,
    after_kick: Vec<Value>,
}

/// Reads `c` until `stop` has been set and nothing arrived for a while.
async fn watch(
    mut c: Client,
    room: &'static str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
    loop {
        let frame = tokio::time::timeout(Duration::from_millis(300), c.recv_any()).await;
        let v = match frame {
            Ok(v) => v,
            Err(_) if *stop.borrow() => break,
            Err(_) => continue,
        };
        let of_room = v["data"]["room"] == room;
        if !of_room {
            continue;
        }
        if seen.kick.is_some() {
            seen.after_kick.push(v);
        } else if v["type"] == "message" {
            seen.ids.push(v["data"]["id"].as_i64().unwrap());
        } else if v["type"] == "member" && v["data"]["action"] == "kicked" {
            seen.kick = Some(v["data"].clone());
        }
    }
    c.close().await;
    seen
}

/// One sender: `n` messages, each after the previous one's echo (its own
/// copy), reading everything else the room sends meanwhile.
async fn flood(mut c: Client, room: &'static str, me: i64, n: usize) {
    for i in 0..n {
        c.send(json!({"type": "message", "room": room, "content": format!("m{me}-{i}")}))
            .await;
        loop {
            let v = c.recv_any().await;
            if v["type"] == "error" {
                panic!("sender {me}: {v}");
            }
            if v["type"] == "message" && v["data"]["fromUser"] == me {
                break;
            }
        }
    }
    c.close().await;
}

#[tokio::test]
async fn no_message_above_the_kick_reaches_the_kicked_user_on_either_shard() {
    const ROOM: &str = "arena";
    const PER_SENDER: usize = 150;
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    create(&mut owner, ROOM, "private").await;
    // The victim has a connection on each shard; senders on both shards.
    let victim0 = server.connect_on_shard(2, "victim", 0).await;
    let victim1 = server.connect_on_shard(2, "victim", 1).await;
    invite(&mut owner, ROOM, 2).await;
    let mut senders = Vec::new();
    for (user, shard) in [(3, 0), (4, 1), (5, 0), (6, 1)] {
        let mut c = server
            .connect_on_shard(user, &format!("sender{user}"), shard)
            .await;
        invite(&mut owner, ROOM, user).await;
        // Its shard applied the invitation: its messages are accepted.
        member_event(&mut c, "invited").await;
        senders.push((user, c));
    }
    // Both of the victim's connections follow the room before the flood.
    let mut victims = Vec::new();
    for mut v in [victim0, victim1] {
        member_event(&mut v, "invited").await;
        victims.push(v);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watchers: Vec<_> = victims
        .into_iter()
        .map(|v| tokio::spawn(watch(v, ROOM, stop_rx.clone())))
        .collect();
    let floods: Vec<_> = senders
        .into_iter()
        .map(|(user, c)| tokio::spawn(flood(c, ROOM, user, PER_SENDER)))
        .collect();
    // Kick in the middle of the flood.
    let db = server.db().await;
    loop {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM messages WHERE room = $1 AND kind = 0",
                &[&ROOM],
            )
            .await
            .unwrap()
            .get(0);
        if n >= (PER_SENDER * 4 / 3) as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ack = owner
        .acked(
            json!({"type": "kick", "room": ROOM, "user": 2, "reason": "spam"}),
            "kick_ack",
        )
        .await;
    assert_eq!(ack["ref"], "q", "{ack}");
    for f in floods {
        f.await.unwrap();
    }
    stop_tx.send(true).unwrap();

    let row = db
        .query_one(
            "SELECT event_id, actor, reason FROM moderation_log \
             WHERE room = $1 AND action = 'kicked' AND target = 2",
            &[&ROOM],
        )
        .await
        .unwrap();
    let kick_id: i64 = row.get(0);
    assert_eq!(row.get::<_, Option<i64>>(1), Some(1));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("spam"));
    let event = db
        .query_one(
            "SELECT kind, target, from_user FROM messages WHERE id = $1",
            &[&kick_id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            event.get::<_, i16>(0),
            event.get::<_, Option<i64>>(1),
            event.get::<_, i64>(2)
        ),
        (3, Some(2), 1),
        "the kick is a row of the room's stream"
    );
    let below: Vec<i64> = db
        .query(
            "SELECT id FROM messages WHERE room = $1 AND kind = 0 AND id < $2 ORDER BY id",
            &[&ROOM, &kick_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let above = server
        .count(&format!(
            "SELECT count(*) FROM messages WHERE room = '{ROOM}' AND kind = 0 AND id > {kick_id}"
        ))
        .await;
    assert!(above > 0, "the flood went on after the kick");
    for w in watchers {
        let seen = w.await.unwrap();
        let kick = seen
            .kick
            .expect("the kicked user is told, on every connection");
        assert_eq!(
            kick,
            json!({"room": ROOM, "user": 2, "action": "kicked", "by": 1, "reason": "spam"})
        );
        let after: Vec<&Value> = seen.after_kick.iter().take(3).collect();
        assert!(
            seen.after_kick.is_empty(),
            "the kick is the last frame of the room; {} came after it: {after:?}",
            seen.after_kick.len()
        );
        let max = seen.ids.iter().max().copied().unwrap_or(0);
        assert!(max < kick_id, "received {max} above the kick {kick_id}");
        assert_eq!(
            seen.ids, below,
            "every message below the kick, in order, exactly once"
        );
    }
    let n = server
        .count("SELECT count(*) FROM room_members WHERE room = 'arena' AND user_id = 2")
        .await;
    assert_eq!(n, 0, "the membership ended with the kick");
}

#[tokio::test]
async fn a_kicked_user_is_refused_the_room_and_may_join_a_public_one_again() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    create(&mut owner, "den", "private").await;
    create(&mut owner, "hall", "public").await;
    let mut kicked = server.connect_on_shard(2, "kicked", 1).await;
    invite(&mut owner, "den", 2).await;
    member_event(&mut kicked, "invited").await;
    kicked.join("hall").await;
    owner
        .acked(
            json!({"type": "kick", "room": "den", "user": 2}),
            "kick_ack",
        )
        .await;
    let e = member_event(&mut kicked, "kicked").await;
    assert_eq!(
        e,
        json!({"room": "den", "user": 2, "action": "kicked", "by": 1})
    );
    // A private room the user was kicked from is one it cannot see.
    for request in [
        json!({"type": "room_history", "room": "den"}),
        json!({"type": "message", "room": "den", "content": "x"}),
        json!({"type": "join", "room": "den", "since": 0}),
        json!({"type": "join", "room": "den"}),
        json!({"type": "members", "room": "den"}),
    ] {
        let kicked_text = kicked.refusal(request.clone()).await;
        let text = request.to_string().replace("den", "nowhere");
        let missing = kicked.refusal(serde_json::from_str(&text).unwrap()).await;
        assert_eq!(
            kicked_text.replace("den", "R"),
            missing.replace("nowhere", "R")
        );
    }
    // A kick is not a ban: the public room can be joined again.
    owner
        .acked(
            json!({"type": "kick", "room": "hall", "user": 2}),
            "kick_ack",
        )
        .await;
    member_event(&mut kicked, "kicked").await;
    let refused = kicked
        .refusal(json!({"type": "message", "room": "hall", "content": "x"}))
        .await;
    assert!(refused.contains("hall"), "{refused}");
    kicked.join("hall").await;
    let again = kicked
        .ask(json!({"type": "message", "room": "hall", "content": "back"}))
        .await;
    assert_eq!(again["type"], "message", "{again}");
    // Kicking a non-member is refused; nothing is written.
    let text = owner
        .refusal(json!({"type": "kick", "room": "den", "user": 2}))
        .await;
    assert_eq!(text, "user 2 is not a member of room 'den'");
    let rows = server
        .count("SELECT count(*) FROM messages WHERE kind = 3 AND room = 'den'")
        .await;
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn a_ban_refuses_join_until_it_expires_or_is_lifted() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    create(&mut owner, "pub", "public").await;
    let mut user = server.connect_on_shard(2, "user", 1).await;
    let mut watcher = server.connect_on_shard(3, "watcher", 1).await;
    user.join("pub").await;
    watcher.join("pub").await;
    // A short ban: join is refused, then works after expiry.
    let ack = owner
        .acked(
            json!({"type": "ban", "room": "pub", "user": 2, "seconds": 1, "reason": "cool off"}),
            "ban_ack",
        )
        .await;
    assert!(ack["data"]["until"].is_string(), "{ack}");
    let e = member_event(&mut user, "banned").await;
    assert_eq!(e["by"], 1);
    assert_eq!(e["reason"], "cool off");
    assert_eq!(e["until"], ack["data"]["until"]);
    assert_eq!(member_event(&mut watcher, "banned").await, e);
    let text = user.refusal(json!({"type": "join", "room": "pub"})).await;
    assert!(
        text.starts_with("you are banned from room 'pub' until "),
        "{text}"
    );
    let audit = server
        .count(
            "SELECT count(*) FROM moderation_log l JOIN messages m ON m.id = l.event_id \
             WHERE l.action = 'banned' AND l.target = 2 AND l.until IS NOT NULL \
               AND m.kind = 4 AND m.target = 2",
        )
        .await;
    assert_eq!(audit, 1, "the audit row names the ban's event");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    user.join("pub").await;

    // A ban without seconds holds until unban; a non-member may be banned.
    owner
        .acked(json!({"type": "ban", "room": "pub", "user": 2}), "ban_ack")
        .await;
    member_event(&mut user, "banned").await;
    let text = user.refusal(json!({"type": "join", "room": "pub"})).await;
    assert_eq!(text, "you are banned from room 'pub'");
    owner
        .acked(
            json!({"type": "unban", "room": "pub", "user": 2}),
            "unban_ack",
        )
        .await;
    let e = member_event(&mut user, "unbanned").await;
    assert_eq!(
        e,
        json!({"room": "pub", "user": 2, "action": "unbanned", "by": 1})
    );
    user.join("pub").await;
    owner
        .acked(json!({"type": "ban", "room": "pub", "user": 3}), "ban_ack")
        .await;
    owner
        .acked(
            json!({"type": "ban", "room": "pub", "user": 3, "seconds": 60}),
            "ban_ack",
        )
        .await;
    let bans = server
        .count("SELECT count(*) FROM room_bans WHERE room = 'pub' AND user_id = 3 AND until IS NOT NULL")
        .await;
    assert_eq!(bans, 1, "a second ban replaces the first");
    let ghost = owner
        .refusal(json!({"type": "ban", "room": "pub", "user": 99}))
        .await;
    assert_eq!(ghost, "user 99 does not exist");
    let logged = server
        .count(
            "SELECT count(*) FROM moderation_log WHERE room = 'pub' AND action = 'unbanned' \
             AND actor = 1 AND target = 2 AND event_id IS NULL",
        )
        .await;
    assert_eq!(logged, 1);
}

#[tokio::test]
async fn owners_kick_anyone_but_themselves_moderators_plain_members_only() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    create(&mut owner, "club", "private").await;
    let mut moderator = server.connect_on_shard(2, "mod", 1).await;
    let mut member = server.connect_on_shard(3, "member", 0).await;
    let other_mod = server.connect_on_shard(4, "mod2", 1).await;
    for u in [2, 3, 4] {
        invite(&mut owner, "club", u).await;
    }
    for u in [2, 4] {
        owner
            .acked(
                json!({"type": "set_role", "room": "club", "user": u, "role": "moderator"}),
                "set_role_ack",
            )
            .await;
    }
    for action in ["kick", "ban"] {
        let text = member
            .refusal(json!({"type": action, "room": "club", "user": 2}))
            .await;
        assert_eq!(
            text,
            format!("{action} on a moderator needs the owner role in room 'club'")
        );
        let text = member
            .refusal(json!({"type": action, "room": "club", "user": 1}))
            .await;
        assert_eq!(
            text,
            format!("{action} on an owner needs the owner role in room 'club'")
        );
        let text = moderator
            .refusal(json!({"type": action, "room": "club", "user": 4}))
            .await;
        assert_eq!(
            text,
            format!("{action} on a moderator needs the owner role in room 'club'")
        );
        let text = owner
            .refusal(json!({"type": action, "room": "club", "user": 1}))
            .await;
        assert_eq!(text, format!("{action} cannot target yourself"));
    }
    let text = moderator
        .refusal(json!({"type": "unban", "room": "club", "user": 1}))
        .await;
    assert_eq!(
        text,
        "unban on an owner needs the owner role in room 'club'"
    );
    let mut outsider = server.connect_on_shard(5, "out", 1).await;
    let text = outsider
        .refusal(json!({"type": "kick", "room": "club", "user": 3}))
        .await;
    assert_eq!(text, "not a member of room 'club'");
    // A moderator kicks a plain member; an owner kicks a moderator.
    moderator
        .acked(
            json!({"type": "kick", "room": "club", "user": 3}),
            "kick_ack",
        )
        .await;
    owner
        .acked(
            json!({"type": "kick", "room": "club", "user": 4}),
            "kick_ack",
        )
        .await;
    drop(other_mod);
    let refused = server
        .count("SELECT count(*) FROM messages WHERE kind IN (3, 4)")
        .await;
    assert_eq!(refused, 2, "refusals write no event");
    let audit = server
        .count(
            "SELECT count(*) FROM moderation_log WHERE action = 'kicked' AND event_id IS NOT NULL",
        )
        .await;
    assert_eq!(audit, 2);
}

#[tokio::test]
async fn kick_events_are_not_history_nor_unread_and_replays_carry_them_as_member_frames() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    create(&mut owner, "log", "public").await;
    let mut reader = server.connect_on_shard(3, "reader", 1).await;
    let mut gone = server.connect_on_shard(2, "gone", 1).await;
    reader.join("log").await;
    gone.join("log").await;
    let first = owner
        .ask(json!({"type": "message", "room": "log", "content": "before"}))
        .await;
    let first = first["data"]["id"].as_i64().unwrap();
    owner
        .acked(
            json!({"type": "kick", "room": "log", "user": 2}),
            "kick_ack",
        )
        .await;
    member_event(&mut reader, "kicked").await; // live, as a member
    let history = reader
        .ask(json!({"type": "room_history", "room": "log"}))
        .await;
    let entries = history["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{history}");
    assert_eq!(entries[0]["id"], first);
    let rooms = reader.ask(json!({"type": "rooms"})).await;
    let log = rooms["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == "log")
        .unwrap()
        .clone();
    assert_eq!(log["last_id"], first, "{log}");
    assert_eq!(log["unread"], 1, "{log}");
    // A connection that missed the kick gets it in its replay.
    reader.close().await;
    let mut reader = server.connect_on_shard(3, "reader", 0).await;
    reader
        .send(json!({"type": "join", "room": "log", "since": first}))
        .await;
    let ack = reader.recv_type("join_ack").await;
    assert_eq!(ack["data"]["room"], "log", "{ack}");
    let replayed = member_event(&mut reader, "kicked").await;
    assert_eq!(
        replayed,
        json!({"room": "log", "user": 2, "action": "kicked", "by": 1})
    );
    reader.expect_nothing(Duration::from_millis(200)).await;
}

/// The reads a shard plans for a history or a replay are empty for a user
/// who is not a member in the same snapshot: a kicked user's connection on
/// a shard that has not applied the kick yet (its registry still says
/// member) gets no row of the room, let alone one above the kick.
#[tokio::test]
async fn history_and_replay_reads_hold_nothing_for_a_kicked_user() {
    use chat_server::store::{Store, Window};
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    create(&mut owner, "vault", "private").await;
    let mut kicked = server.connect_on_shard(2, "kicked", 1).await;
    invite(&mut owner, "vault", 2).await;
    member_event(&mut kicked, "invited").await;
    let sent = owner
        .ask(json!({"type": "message", "room": "vault", "content": "before"}))
        .await;
    assert_eq!(sent["type"], "message", "{sent}");
    let store = Store::new(&server.db_url, 1).unwrap();
    let window = |after| Window {
        limit: 10,
        before: None,
        after,
    };
    for user in [1, 2] {
        assert_eq!(
            store
                .room_index("vault", user, window(None))
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store
                .room_since_index("vault", user, 0, 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }
    owner
        .acked(
            json!({"type": "kick", "room": "vault", "user": 2}),
            "kick_ack",
        )
        .await;
    owner
        .ask(json!({"type": "message", "room": "vault", "content": "after"}))
        .await;
    assert!(store
        .room_index("vault", 2, window(None))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .room_index("vault", 2, window(Some(0)))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .room_since_index("vault", 2, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .room_index("vault", 1, window(None))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store
            .room_since_index("vault", 1, 0, 10)
            .await
            .unwrap()
            .len(),
        3,
        "two messages and the kick"
    );
}

/// A ban holds against an invitation (only `unban` lifts it), and a user
/// banned from a private room is told what anyone outside it is told: the
/// room does not exist.
#[tokio::test]
async fn an_invitation_does_not_lift_a_ban_and_a_private_room_stays_hidden_from_the_banned() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    let mut user = server.connect_on_shard(2, "user", 1).await;
    create(&mut owner, "vault", "private").await;
    invite(&mut owner, "vault", 2).await;
    member_event(&mut user, "invited").await;
    owner
        .acked(
            json!({"type": "ban", "room": "vault", "user": 2}),
            "ban_ack",
        )
        .await;
    member_event(&mut user, "banned").await;
    let missing = user
        .refusal(json!({"type": "join", "room": "no-such-room"}))
        .await;
    let hidden = user.refusal(json!({"type": "join", "room": "vault"})).await;
    assert_eq!(
        hidden,
        missing.replace("no-such-room", "vault"),
        "a banned user must not tell a private room from a missing one"
    );
    let text = owner
        .refusal(json!({"type": "invite", "room": "vault", "user": 2}))
        .await;
    assert_eq!(text, "user 2 is banned from room 'vault'; unban them first");
    owner
        .acked(
            json!({"type": "unban", "room": "vault", "user": 2}),
            "unban_ack",
        )
        .await;
    invite(&mut owner, "vault", 2).await;
    user.join("vault").await;
}
