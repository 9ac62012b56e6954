//! What travels over NATS: a small binary header and the frame exactly as
//! the origin node encoded it (no JSON is re-encoded per node).
//!
//! ```text
//! room message: 1 | id i64 | prev i64 | name len u16 | name | frame
//! DM:           2 | id i64 | from i64 | to i64 | prev_from i64 | prev_to i64 | frame
//! room notice:  3 | except i64 | name len u16 | name | frame
//! membership:   4 | user i64 | change u8 | name len u16 | name [| until i64]
//!               (change: 0 left, 1 joined, 2 muted until unmuted,
//!               3 muted until `until` (Unix microseconds), 4 unmuted)
//! probe:        5 | user i64   (a request: "is this user connected on your node?")
//! online query: 6 | name len u16 | name   (a request: "which members of this room
//!               are online on your node?"; each answer is a list of i64 user ids)
//! connections:  8 | user i64   (issue 15, a request: "how many connections does
//!               this user have on your node?"; answered with an i64 when > 0)
//! disconnect:   9 | user i64   (issue 15: "close this user's connections on your
//!               node with 4003"; no answer)
//! ```
//! Integers are big-endian. The sender's own copy (`ref`) never travels:
//! only the origin node has the sending connection.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Committed, Membership, RemoteMembership, RemoteNotice};
use crate::protocol::Frame;
use crate::rooms::{Mute, MuteChange};
use crate::router::{Sent, ShardEvent};

const ROOM: u8 = 1;
const DM: u8 = 2;
const NOTICE: u8 = 3;
const MEMBERSHIP: u8 = 4;
const PROBE: u8 = 5;
const ONLINE: u8 = 6;
/// Issue 14: a room event that kicks or bans a user: [`ROOM`]'s layout
/// with the user's id after `prev`.
const ROOM_KICK: u8 = 7;
/// Issue 15: a question about a user's connections on a node.
const CONNECTIONS: u8 = 8;
/// Issue 15: an operator's order to close a user's connections.
const DISCONNECT: u8 = 9;

/// Why a NATS payload was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its header says.
    #[error("truncated cluster message")]
    Truncated,
    /// Unknown kind byte.
    #[error("unknown cluster message kind {0}")]
    Kind(u8),
    /// A room name or frame that is not UTF-8.
    #[error("cluster message is not UTF-8")]
    Utf8,
}

/// A decoded cluster message.
#[derive(Debug)]
pub enum Remote {
    /// A committed message with its predecessors (no own copy).
    Message(Committed),
    /// An ephemeral room notice.
    Notice(RemoteNotice),
    /// A user joined or left a room on another node.
    Membership(RemoteMembership),
    /// Another node asks whether this user has a connection here.
    Probe(crate::protocol::UserId),
    /// Another node asks which members of this room are online here.
    OnlineQuery(Arc<str>),
    /// Issue 15: another node asks how many connections this user has here.
    Connections(crate::protocol::UserId),
    /// Issue 15: another node's server API disconnected this user.
    Disconnect(crate::protocol::UserId),
}

/// Encodes a committed message; `None` for events that never travel.
pub fn encode_committed(c: &Committed) -> Option<Bytes> {
    match &c.event {
        ShardEvent::Room {
            room,
            id,
            frame,
            kick,
            ..
        } => {
            let mut b = BytesMut::with_capacity(27 + room.len() + frame.len());
            b.put_u8(if kick.is_some() { ROOM_KICK } else { ROOM });
            b.put_i64(*id);
            b.put_i64(c.prev[0]);
            if let Some(user) = kick {
                b.put_i64(*user);
            }
            put_name(&mut b, room);
            b.put_slice(frame.as_bytes());
            Some(b.freeze())
        }
        ShardEvent::Users {
            users, id, frame, ..
        } => {
            let mut b = BytesMut::with_capacity(41 + frame.len());
            b.put_u8(DM);
            b.put_i64(*id);
            b.put_i64(users[0]);
            b.put_i64(users[1]);
            b.put_i64(c.prev[0]);
            b.put_i64(c.prev[1]);
            b.put_slice(frame.as_bytes());
            Some(b.freeze())
        }
        _ => None,
    }
}

/// Encodes a room notice.
pub fn encode_notice(n: &RemoteNotice) -> Bytes {
    let mut b = BytesMut::with_capacity(11 + n.room.len() + n.frame.len());
    b.put_u8(NOTICE);
    b.put_i64(n.except);
    put_name(&mut b, &n.room);
    b.put_slice(n.frame.as_bytes());
    b.freeze()
}

/// Encodes a membership change.
pub fn encode_membership(m: &RemoteMembership) -> Bytes {
    let mut b = BytesMut::with_capacity(20 + m.room.len());
    b.put_u8(MEMBERSHIP);
    b.put_i64(m.user);
    let (change, until) = match m.change {
        Membership::Left => (0, None),
        Membership::Joined => (1, None),
        Membership::Mute(MuteChange::Muted(Mute { until: None })) => (2, None),
        Membership::Mute(MuteChange::Muted(Mute { until: Some(t) })) => {
            (3, Some(t.timestamp_micros()))
        }
        Membership::Mute(MuteChange::Unmuted | MuteChange::Unchanged) => (4, None),
    };
    b.put_u8(change);
    put_name(&mut b, &m.room);
    if let Some(until) = until {
        b.put_i64(until);
    }
    b.freeze()
}

/// Encodes a presence probe for `user`.
pub fn encode_probe(user: crate::protocol::UserId) -> Bytes {
    let mut b = BytesMut::with_capacity(9);
    b.put_u8(PROBE);
    b.put_i64(user);
    b.freeze()
}

/// Issue 15: encodes a question about `user`'s connections on other nodes.
pub fn encode_connections_query(user: crate::protocol::UserId) -> Bytes {
    let mut b = BytesMut::with_capacity(9);
    b.put_u8(CONNECTIONS);
    b.put_i64(user);
    b.freeze()
}

/// Issue 15: encodes an order to close `user`'s connections.
pub fn encode_disconnect(user: crate::protocol::UserId) -> Bytes {
    let mut b = BytesMut::with_capacity(9);
    b.put_u8(DISCONNECT);
    b.put_i64(user);
    b.freeze()
}

/// Issue 15: encodes an answer to a connections query.
pub fn encode_count(n: u64) -> Bytes {
    Bytes::copy_from_slice(&n.to_be_bytes())
}

/// Issue 15: decodes an answer to a connections query.
pub fn decode_count(b: &[u8]) -> Result<u64, WireError> {
    let a: [u8; 8] = b.try_into().map_err(|_| WireError::Truncated)?;
    Ok(u64::from_be_bytes(a))
}

/// Encodes an answer to a presence probe: since when the user has been
/// online on the answering node (Unix microseconds), and that node's id.
pub fn encode_probe_answer(since: i64, node: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + node.len());
    b.put_i64(since);
    b.put_slice(node.as_bytes());
    b.freeze()
}

/// Decodes an answer to a presence probe.
pub fn decode_probe_answer(b: &[u8]) -> Result<(i64, String), WireError> {
    if b.len() < 8 {
        return Err(WireError::Truncated);
    }
    let since = i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
    let node = std::str::from_utf8(&b[8..]).map_err(|_| WireError::Utf8)?;
    Ok((since, node.to_owned()))
}

/// Encodes a query for a room's online members on other nodes.
pub fn encode_online_query(room: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(3 + room.len());
    b.put_u8(ONLINE);
    put_name(&mut b, room);
    b.freeze()
}

/// Encodes an answer to an online query: the user ids, big-endian.
pub fn encode_user_list(users: &[crate::protocol::UserId]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 * users.len());
    for u in users {
        b.put_i64(*u);
    }
    b.freeze()
}

/// Decodes an answer to an online query.
pub fn decode_user_list(b: &[u8]) -> Result<Vec<crate::protocol::UserId>, WireError> {
    if !b.len().is_multiple_of(8) {
        return Err(WireError::Truncated);
    }
    Ok(b.chunks_exact(8)
        .map(|c| i64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

fn put_name(b: &mut BytesMut, name: &str) {
    // Room names are at most 64 bytes; longer ones are cut (never sent).
    let len = name.len().min(u16::MAX as usize);
    b.put_u16(len as u16);
    b.put_slice(&name.as_bytes()[..len]);
}

/// Decodes a payload published by [`encode_committed`] or [`encode_notice`].
pub fn decode(payload: Bytes) -> Result<Remote, WireError> {
    let mut r = Reader { b: payload, at: 0 };
    match r.u8()? {
        kind @ (ROOM | ROOM_KICK) => {
            let id = r.i64()?;
            let prev = r.i64()?;
            let kick = if kind == ROOM_KICK {
                Some(r.i64()?)
            } else {
                None
            };
            let room = r.name()?;
            let frame = r.rest()?;
            Ok(Remote::Message(Committed {
                event: ShardEvent::Room {
                    room,
                    id,
                    frame,
                    own: None,
                    sent: Sent::remote(),
                    kick,
                },
                prev: [prev, prev],
            }))
        }
        DM => {
            let id = r.i64()?;
            let from = r.i64()?;
            let to = r.i64()?;
            let prev = [r.i64()?, r.i64()?];
            let frame = r.rest()?;
            Ok(Remote::Message(Committed {
                event: ShardEvent::Users {
                    users: [from, to],
                    id,
                    frame,
                    own: None,
                    sent: Sent::remote(),
                },
                prev,
            }))
        }
        NOTICE => {
            let except = r.i64()?;
            let room = r.name()?;
            let frame = r.rest()?;
            Ok(Remote::Notice(RemoteNotice {
                room,
                except,
                frame,
            }))
        }
        MEMBERSHIP => {
            let user = r.i64()?;
            let change = r.u8()?;
            let room = r.name()?;
            let change = match change {
                0 => Membership::Left,
                1 => Membership::Joined,
                2 => Membership::Mute(MuteChange::Muted(Mute { until: None })),
                3 => {
                    let until = chrono::DateTime::from_timestamp_micros(r.i64()?);
                    Membership::Mute(MuteChange::Muted(Mute { until }))
                }
                _ => Membership::Mute(MuteChange::Unmuted),
            };
            Ok(Remote::Membership(RemoteMembership { user, room, change }))
        }
        PROBE => Ok(Remote::Probe(r.i64()?)),
        ONLINE => Ok(Remote::OnlineQuery(r.name()?)),
        CONNECTIONS => Ok(Remote::Connections(r.i64()?)),
        DISCONNECT => Ok(Remote::Disconnect(r.i64()?)),
        k => Err(WireError::Kind(k)),
    }
}

struct Reader {
    b: Bytes,
    at: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.b.get(self.at..end).ok_or(WireError::Truncated)?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn i64(&mut self) -> Result<i64, WireError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(i64::from_be_bytes(a))
    }
    fn name(&mut self) -> Result<Arc<str>, WireError> {
        let s = self.take(2)?;
        let len = usize::from(u16::from_be_bytes([s[0], s[1]]));
        let s = self.take(len)?;
        std::str::from_utf8(s)
            .map(Arc::from)
            .map_err(|_| WireError::Utf8)
    }
    fn rest(&mut self) -> Result<Frame, WireError> {
        let rest = self.b.slice(self.at..);
        Frame::try_from(rest).map_err(|_| WireError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_questions_and_orders_round_trip() {
        assert!(matches!(
            decode(encode_connections_query(7)),
            Ok(Remote::Connections(7))
        ));
        assert!(matches!(
            decode(encode_disconnect(9)),
            Ok(Remote::Disconnect(9))
        ));
        assert_eq!(decode_count(&encode_count(3)), Ok(3));
        assert_eq!(decode_count(&[1, 2]), Err(WireError::Truncated));
    }

    #[test]
    fn room_messages_dms_and_notices_round_trip() {
        let c = Committed {
            event: ShardEvent::Room {
                room: Arc::from("général"),
                id: 42,
                frame: Frame::from("{\"type\":\"message\"}"),
                own: None,
                sent: Sent::remote(),
                kick: None,
            },
            prev: [40, 40],
        };
        let Remote::Message(d) = decode(encode_committed(&c).unwrap()).unwrap() else {
            panic!("not a message");
        };
        match d.event {
            ShardEvent::Room {
                room, id, frame, ..
            } => {
                assert_eq!(
                    (&*room, id, frame.as_str()),
                    ("général", 42, "{\"type\":\"message\"}")
                );
            }
            e => panic!("{e:?}"),
        }
        let kick = Committed {
            event: ShardEvent::Room {
                room: Arc::from("r"),
                id: 43,
                frame: Frame::from("{\"type\":\"member\"}"),
                own: None,
                sent: Sent::remote(),
                kick: Some(7),
            },
            prev: [42, 42],
        };
        let Remote::Message(k) = decode(encode_committed(&kick).unwrap()).unwrap() else {
            panic!("not a message");
        };
        match k.event {
            ShardEvent::Room { room, id, kick, .. } => {
                assert_eq!((&*room, id, kick, k.prev), ("r", 43, Some(7), [42, 42]));
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(d.prev, [40, 40]);

        let c = Committed {
            event: ShardEvent::Users {
                users: [1, 2],
                id: 9,
                frame: Frame::from("dm"),
                own: None,
                sent: Sent::remote(),
            },
            prev: [3, 5],
        };
        let Remote::Message(d) = decode(encode_committed(&c).unwrap()).unwrap() else {
            panic!("not a message");
        };
        assert!(matches!(
            d.event,
            ShardEvent::Users {
                users: [1, 2],
                id: 9,
                ..
            }
        ));
        assert_eq!(d.prev, [3, 5]);

        let n = RemoteNotice {
            room: Arc::from("r"),
            except: 7,
            frame: Frame::from("typing"),
        };
        let Remote::Notice(d) = decode(encode_notice(&n)).unwrap() else {
            panic!("not a notice");
        };
        assert_eq!((&*d.room, d.except, d.frame.as_str()), ("r", 7, "typing"));
    }

    #[test]
    fn membership_changes_round_trip() {
        let until = chrono::DateTime::from_timestamp_micros(1_800_000_000_123_456);
        for change in [
            Membership::Left,
            Membership::Joined,
            Membership::Mute(MuteChange::Muted(Mute { until: None })),
            Membership::Mute(MuteChange::Muted(Mute { until })),
            Membership::Mute(MuteChange::Unmuted),
        ] {
            let m = RemoteMembership {
                user: 5,
                room: Arc::from("r"),
                change,
            };
            let Remote::Membership(d) = decode(encode_membership(&m)).unwrap() else {
                panic!("not a membership");
            };
            assert_eq!(d, m);
        }
        assert!(matches!(
            decode(encode_probe(77)).unwrap(),
            Remote::Probe(77)
        ));
        assert!(matches!(
            decode(encode_online_query("général")).unwrap(),
            Remote::OnlineQuery(r) if &*r == "général"
        ));
        assert_eq!(
            decode_user_list(&encode_user_list(&[3, -1, i64::MAX])).unwrap(),
            vec![3, -1, i64::MAX]
        );
        assert_eq!(decode_user_list(&[0; 7]), Err(WireError::Truncated));
        assert_eq!(
            decode_probe_answer(&encode_probe_answer(-5, "node-b")).unwrap(),
            (-5, "node-b".to_string())
        );
        assert_eq!(decode_probe_answer(&[1; 4]), Err(WireError::Truncated));
        assert!(matches!(
            decode(encode_probe(78)).unwrap(),
            Remote::Probe(78)
        ));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(decode(Bytes::new()).unwrap_err(), WireError::Truncated);
        assert_eq!(
            decode(Bytes::from_static(&[99])).unwrap_err(),
            WireError::Kind(99)
        );
        assert_eq!(
            decode(Bytes::from_static(&[9, 0])).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            decode(Bytes::from_static(&[1, 0, 0])).unwrap_err(),
            WireError::Truncated
        );
        let mut b = vec![3u8];
        b.extend_from_slice(&7i64.to_be_bytes());
        b.extend_from_slice(&200u16.to_be_bytes());
        assert_eq!(decode(Bytes::from(b)).unwrap_err(), WireError::Truncated);
    }
}
