//! Server → client frames of room access (issue 14): `member` events,
//! the acks of `set_role`, `invite`, `mute` and `unmute`, and `members`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::frame::{rfc3339_opt, to_frame};
use super::{Frame, Ref, UserId};

/// A change of membership or standing in a room, for the room's members
/// and the affected user's connections.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MemberEvent<'a> {
    /// The room.
    pub room: &'a str,
    /// The affected user.
    pub user: UserId,
    /// `invited`, `joined`, `left`, `kicked`, `banned`, `unbanned`,
    /// `muted`, `unmuted` or `role`.
    pub action: &'a str,
    /// Who did it (`null`: an operator; the user itself for `joined`/`left`).
    pub by: Option<UserId>,
    /// The new role (`role` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'a str>,
    /// When a mute or ban ends (`muted`, `banned` with `seconds` only).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt"
    )]
    pub until: Option<DateTime<Utc>>,
    /// Why (`kicked`, `banned` with a `reason` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// Encodes `{"type":"member","data":{"room","user","action","by",..}}`.
pub fn encode_member(e: &MemberEvent<'_>) -> Frame {
    to_frame("member", None, e)
}

/// Encodes `{"type":"<kind>","data":{"room","user"}}`: the ack of
/// `set_role`, `invite`, `mute` (with `until` when it ends) or `unmute`.
pub fn encode_access_ack(
    kind: &str,
    room: &str,
    user: UserId,
    until: Option<DateTime<Utc>>,
    reference: Option<&Ref>,
) -> Frame {
    #[derive(Serialize)]
    struct Data<'a> {
        room: &'a str,
        user: UserId,
        #[serde(
            skip_serializing_if = "Option::is_none",
            serialize_with = "rfc3339_opt"
        )]
        until: Option<DateTime<Utc>>,
    }
    to_frame(kind, reference, Data { room, user, until })
}

/// One entry of a `members` reply.
#[derive(Debug, Clone, Serialize)]
pub struct MemberInfo {
    /// User id.
    pub user: UserId,
    /// Username.
    pub username: String,
    /// `owner`, `moderator` or `member`.
    pub role: &'static str,
    /// True while the member is muted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub muted: bool,
    /// When the mute ends (absent: not muted, or until unmuted).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt"
    )]
    pub muted_until: Option<DateTime<Utc>>,
}

/// Encodes `{"type":"members","data":{"room","members":[..],"more"}}`.
pub fn encode_members(
    room: &str,
    members: &[MemberInfo],
    more: bool,
    reference: Option<&Ref>,
) -> Frame {
    #[derive(Serialize)]
    struct Data<'a> {
        room: &'a str,
        members: &'a [MemberInfo],
        more: bool,
    }
    to_frame(
        "members",
        reference,
        Data {
            room,
            members,
            more,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_frames_carry_only_what_applies() {
        let e = MemberEvent {
            room: "r",
            user: 2,
            action: "joined",
            reason: None,
            by: Some(2),
            role: None,
            until: None,
        };
        assert_eq!(
            encode_member(&e).as_str(),
            r#"{"type":"member","data":{"room":"r","user":2,"action":"joined","by":2}}"#
        );
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.000006Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = MemberEvent {
            action: "muted",
            by: None,
            until: Some(t),
            ..e
        };
        assert_eq!(
            encode_member(&e).as_str(),
            r#"{"type":"member","data":{"room":"r","user":2,"action":"muted","by":null,"until":"2026-01-02T03:04:05.000006Z"}}"#
        );
        let ack = encode_access_ack("invite_ack", "r", 2, None, Some(&Ref::Int(1)));
        assert_eq!(
            ack.as_str(),
            r#"{"type":"invite_ack","ref":1,"data":{"room":"r","user":2}}"#
        );
        let m = MemberInfo {
            user: 2,
            username: "bo".into(),
            role: "owner",
            muted: false,
            muted_until: None,
        };
        assert_eq!(
            encode_members("r", &[m], false, None).as_str(),
            r#"{"type":"members","data":{"room":"r","members":[{"user":2,"username":"bo","role":"owner"}],"more":false}}"#
        );
    }
}
