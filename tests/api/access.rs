//! Room access (issue 14): private rooms, roles, invitations, member
//! lists, mutes, member events and the audit log, with members on both
//! shards.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Client, TestServer};

/// Next frame of `kind`, skipping any other (member events interleave).
async fn next(c: &mut Client, kind: &str) -> Value {
    loop {
        let v = c.recv_any().await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// Next `member` event with `action`, skipping others.
async fn member_event(c: &mut Client, action: &str) -> Value {
    loop {
        let v = next(c, "member").await;
        if v["data"]["action"] == action {
            return v["data"].clone();
        }
    }
}

async fn create(c: &mut Client, room: &str, visibility: Option<&str>) -> Value {
    let mut request = json!({"type": "create_room", "room": room});
    if let Some(v) = visibility {
        request["visibility"] = json!(v);
    }
    let v = c.ask(request).await;
    assert_eq!(v["type"], "room_created", "{v}");
    v
}

async fn say(c: &mut Client, room: &str, content: &str) -> Value {
    c.ask(json!({"type": "message", "room": room, "content": content}))
        .await
}

async fn rooms_of(c: &mut Client) -> Vec<String> {
    let v = c.ask(json!({"type": "rooms"})).await;
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_non_member_cannot_tell_a_private_room_from_a_missing_one() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    let created = create(&mut owner, "secret", Some("private")).await;
    assert_eq!(created["data"]["visibility"], "private", "{created}");
    assert_eq!(say(&mut owner, "secret", "hidden").await["type"], "message");
    let mut public = create(&mut owner, "open", None).await;
    assert_eq!(public["data"]["visibility"], "public", "{public}");

    for shard in [0, 1] {
        let mut outsider = server.connect_on_shard(2, "outsider", shard).await;
        for request in [
            json!({"type": "join", "room": "ROOM"}),
            json!({"type": "join", "room": "ROOM", "since": 0}),
            json!({"type": "room_history", "room": "ROOM"}),
            json!({"type": "message", "room": "ROOM", "content": "x"}),
            json!({"type": "members", "room": "ROOM"}),
            json!({"type": "leave", "room": "ROOM"}),
            json!({"type": "read", "room": "ROOM", "up_to": 1}),
            json!({"type": "invite", "room": "ROOM", "user": 2}),
            json!({"type": "mute", "room": "ROOM", "user": 1}),
            json!({"type": "unmute", "room": "ROOM", "user": 1}),
            json!({"type": "set_role", "room": "ROOM", "user": 1, "role": "member"}),
        ] {
            let ask_about = |room: &str| {
                let text = request.to_string().replace("ROOM", room);
                serde_json::from_str::<Value>(&text).unwrap()
            };
            let private = outsider.refusal(ask_about("secret")).await;
            let missing = outsider.refusal(ask_about("nowhere")).await;
            assert_eq!(
                private.replace("secret", "R"),
                missing.replace("nowhere", "R"),
                "{request}"
            );
        }
        assert!(!rooms_of(&mut outsider).await.contains(&"secret".into()));
        // Public rooms are as before: anyone joins.
        outsider.join("open").await;
        outsider.close().await;
    }
    public = owner
        .ask(json!({"type": "members", "room": "secret"}))
        .await;
    assert_eq!(public["data"]["members"].as_array().unwrap().len(), 1);
    let n = server
        .count("SELECT count(*) FROM room_members WHERE room = 'secret'")
        .await;
    assert_eq!(n, 1, "the outsider never became a member");
}

#[tokio::test]
async fn an_invitation_reaches_every_connection_of_the_invitee_on_both_shards() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    create(&mut owner, "team", Some("private")).await;
    let mut guest0 = server.connect_on_shard(2, "guest", 0).await;
    let mut guest1 = server.connect_on_shard(2, "guest", 1).await;
    let mut other = server.connect_on_shard(3, "other", 1).await;

    owner
        .acked(
            json!({"type": "invite", "room": "team", "user": 2}),
            "invite_ack",
        )
        .await;
    for g in [&mut guest0, &mut guest1] {
        let e = member_event(g, "invited").await;
        assert_eq!(
            e,
            json!({"room": "team", "user": 2, "action": "invited", "by": 1})
        );
    }
    // Both connections receive the room at once, without joining.
    let sent = say(&mut owner, "team", "welcome").await;
    let id = sent["data"]["id"].clone();
    for g in [&mut guest0, &mut guest1] {
        assert_eq!(next(g, "message").await["data"]["id"], id);
    }
    assert_eq!(rooms_of(&mut guest1).await, vec!["team".to_owned()]);
    let history = guest1
        .ask(json!({"type": "room_history", "room": "team"}))
        .await;
    assert_eq!(history["data"][0]["id"], id, "{history}");
    guest0.join("team").await;
    // The invitee's messages reach the owner; an outsider sees nothing.
    let reply = say(&mut guest0, "team", "thanks").await;
    assert_eq!(reply["type"], "message", "{reply}");
    assert_eq!(
        next(&mut owner, "message").await["data"]["content"],
        "thanks"
    );
    other.expect_nothing(Duration::from_millis(200)).await;
    // A fresh connection of the invitee has the room from its stored membership.
    let mut guest_again = server.connect(2, "guest").await;
    assert_eq!(rooms_of(&mut guest_again).await, vec!["team".to_owned()]);
    // Inviting a member again is refused; so is inviting a user that never connected.
    let again = owner
        .refusal(json!({"type": "invite", "room": "team", "user": 2}))
        .await;
    assert_eq!(again, "user 2 is already a member of room 'team'");
    let ghost = owner
        .refusal(json!({"type": "invite", "room": "team", "user": 99}))
        .await;
    assert_eq!(ghost, "user 99 does not exist");
    let audit = server
        .count(
            "SELECT count(*) FROM moderation_log WHERE room = 'team' AND actor = 1 \
             AND action = 'invited' AND target = 2",
        )
        .await;
    assert_eq!(audit, 1);
}

/// actor, action, target, role, has an end.
type AuditRow = (Option<i64>, String, i64, Option<String>, bool);

#[tokio::test]
async fn roles_owners_act_on_anyone_but_themselves_moderators_on_members_members_on_no_one() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    let mut moder = server.connect_on_shard(2, "moder", 1).await;
    let mut alice = server.connect_on_shard(3, "alice", 0).await;
    let mut bob = server.connect_on_shard(4, "bob", 1).await;
    create(&mut owner, "r", None).await;
    for c in [&mut moder, &mut alice, &mut bob] {
        c.join("r").await;
    }
    owner
        .acked(
            json!({"type": "set_role", "room": "r", "user": 2, "role": "moderator"}),
            "set_role_ack",
        )
        .await;
    for c in [&mut moder, &mut bob] {
        let e = member_event(c, "role").await;
        assert_eq!(
            e,
            json!({"room": "r", "user": 2, "action": "role", "by": 1, "role": "moderator"})
        );
    }

    let mut p = [owner, moder, alice, bob];
    // Members act on no one.
    let cases = [
        (
            2,
            json!({"type": "mute", "room": "r", "user": 4}),
            "mute needs the moderator role in room 'r'",
        ),
        (
            2,
            json!({"type": "invite", "room": "r", "user": 1}),
            "user 1 is already a member of room 'r'",
        ),
        (
            2,
            json!({"type": "set_role", "room": "r", "user": 4, "role": "owner"}),
            "set_role needs the owner role in room 'r'",
        ),
        // Moderators act on plain members only, and never set roles.
        (
            1,
            json!({"type": "mute", "room": "r", "user": 1}),
            "mute on an owner needs the owner role in room 'r'",
        ),
        (
            1,
            json!({"type": "set_role", "room": "r", "user": 3, "role": "moderator"}),
            "set_role needs the owner role in room 'r'",
        ),
        (
            1,
            json!({"type": "mute", "room": "r", "user": 2}),
            "mute cannot target yourself",
        ),
        // Owners act on anyone but themselves.
        (
            0,
            json!({"type": "set_role", "room": "r", "user": 1, "role": "member"}),
            "set_role cannot target yourself",
        ),
        (
            0,
            json!({"type": "mute", "room": "r", "user": 99}),
            "user 99 is not a member of room 'r'",
        ),
    ];
    for (who, request, expected) in cases {
        let got = p[who].refusal(request.clone()).await;
        assert_eq!(got, expected, "{request}");
    }
    p[1].acked(json!({"type": "mute", "room": "r", "user": 4}), "mute_ack")
        .await;
    p[1].acked(
        json!({"type": "unmute", "room": "r", "user": 4}),
        "unmute_ack",
    )
    .await;
    // Several owners: the second may act on the first.
    p[0].acked(
        json!({"type": "set_role", "room": "r", "user": 3, "role": "owner"}),
        "set_role_ack",
    )
    .await;
    p[2].acked(
        json!({"type": "mute", "room": "r", "user": 1, "seconds": 60}),
        "mute_ack",
    )
    .await;
    p[2].acked(
        json!({"type": "set_role", "room": "r", "user": 2, "role": "member"}),
        "set_role_ack",
    )
    .await;
    let list = p[3].ask(json!({"type": "members", "room": "r"})).await;
    let roles: Vec<(i64, String)> = list["data"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"].as_i64().unwrap(),
                m["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        vec![
            (1, "owner".into()),
            (2, "member".into()),
            (3, "owner".into()),
            (4, "member".into())
        ]
    );
    assert_eq!(list["data"]["members"][0]["muted"], true, "{list}");
    assert!(
        list["data"]["members"][0]["muted_until"].is_string(),
        "{list}"
    );

    // Every action that changed something is in the audit log, in order.
    let db = server.db().await;
    let rows = db
        .query(
            "SELECT actor, action, target, role, until IS NOT NULL FROM moderation_log \
             WHERE room = 'r' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let log: Vec<AuditRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let role = |r: &str| Some(r.to_owned());
    assert_eq!(
        log,
        vec![
            (Some(1), "role".into(), 2, role("moderator"), false),
            (Some(2), "muted".into(), 4, None, false),
            (Some(2), "unmuted".into(), 4, None, false),
            (Some(1), "role".into(), 3, role("owner"), false),
            (Some(3), "muted".into(), 1, None, true),
            (Some(3), "role".into(), 2, role("member"), false),
        ]
    );
}

#[tokio::test]
async fn a_mute_refuses_messages_on_every_connection_until_it_expires_or_is_lifted() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    create(&mut owner, "r", None).await;
    let mut a0 = server.connect_on_shard(2, "a", 0).await;
    let mut a1 = server.connect_on_shard(2, "a", 1).await;
    a0.join("r").await;

    let ack = owner
        .acked(
            json!({"type": "mute", "room": "r", "user": 2, "seconds": 1}),
            "mute_ack",
        )
        .await;
    let until = ack["data"]["until"].as_str().unwrap().to_owned();
    for a in [&mut a0, &mut a1] {
        let e = member_event(a, "muted").await;
        assert_eq!(e["until"], until.as_str(), "{e}");
        assert_eq!(e["by"], 1);
        let refused = say(a, "r", "let me speak").await;
        assert_eq!(
            refused["data"]["message"],
            format!("you are muted in room 'r' until {until}"),
            "{refused}"
        );
    }
    // Still reads the room.
    let id = say(&mut owner, "r", "you may read").await["data"]["id"].clone();
    assert_eq!(next(&mut a1, "message").await["data"]["id"], id);
    // The mute ends by itself.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for a in [&mut a0, &mut a1] {
        assert_eq!(say(a, "r", "back").await["type"], "message");
    }

    // Until unmuted: survives a reconnect, and a leave and a rejoin.
    owner
        .acked(json!({"type": "mute", "room": "r", "user": 2}), "mute_ack")
        .await;
    let e = member_event(&mut a1, "muted").await;
    assert!(e.get("until").is_none(), "{e}");
    a1.close().await;
    let mut a1 = server.connect_on_shard(2, "a", 1).await;
    assert_eq!(
        say(&mut a1, "r", "after reconnect").await["data"]["message"],
        "you are muted in room 'r'"
    );
    assert_eq!(
        a0.ask(json!({"type": "leave", "room": "r"})).await["type"],
        "leave_ack"
    );
    a0.join("r").await;
    for a in [&mut a0, &mut a1] {
        assert_eq!(say(a, "r", "rejoined").await["type"], "error");
    }
    owner
        .acked(
            json!({"type": "unmute", "room": "r", "user": 2}),
            "unmute_ack",
        )
        .await;
    member_event(&mut a1, "unmuted").await;
    for a in [&mut a0, &mut a1] {
        assert_eq!(say(a, "r", "free").await["type"], "message");
    }
    let stored = server
        .count("SELECT count(*) FROM messages WHERE from_user = 2")
        .await;
    assert_eq!(
        stored, 4,
        "two 'back', two 'free': nothing refused was stored"
    );
    let audit = server
        .count("SELECT count(*) FROM moderation_log WHERE room = 'r' AND target = 2")
        .await;
    assert_eq!(audit, 3, "muted, muted, unmuted");
}

#[tokio::test]
async fn joins_and_leaves_are_member_events_beside_presence() {
    let server = TestServer::start().await;
    let mut owner = server.connect_on_shard(1, "owner", 0).await;
    create(&mut owner, "r", None).await;
    let mut a0 = server.connect_on_shard(2, "a", 0).await;
    let mut a1 = server.connect_on_shard(2, "a", 1).await;
    a0.join("r").await;
    let e = member_event(&mut owner, "joined").await;
    assert_eq!(
        e,
        json!({"room": "r", "user": 2, "action": "joined", "by": 2})
    );
    member_event(&mut a1, "joined").await;
    // Joining again is no change: no event.
    a0.join("r").await;
    assert_eq!(
        a0.ask(json!({"type": "leave", "room": "r"})).await["type"],
        "leave_ack"
    );
    let e = member_event(&mut owner, "left").await;
    assert_eq!(
        e,
        json!({"room": "r", "user": 2, "action": "left", "by": 2})
    );
    // The leaver's other connection hears of it too.
    let e = member_event(&mut a1, "left").await;
    assert_eq!(e["user"], 2);
}

#[tokio::test]
async fn members_are_paged_by_user_id_under_the_cap() {
    let server = TestServer::start_with(|c| c.members_page_max = 2).await;
    server.create_room("r").await;
    let mut clients = Vec::new();
    for user in 1..=5 {
        let mut c = server.connect(user, &format!("u{user}")).await;
        c.join("r").await;
        clients.push(c);
    }
    let c = &mut clients[0];
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let mut request = json!({"type": "members", "room": "r"});
        if let Some(a) = after {
            request["after"] = json!(a);
        }
        let page = c.ask(request).await;
        assert_eq!(page["type"], "members", "{page}");
        let members = page["data"]["members"].as_array().unwrap().clone();
        assert!(members.len() <= 2, "{page}");
        for m in &members {
            assert_eq!(m["role"], "member", "ownerless room made by the operator");
            seen.push((
                m["user"].as_i64().unwrap(),
                m["username"].as_str().unwrap().to_owned(),
            ));
        }
        after = members.last().map(|m| m["user"].as_i64().unwrap());
        if page["data"]["more"] == false {
            break;
        }
    }
    let expected: Vec<(i64, String)> = (1..=5).map(|u| (u, format!("u{u}"))).collect();
    assert_eq!(seen, expected);
    let one = c
        .ask(json!({"type": "members", "room": "r", "after": 1, "limit": 1}))
        .await;
    assert_eq!(one["data"]["members"][0]["user"], 2);
    assert_eq!(one["data"]["more"], true);
    let bad = c
        .refusal(json!({"type": "members", "room": "r", "limit": 0}))
        .await;
    assert_eq!(bad, "limit must be a positive integer");
    let mut outsider = server.connect(9, "out").await;
    let no = outsider
        .refusal(json!({"type": "members", "room": "r"}))
        .await;
    assert_eq!(no, "join room 'r' before listing its members");
}

#[tokio::test]
async fn the_room_create_command_makes_private_rooms_with_an_owner() {
    let server = TestServer::start().await;
    // The owner must have connected once (its users row).
    server.connect(5, "boss").await.close().await;
    let run = |args: Vec<&'static str>| {
        let url = server.db_url.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_chat_server"))
                .args(args)
                .env("DATABASE_URL", url)
                .env("RUST_LOG", "warn")
                .output()
                .expect("run chat_server")
        })
    };
    let out = run(vec!["room", "create", "vault", "--private", "--owner", "5"])
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("created private room 'vault'"));
    let out = run(vec!["room", "create", "nope", "--owner", "77"])
        .await
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("user 77 does not exist"));
    assert_eq!(
        server
            .count("SELECT count(*) FROM rooms WHERE name = 'nope'")
            .await,
        0
    );

    let mut boss = server.connect(5, "boss").await;
    assert_eq!(rooms_of(&mut boss).await, vec!["vault".to_owned()]);
    let list = boss.ask(json!({"type": "members", "room": "vault"})).await;
    assert_eq!(
        list["data"]["members"],
        json!([{"user": 5, "username": "boss", "role": "owner"}])
    );
    let mut outsider = server.connect(6, "six").await;
    let e = outsider
        .refusal(json!({"type": "join", "room": "vault"}))
        .await;
    assert_eq!(e, "room 'vault' does not exist");
    boss.acked(
        json!({"type": "invite", "room": "vault", "user": 6}),
        "invite_ack",
    )
    .await;
    outsider.join("vault").await;
}
