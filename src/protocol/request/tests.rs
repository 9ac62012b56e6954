//! Decoder unit tests: each request type, its errors, and the `ref`.

use super::*;

#[test]
fn decodes_edits_and_deletes() {
    assert_eq!(
        decode(r#"{"type":"edit","id":5,"content":"x","client_id":"e1"}"#),
        Ok(Request::Edit {
            id: 5,
            content: "x".into(),
            client_id: Some("e1".into())
        })
    );
    assert_eq!(
        decode(r#"{"type":"delete","id":5}"#),
        Ok(Request::Delete {
            id: 5,
            client_id: None
        })
    );
    assert_eq!(
        decode(r#"{"type":"delete"}"#),
        Err(DecodeError::MissingField("id"))
    );
    assert_eq!(
        decode(r#"{"type":"edit","id":-1,"content":"x"}"#),
        Err(DecodeError::InvalidId("id"))
    );
    assert_eq!(
        decode(r#"{"type":"edit","id":1}"#),
        Err(DecodeError::MissingField("content"))
    );
}

#[test]
fn decodes_each_request_type() {
    assert_eq!(
        decode(r#"{"type":"join","room":"general"}"#),
        Ok(Request::Join {
            room: "general".into(),
            since: None
        })
    );
    assert_eq!(
        decode(r#"{"type":"message","room":"r","content":"hi \"you\""}"#),
        Ok(Request::Message {
            room: "r".into(),
            content: "hi \"you\"".into(),
            client_id: None
        })
    );
    assert_eq!(
        decode(r#"{"type":"dm","to":7,"content":"x","extra":true}"#),
        Ok(Request::Dm {
            to: 7,
            content: "x".into(),
            client_id: None
        })
    );
    assert_eq!(
        decode(r#"{"type":"room_history","room":"r"}"#),
        Ok(Request::RoomHistory {
            room: "r".into(),
            page: Page::default()
        })
    );
    assert_eq!(
        decode(r#"{"type":"dm_history","with":3,"limit":10}"#),
        Ok(Request::DmHistory {
            with: 3,
            page: Page {
                limit: Some(10),
                ..Page::default()
            }
        })
    );
}

#[test]
fn decodes_the_delivery_extensions() {
    assert_eq!(
        decode(r#"{"type":"join","room":"g","since":12}"#),
        Ok(Request::Join {
            room: "g".into(),
            since: Some(12)
        })
    );
    assert_eq!(
        decode(r#"{"type":"message","room":"g","content":"x","client_id":"c-1"}"#),
        Ok(Request::Message {
            room: "g".into(),
            content: "x".into(),
            client_id: Some("c-1".into())
        })
    );
    assert_eq!(
        decode(r#"{"type":"room_history","room":"g","before":9,"after":2,"limit":5}"#),
        Ok(Request::RoomHistory {
            room: "g".into(),
            page: Page {
                limit: Some(5),
                before: Some(9),
                after: Some(2)
            }
        })
    );
    assert_eq!(decode(r#"{"type":"rooms"}"#), Ok(Request::Rooms));
    assert_eq!(
        decode(r#"{"type":"leave","room":"g"}"#),
        Ok(Request::Leave { room: "g".into() })
    );
    assert_eq!(
        decode(r#"{"type":"create_room","room":"g"}"#),
        Ok(Request::CreateRoom {
            room: "g".into(),
            visibility: Visibility::Public
        })
    );
    assert_eq!(
        decode(r#"{"type":"read","room":"g","up_to":4}"#),
        Ok(Request::Read {
            room: "g".into(),
            up_to: 4
        })
    );
    assert_eq!(
        decode(r#"{"type":"dm_sync","since":0}"#),
        Ok(Request::DmSync { since: 0 })
    );
    assert_eq!(
        decode(r#"{"type":"dm_sync"}"#),
        Err(DecodeError::MissingField("since"))
    );
    assert_eq!(
        decode(r#"{"type":"join","room":"g","since":-1}"#),
        Err(DecodeError::InvalidId("since"))
    );
    assert_eq!(
        decode(r#"{"type":"read","room":"g"}"#),
        Err(DecodeError::MissingField("up_to"))
    );
    let long = format!(
        r#"{{"type":"dm","to":1,"content":"x","client_id":"{}"}}"#,
        "é".repeat(65)
    );
    assert_eq!(decode(&long), Err(DecodeError::InvalidClientId));
    let ok = format!(
        r#"{{"type":"dm","to":1,"content":"x","client_id":"{}"}}"#,
        "é".repeat(64)
    );
    assert!(decode(&ok).is_ok(), "64 characters (128 bytes) fit");
    assert_eq!(
        decode(r#"{"type":"dm","to":1,"content":"x","client_id":""}"#),
        Err(DecodeError::InvalidClientId)
    );
}

#[test]
fn decodes_the_room_access_requests() {
    assert_eq!(
        decode(r#"{"type":"create_room","room":"g","visibility":"private"}"#),
        Ok(Request::CreateRoom {
            room: "g".into(),
            visibility: Visibility::Private
        })
    );
    assert_eq!(
        decode(r#"{"type":"create_room","room":"g","visibility":"hidden"}"#),
        Err(DecodeError::InvalidVisibility)
    );
    assert_eq!(
        decode(r#"{"type":"set_role","room":"g","user":7,"role":"moderator"}"#),
        Ok(Request::SetRole {
            room: "g".into(),
            user: 7,
            role: Role::Moderator
        })
    );
    assert_eq!(
        decode(r#"{"type":"set_role","room":"g","user":7,"role":"admin"}"#),
        Err(DecodeError::InvalidRole)
    );
    assert_eq!(
        decode(r#"{"type":"set_role","room":"g","user":7}"#),
        Err(DecodeError::MissingField("role"))
    );
    assert_eq!(
        decode(r#"{"type":"invite","room":"g"}"#),
        Err(DecodeError::MissingField("user"))
    );
    assert_eq!(
        decode(r#"{"type":"invite","room":"g","user":0}"#),
        Err(DecodeError::InvalidUserId("user"))
    );
    assert_eq!(
        decode(r#"{"type":"members","room":"g","after":3,"limit":2}"#),
        Ok(Request::Members {
            room: "g".into(),
            after: Some(3),
            limit: Some(2)
        })
    );
    assert_eq!(
        decode(r#"{"type":"mute","room":"g","user":2,"seconds":60}"#),
        Ok(Request::Mute {
            room: "g".into(),
            user: 2,
            seconds: Some(60)
        })
    );
    for bad in ["0", "-5", "315360001"] {
        assert_eq!(
            decode(&format!(
                r#"{{"type":"mute","room":"g","user":2,"seconds":{bad}}}"#
            )),
            Err(DecodeError::InvalidSeconds),
            "{bad}"
        );
    }
    assert_eq!(
        decode(r#"{"type":"unmute","room":"g","user":2}"#),
        Ok(Request::Unmute {
            room: "g".into(),
            user: 2
        })
    );
}

#[test]
fn refs_are_read_before_the_request_and_kept_on_errors() {
    let (r, req) = decode_with_ref(r#"{"type":"rooms","ref":"a1"}"#);
    assert_eq!(r, Some(Ref::Text("a1".into())));
    assert_eq!(req, Ok(Request::Rooms));
    let (r, req) = decode_with_ref(r#"{"type":"nope","ref":7}"#);
    assert_eq!(r, Some(Ref::Int(7)));
    assert!(matches!(req, Err(DecodeError::UnknownType(_))));
    for bad in [r#"1.5"#, r#"true"#, r#"{"a":1}"#, r#"[1]"#] {
        let (r, req) = decode_with_ref(&format!(r#"{{"type":"rooms","ref":{bad}}}"#));
        assert_eq!((r, req), (None, Err(DecodeError::InvalidRef)), "{bad}");
    }
    let long = format!(r#"{{"type":"rooms","ref":"{}"}}"#, "x".repeat(129));
    assert_eq!(decode_with_ref(&long).1, Err(DecodeError::InvalidRef));
    let (r, _) = decode_with_ref(r#"{"type":"rooms","ref":null}"#);
    assert_eq!(r, None, "null is no ref");
}

#[test]
fn a_ref_survives_an_ill_typed_field() {
    for text in [
        r#"{"type":"dm_history","with":"1","ref":"R"}"#,
        r#"{"ref":"R","type":"dm","to":[],"content":"x"}"#,
        r#"{"type":"join","room":{},"ref":"R","since":"x"}"#,
        r#"{"type":5,"ref":"R"}"#,
    ] {
        let (r, req) = decode_with_ref(text);
        assert_eq!(r, Some(Ref::Text("R".into())), "{text}");
        assert!(matches!(req, Err(DecodeError::Malformed(_))), "{text}");
    }
    let (r, _) = decode_with_ref(r#"{"type":"dm_history","with":"1","ref":9}"#);
    assert_eq!(r, Some(Ref::Int(9)));
    // An unusable ref stays unusable; broken JSON has none.
    let (r, _) = decode_with_ref(r#"{"type":"dm_history","with":"1","ref":1.5}"#);
    assert_eq!(r, None);
    let (r, _) = decode_with_ref(r#"{"type":"rooms","ref":"R""#);
    assert_eq!(r, None);
}

#[test]
fn only_objects_are_requests() {
    for text in [
        r#"["message",null,"general","hi"]"#,
        " [\"rooms\"]",
        r#""rooms""#,
        "5",
        "-1",
        "null",
        "true",
        "false",
    ] {
        assert_eq!(decode(text), Err(DecodeError::NotAnObject), "{text}");
    }
    for text in ["", "   ", "nope", "{", "]"] {
        assert!(
            matches!(decode(text), Err(DecodeError::Malformed(_))),
            "{text:?}"
        );
    }
    assert_eq!(decode(" \r\n\t{\"type\":\"rooms\"}"), Ok(Request::Rooms));
}

#[test]
fn user_ids_in_requests_are_in_range() {
    let max = (1i64 << 53) - 1;
    for (text, field) in [
        (r#"{"type":"dm","to":0,"content":"x"}"#.to_owned(), "to"),
        (r#"{"type":"dm","to":-1,"content":"x"}"#.to_owned(), "to"),
        (
            format!(r#"{{"type":"dm","to":{},"content":"x"}}"#, max + 1),
            "to",
        ),
        (r#"{"type":"dm_history","with":0}"#.to_owned(), "with"),
        (
            format!(r#"{{"type":"dm_history","with":{}}}"#, i64::MAX),
            "with",
        ),
    ] {
        assert_eq!(
            decode(&text),
            Err(DecodeError::InvalidUserId(field)),
            "{text}"
        );
    }
    let text = format!(r#"{{"type":"dm","to":{max},"content":"x"}}"#);
    assert!(matches!(decode(&text), Ok(Request::Dm { to, .. }) if to == max));
    assert_eq!(
        DecodeError::InvalidUserId("to").to_string(),
        "`to` must be a user id (1 to 9007199254740991)"
    );
}

#[test]
fn rejects_bad_frames_with_clear_errors() {
    assert!(matches!(decode("not json"), Err(DecodeError::Malformed(_))));
    assert_eq!(decode("[1,2]"), Err(DecodeError::NotAnObject));
    assert_eq!(decode(r#"{"room":"r"}"#), Err(DecodeError::MissingType));
    assert_eq!(
        decode(r#"{"type":"shout"}"#),
        Err(DecodeError::UnknownType("shout".into()))
    );
    assert_eq!(
        decode(r#"{"type":"dm","content":"x"}"#),
        Err(DecodeError::MissingField("to"))
    );
    assert_eq!(
        decode(r#"{"type":"message","room":"r"}"#),
        Err(DecodeError::MissingField("content"))
    );
    let e = decode(r#"{"type":"dm","to":"seven","content":"x"}"#).unwrap_err();
    assert!(e.to_string().contains("invalid type"), "{e}");
    assert!(!e.to_string().contains("line"), "{e}");
    assert_eq!(
        decode(r#"{"type":"join","room":""}"#),
        Err(DecodeError::InvalidRoom)
    );
    assert_eq!(
        decode(r#"{"type":"join","room":"a\u0000b"}"#),
        Err(DecodeError::InvalidRoom)
    );
    let long = format!(r#"{{"type":"join","room":"{}"}}"#, "x".repeat(65));
    assert_eq!(decode(&long), Err(DecodeError::InvalidRoom));
}
