//! The session's rules on a real shard context (no threads, sockets or
//! database): every request answered without a database round trip.
use super::*;
use crate::config::Config;
use crate::mesh::Mailbox;
use crate::router::ShardEvent;
use crate::shard::outbox::Outbox;
use crate::shard::testing;
use crate::store::writer::PersistRequest;
use serde_json::{json, Value};

const ALICE: UserId = 7;

struct Fixture {
    shard: Rc<Shard>,
    session: Session,
    inbox: Mailbox<ShardEvent>,
    writer: Mailbox<PersistRequest>,
}

/// A session of user 7 ("alice"), connection 0, member of `rooms`.
fn fixture_with(config: Config, rooms: &[&str]) -> Fixture {
    let (shard, inbox, writer) = testing::shard(config);
    let outbox = Rc::new(Outbox::new(0, ALICE));
    shard
        .registry
        .borrow_mut()
        .register(outbox, rooms.iter().map(|r| Arc::from(*r)));
    let identity = Identity {
        user_id: ALICE,
        username: "alice".into(),
        expires_at: chrono::Utc::now().timestamp() + 3600,
    };
    let session = Session::new(
        shard.clone(),
        Origin { shard: 0, conn: 0 },
        &identity,
        shard
            .user_limits
            .open(identity.user_id)
            .expect("slot")
            .budget(),
    );
    Fixture {
        shard,
        session,
        inbox,
        writer,
    }
}

fn fixture(rooms: &[&str]) -> Fixture {
    fixture_with(testing::config(), rooms)
}

/// The frame of an answer given at once.
fn reply(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Reply(frame) => serde_json::from_str(frame.as_str()).expect("JSON frame"),
        Outcome::Queued => panic!("queued, expected a reply"),
        Outcome::Later(_) => panic!("deferred, expected a reply"),
        Outcome::CloseUnauthorized(_) => panic!("close, expected a reply"),
        Outcome::Refreshed { .. } => panic!("refreshed, expected a reply"),
    }
}

fn error_message(v: &Value) -> &str {
    assert_eq!(v["type"], "error", "{v}");
    v["data"]["message"].as_str().expect("message")
}

fn token(f: &Fixture, user: UserId, ttl: i64) -> String {
    let secret = f.shard.config.jwt_secret.as_deref().expect("secret");
    crate::auth::sign_hs256(secret.as_bytes(), user, "alice", ttl)
}

#[test]
fn a_bad_request_is_an_error_that_keeps_its_ref() {
    let f = fixture(&[]);
    let v = reply(f.session.handle(r#"{"type":"nope","ref":"R1"}"#));
    assert!(error_message(&v).contains("nope"), "{v}");
    assert_eq!(v["ref"], "R1");
    let v = reply(f.session.handle("not json"));
    assert_eq!(v["type"], "error");
}

#[test]
fn sending_needs_membership_and_valid_content() {
    let f = fixture(&["general"]);
    let v = reply(
        f.session
            .handle(r#"{"type":"message","room":"other","content":"hi","ref":3}"#),
    );
    assert_eq!(error_message(&v), "join room 'other' before sending to it");
    assert_eq!(v["ref"], 3);
    let v = reply(
        f.session
            .handle(r#"{"type":"message","room":"general","content":""}"#),
    );
    assert_eq!(error_message(&v), "content must not be empty");
    let long = "x".repeat(f.shard.config.max_content + 1);
    let v = reply(
        f.session
            .handle(&json!({"type":"message","room":"general","content":long}).to_string()),
    );
    assert!(error_message(&v).starts_with("content too long"), "{v}");
    assert!(f.writer.try_pop().is_none(), "nothing reached a writer");
}

#[test]
fn a_muted_member_is_refused_from_the_registry_without_a_query() {
    use crate::rooms::{Mute, MuteChange};
    let f = fixture(&["general"]);
    let mute = |until| MuteChange::Muted(Mute { until });
    f.shard
        .registry
        .borrow_mut()
        .set_mute(ALICE, "general", mute(None));
    let v = reply(
        f.session
            .handle(r#"{"type":"message","room":"general","content":"hi","ref":1}"#),
    );
    assert_eq!(error_message(&v), "you are muted in room 'general'");
    assert_eq!(v["ref"], 1);
    let until = chrono::Utc::now() + chrono::Duration::seconds(60);
    f.shard
        .registry
        .borrow_mut()
        .set_mute(ALICE, "general", mute(Some(until)));
    let v = reply(
        f.session
            .handle(r#"{"type":"message","room":"general","content":"hi"}"#),
    );
    assert!(
        error_message(&v).starts_with("you are muted in room 'general' until 20"),
        "{v}"
    );
    assert!(f.writer.try_pop().is_none(), "nothing reached a writer");
    // An expired mute holds no more, even before anything lifts it.
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    f.shard
        .registry
        .borrow_mut()
        .set_mute(ALICE, "general", mute(Some(past)));
    let outcome = f
        .session
        .handle(r#"{"type":"message","room":"general","content":"hi"}"#);
    assert!(matches!(outcome, Outcome::Queued));
    assert!(f.writer.try_pop().is_some());
}

#[test]
fn members_needs_membership_and_a_valid_limit_before_any_query() {
    let f = fixture(&["general"]);
    let v = reply(
        f.session
            .handle(r#"{"type":"members","room":"secret","ref":2}"#),
    );
    assert_eq!(
        error_message(&v),
        "join room 'secret' before listing its members"
    );
    assert_eq!(v["ref"], 2);
    let v = reply(
        f.session
            .handle(r#"{"type":"members","room":"general","limit":0}"#),
    );
    assert_eq!(error_message(&v), "limit must be a positive integer");
}

#[test]
fn a_members_message_goes_to_its_writer_with_its_keys() {
    let f = fixture(&["general"]);
    let outcome = f.session.handle(
        r#"{"type":"message","room":"general","content":"hi","client_id":"c-1","ref":"m1"}"#,
    );
    assert!(matches!(outcome, Outcome::Queued));
    let req = f.writer.try_pop().expect("queued for the writer");
    assert!(matches!(&req.target, Target::Room(r) if &**r == "general"));
    assert_eq!(
        (req.from, &*req.username, req.content.as_str()),
        (ALICE, "alice", "hi")
    );
    assert_eq!(req.client_id.as_deref(), Some("c-1"));
    assert_eq!(req.reference, Some(Ref::Text("m1".into())));
    assert_eq!(req.origin, Origin { shard: 0, conn: 0 });
}

#[test]
fn a_dm_to_oneself_or_a_known_user_needs_no_lookup() {
    let f = fixture(&[]);
    let to_self = format!(r#"{{"type":"dm","to":{ALICE},"content":"note"}}"#);
    assert!(matches!(f.session.handle(&to_self), Outcome::Queued));
    f.shard.known_users.borrow_mut().remember(8, None);
    assert!(matches!(
        f.session.handle(r#"{"type":"dm","to":8,"content":"hi"}"#),
        Outcome::Queued
    ));
    assert!(
        matches!(
            f.session.handle(r#"{"type":"dm","to":9,"content":"hi"}"#),
            Outcome::Later(_)
        ),
        "an unknown user is looked up first"
    );
    let targets: Vec<Target> = std::iter::from_fn(|| f.writer.try_pop())
        .map(|r| r.target)
        .collect();
    assert_eq!(targets, vec![Target::User(ALICE), Target::User(8)]);
}

#[test]
fn room_creation_rules() {
    let f = fixture(&[]);
    let v = reply(
        f.session
            .handle(r#"{"type":"create_room","room":"no spaces"}"#),
    );
    assert!(error_message(&v).starts_with("invalid room name"), "{v}");

    let mut config = testing::config();
    config.no_client_room_create = true;
    let f = fixture_with(config, &[]);
    let v = reply(f.session.handle(r#"{"type":"create_room","room":"fine"}"#));
    assert_eq!(
        error_message(&v),
        "room creation by clients is disabled on this server"
    );

    let mut config = testing::config();
    config.max_rooms_per_user = 1;
    let f = fixture_with(config, &["general"]);
    let v = reply(
        f.session
            .handle(r#"{"type":"create_room","room":"second"}"#),
    );
    assert_eq!(error_message(&v), "too many rooms (at most 1 per user)");
    let v = reply(f.session.handle(r#"{"type":"join","room":"second"}"#));
    assert_eq!(error_message(&v), "too many rooms (at most 1 per user)");
}

#[test]
fn a_member_rejoining_is_answered_at_once_with_who_is_online() {
    let f = fixture(&["general"]);
    f.shard.presence.connected(ALICE, &[Arc::from("general")]);
    let v = reply(
        f.session
            .handle(r#"{"type":"join","room":"general","ref":1}"#),
    );
    assert_eq!(v["type"], "join_ack", "{v}");
    assert_eq!(v["data"]["room"], "general");
    assert_eq!(v["data"]["online"], json!([ALICE]));
    assert_eq!(v["ref"], 1);
    // A join with `since` replays from the database: deferred.
    assert!(matches!(
        f.session
            .handle(r#"{"type":"join","room":"general","since":0}"#),
        Outcome::Later(_)
    ));
}

#[test]
fn after_a_join_or_dm_sync_with_since_nothing_up_to_it_arrives_live() {
    // A node behind the one the client left can still have messages the
    // client has (cluster mode): from the request on, they are skipped.
    let f = fixture(&["general"]);
    let _later = f
        .session
        .handle(r#"{"type":"join","room":"general","since":120}"#);
    let _later = f.session.handle(r#"{"type":"dm_sync","since":50}"#);
    let registry = f.shard.registry.borrow();
    let room = registry.room_cursor(0, "general").expect("subscribed");
    assert!(!room.admit(119) && !room.admit(120), "the client has these");
    assert!(room.admit(121));
    let dms = registry.dm_cursor(0).expect("connected");
    assert!(!dms.admit(50));
    assert!(dms.admit(51));
}

#[test]
fn requests_on_a_room_need_membership() {
    let f = fixture(&["general"]);
    for (request, expected) in [
        (r#"{"type":"leave","room":"x"}"#, "not a member of room 'x'"),
        (
            r#"{"type":"read","room":"x","up_to":5}"#,
            "not a member of room 'x'",
        ),
        (
            r#"{"type":"room_history","room":"x"}"#,
            "join room 'x' before reading its history",
        ),
        (
            r#"{"type":"typing","room":"x"}"#,
            "join room 'x' before typing in it",
        ),
    ] {
        let v = reply(f.session.handle(request));
        assert_eq!(error_message(&v), expected, "{request}");
    }
}

#[test]
fn typing_is_a_notice_through_the_shards_own_inbox() {
    let f = fixture(&["general"]);
    assert!(matches!(
        f.session.handle(r#"{"type":"typing","room":"general"}"#),
        Outcome::Queued
    ));
    match f.inbox.try_pop() {
        Some(ShardEvent::Notice {
            room,
            except,
            frame,
        }) => {
            assert_eq!((&*room, except), ("general", ALICE));
            assert!(
                frame.as_str().contains(r#""type":"typing""#),
                "{}",
                frame.as_str()
            );
        }
        other => panic!("expected a notice, got {other:?}"),
    }
    // Throttled: a second one at once is dropped silently.
    assert!(matches!(
        f.session.handle(r#"{"type":"typing","room":"general"}"#),
        Outcome::Queued
    ));
    assert!(f.inbox.try_pop().is_none());
}

#[test]
fn refresh_accepts_only_a_valid_token_of_the_same_user() {
    let f = fixture(&[]);
    let v = reply(
        f.session
            .handle(r#"{"type":"refresh","token":"garbage","ref":"t"}"#),
    );
    assert!(error_message(&v).starts_with("refresh refused: "), "{v}");
    assert_eq!(v["ref"], "t");

    let other = token(&f, ALICE + 1, 600);
    let request = json!({"type":"refresh","token":other}).to_string();
    assert!(matches!(
        f.session.handle(&request),
        Outcome::CloseUnauthorized(_)
    ));

    let fresh = token(&f, ALICE, 7200);
    let request = json!({"type":"refresh","token":fresh}).to_string();
    match f.session.handle(&request) {
        Outcome::Refreshed { frame, expires_at } => {
            assert!(expires_at > chrono::Utc::now().timestamp() + 3600);
            assert!(frame.as_str().contains("refresh_ack"));
        }
        _ => panic!("expected a refresh_ack"),
    }
}

#[test]
fn a_history_page_needs_a_positive_limit() {
    let f = fixture(&["general"]);
    let request = json!({"type":"room_history","room":"general","limit": 0, "ref": 2});
    let v = reply(f.session.handle(&request.to_string()));
    assert_eq!(error_message(&v), "limit must be a positive integer");
    assert_eq!(v["ref"], 2);
}

#[test]
fn content_rules() {
    assert!(check_content("", 10).is_err());
    assert!(check_content("0123456789", 10).is_ok());
    assert!(check_content("01234567890", 10).is_err());
    // 10 characters, 20 bytes: within a 10-character limit.
    assert!(check_content(&"é".repeat(10), 10).is_ok());
    assert!(check_content(&"é".repeat(11), 10).is_err());
    assert!(check_content("a\0b", 10).is_err());
}
