//! Property tests over the decoder: arbitrary input never panics, and
//! every valid request survives a round trip. `PROPTEST_CASES=100000`
//! runs a longer campaign by hand.
use super::*;
use crate::protocol::MAX_USER_ID;
use proptest::prelude::*;

fn room() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _\\-éü€🌍]{1,16}".prop_filter("fits", |r| valid_room_name(r))
}

fn request() -> impl Strategy<Value = Request> {
    let id = || proptest::option::of(0..i64::MAX);
    let client_id = || proptest::option::of("[a-zA-Z0-9é-]{1,64}");
    let page = move || {
        (proptest::option::of(any::<i64>()), id(), id()).prop_map(|(limit, before, after)| Page {
            limit,
            before,
            after,
        })
    };
    prop_oneof![
        (room(), id()).prop_map(|(room, since)| Request::Join { room, since }),
        room().prop_map(|room| Request::Leave { room }),
        (room(), any::<bool>()).prop_map(|(room, private)| Request::CreateRoom {
            room,
            visibility: if private {
                Visibility::Private
            } else {
                Visibility::Public
            }
        }),
        Just(Request::Rooms),
        (room(), 0..i64::MAX).prop_map(|(room, up_to)| Request::Read { room, up_to }),
        (room(), any::<String>(), client_id()).prop_map(|(room, content, client_id)| {
            Request::Message {
                room,
                content,
                client_id,
            }
        }),
        (1..=MAX_USER_ID, any::<String>(), client_id()).prop_map(|(to, content, client_id)| {
            Request::Dm {
                to,
                content,
                client_id,
            }
        }),
        (room(), page()).prop_map(|(room, page)| Request::RoomHistory { room, page }),
        (1..=MAX_USER_ID, page()).prop_map(|(with, page)| Request::DmHistory { with, page }),
        (0..i64::MAX).prop_map(|since| Request::DmSync { since }),
        room().prop_map(|room| Request::Typing { room }),
        "[A-Za-z0-9._-]{0,40}".prop_map(|token| Request::Refresh { token }),
        (0..i64::MAX, any::<String>(), client_id()).prop_map(|(id, content, client_id)| {
            Request::Edit {
                id,
                content,
                client_id,
            }
        }),
        (0..i64::MAX, client_id()).prop_map(|(id, client_id)| Request::Delete { id, client_id }),
        (room(), 1..=MAX_USER_ID, 0..3usize).prop_map(|(room, user, r)| Request::SetRole {
            room,
            user,
            role: [Role::Owner, Role::Moderator, Role::Member][r]
        }),
        (room(), 1..=MAX_USER_ID).prop_map(|(room, user)| Request::Invite { room, user }),
        (room(), id(), proptest::option::of(any::<i64>()))
            .prop_map(|(room, after, limit)| Request::Members { room, after, limit }),
        (
            room(),
            1..=MAX_USER_ID,
            proptest::option::of(1..=MAX_MUTE_SECONDS)
        )
            .prop_map(|(room, user, seconds)| Request::Mute {
                room,
                user,
                seconds
            }),
        (room(), 1..=MAX_USER_ID).prop_map(|(room, user)| Request::Unmute { room, user }),
        (
            room(),
            1..=MAX_USER_ID,
            proptest::option::of("[a-z é]{0,12}")
        )
            .prop_map(|(room, user, reason)| Request::Kick { room, user, reason }),
        (
            room(),
            1..=MAX_USER_ID,
            proptest::option::of(1..=MAX_MUTE_SECONDS),
            proptest::option::of("[a-z é]{0,12}")
        )
            .prop_map(|(room, user, seconds, reason)| Request::Ban {
                room,
                user,
                seconds,
                reason
            }),
        (room(), 1..=MAX_USER_ID).prop_map(|(room, user)| Request::Unban { room, user }),
    ]
}

fn to_json(r: &Request) -> serde_json::Value {
    use serde_json::json;
    match r {
        Request::Join { room, since } => json!({"type": "join", "room": room, "since": since}),
        Request::Leave { room } => json!({"type": "leave", "room": room}),
        Request::CreateRoom { room, visibility } => {
            json!({"type": "create_room", "room": room, "visibility": visibility.as_str()})
        }
        Request::Rooms => json!({"type": "rooms"}),
        Request::Read { room, up_to } => json!({"type": "read", "room": room, "up_to": up_to}),
        Request::Message {
            room,
            content,
            client_id,
        } => {
            json!({"type": "message", "room": room, "content": content, "client_id": client_id})
        }
        Request::Dm {
            to,
            content,
            client_id,
        } => json!({"type": "dm", "to": to, "content": content, "client_id": client_id}),
        Request::RoomHistory { room, page } => json!({
            "type": "room_history", "room": room, "limit": page.limit,
            "before": page.before, "after": page.after
        }),
        Request::DmHistory { with, page } => json!({
            "type": "dm_history", "with": with, "limit": page.limit,
            "before": page.before, "after": page.after
        }),
        Request::DmSync { since } => json!({"type": "dm_sync", "since": since}),
        Request::Typing { room } => json!({"type": "typing", "room": room}),
        Request::Refresh { token } => json!({"type": "refresh", "token": token}),
        Request::Edit {
            id,
            content,
            client_id,
        } => json!({"type": "edit", "id": id, "content": content, "client_id": client_id}),
        Request::Delete { id, client_id } => {
            json!({"type": "delete", "id": id, "client_id": client_id})
        }
        Request::SetRole { room, user, role } => {
            json!({"type": "set_role", "room": room, "user": user, "role": role.as_str()})
        }
        Request::Invite { room, user } => json!({"type": "invite", "room": room, "user": user}),
        Request::Members { room, after, limit } => {
            json!({"type": "members", "room": room, "after": after, "limit": limit})
        }
        Request::Mute {
            room,
            user,
            seconds,
        } => json!({"type": "mute", "room": room, "user": user, "seconds": seconds}),
        Request::Unmute { room, user } => json!({"type": "unmute", "room": room, "user": user}),
        Request::Kick { room, user, reason } => {
            json!({"type": "kick", "room": room, "user": user, "reason": reason})
        }
        Request::Ban {
            room,
            user,
            seconds,
            reason,
        } => json!({
            "type": "ban", "room": room, "user": user, "seconds": seconds, "reason": reason
        }),
        Request::Unban { room, user } => json!({"type": "unban", "room": room, "user": user}),
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        let _ = decode(&s);
    }

    #[test]
    fn json_like_text_never_panics(s in r#"\{("[a-z_]{1,8}":("[^"]{0,8}"|-?[0-9]{1,20}|null|true|\[\]|\{\}),?){0,6}\}"#) {
        let _ = decode(&s);
    }

    #[test]
    fn valid_requests_round_trip(r in request()) {
        let text = to_json(&r).to_string();
        prop_assert_eq!(decode(&text), Ok(r));
    }
}
