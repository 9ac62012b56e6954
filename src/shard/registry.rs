//! A shard's local indexes: its connections, the users they belong to, and
//! which local connections follow which room. Owned by one shard thread and
//! never shared, so no locks.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use super::outbox::{Cursor, Outbox, OutboxLimits};
use crate::cluster::{Interest, Stream};
use crate::protocol::{Frame, UserId};
use crate::rooms::effects::Audience;
use crate::rooms::{Mute, MuteChange};
use crate::router::{ConnId, OwnCopy};
use crate::store::Floors;

/// A local connection subscribed to a room, with what it was sent of it.
#[derive(Debug)]
struct Member {
    conn: Rc<Outbox>,
    cursor: Cursor,
}

impl Member {
    fn new(conn: Rc<Outbox>) -> Member {
        Member {
            conn,
            cursor: Cursor::default(),
        }
    }
}

/// One user with at least one connection on this shard.
#[derive(Debug, Default)]
struct LocalUser {
    conns: Vec<Rc<Outbox>>,
    rooms: HashSet<Arc<str>>,
    /// The user's mutes in rooms it follows (loaded at the handshake and
    /// the join, kept by member events). Usually none: then no map at all
    /// (8 bytes per user, not 48) and the per-message check is one branch.
    #[allow(clippy::box_collection)] // the point: 8 bytes inline, not 48
    mutes: Option<Box<HashMap<Arc<str>, Mute>>>,
}

impl LocalUser {
    /// Lifts the user's mute in `room`; the map goes with its last mute.
    fn unmute(&mut self, room: &str) {
        if let Some(mutes) = &mut self.mutes {
            mutes.remove(room);
            if mutes.is_empty() {
                self.mutes = None;
            }
        }
    }
}

/// The shard's connections, users and room subscriptions.
#[derive(Debug)]
pub struct Registry {
    conns: HashMap<ConnId, Rc<Outbox>>,
    users: HashMap<UserId, LocalUser>,
    /// Room -> local connections of its members.
    rooms: HashMap<Arc<str>, Vec<Member>>,
    limits: OutboxLimits,
    /// Cluster mode: told when a room gets its first / loses its last
    /// local member here, and a user its first / last local connection.
    interest: Option<Arc<Interest>>,
}

impl Registry {
    /// An empty registry whose outboxes are bounded by `limits`.
    pub fn new(limits: OutboxLimits) -> Registry {
        Registry {
            conns: HashMap::new(),
            users: HashMap::new(),
            rooms: HashMap::new(),
            limits,
            interest: None,
        }
    }

    /// Reports this shard's local streams to the node's cluster interest.
    pub fn with_interest(mut self, interest: Option<Arc<Interest>>) -> Registry {
        self.interest = interest;
        self
    }

    /// Adds a connection for delivery, subscribed to `rooms` (the user's
    /// stored memberships) and to whatever its user already follows here.
    pub fn register(&mut self, outbox: Rc<Outbox>, rooms: impl IntoIterator<Item = Arc<str>>) {
        self.register_with_floors(outbox, rooms, &Floors::default());
    }

    /// [`register`](Self::register), with the floors read for the cluster link.
    pub fn register_with_floors(
        &mut self,
        outbox: Rc<Outbox>,
        rooms: impl IntoIterator<Item = Arc<str>>,
        floors: &Floors,
    ) {
        if !self.users.contains_key(&outbox.user) {
            if let Some(interest) = &self.interest {
                interest.add(Stream::User(outbox.user), floors.user);
            }
        }
        let user = self.users.entry(outbox.user).or_default();
        for room in rooms {
            // Share the room's name with the room index where it exists.
            let room = match self.rooms.get_key_value(&*room) {
                Some((name, _)) => name.clone(),
                None => room,
            };
            user.rooms.insert(room);
        }
        user.conns.push(outbox.clone());
        for room in &user.rooms {
            let members = self.rooms.entry(room.clone()).or_insert_with(|| {
                if let Some(interest) = &self.interest {
                    interest.add(
                        Stream::Room(room.clone()),
                        floors.rooms.get(&**room).copied(),
                    );
                }
                Vec::new()
            });
            members.push(Member::new(outbox.clone()));
        }
        self.conns.insert(outbox.id, outbox);
    }

    /// Removes a connection from every index.
    pub fn unregister(&mut self, id: ConnId) {
        let Some(outbox) = self.conns.remove(&id) else {
            return;
        };
        let Some(user) = self.users.get_mut(&outbox.user) else {
            return;
        };
        user.conns.retain(|c| c.id != id);
        for room in &user.rooms {
            if let Some(members) = self.rooms.get_mut(room) {
                members.retain(|m| m.conn.id != id);
                if members.is_empty() {
                    self.rooms.remove(room);
                    if let Some(interest) = &self.interest {
                        interest.remove(&Stream::Room(room.clone()));
                    }
                }
            }
        }
        if user.conns.is_empty() {
            self.users.remove(&outbox.user);
            if let Some(interest) = &self.interest {
                interest.remove(&Stream::User(outbox.user));
            }
        }
    }

    /// Records that `user` belongs to `room` and subscribes its local
    /// connections. False when the user has no connection here or already
    /// followed the room.
    pub fn join(&mut self, user: UserId, room: Arc<str>) -> bool {
        self.join_with_floor(user, room, None)
    }

    /// [`join`](Self::join), with the room's last stored id read before
    /// the join (for the cluster link; `None`: not known).
    pub fn join_with_floor(&mut self, user: UserId, room: Arc<str>, floor: Option<i64>) -> bool {
        let Some(local) = self.users.get_mut(&user) else {
            return false;
        };
        if !local.rooms.insert(room.clone()) {
            return false;
        }
        let interest = &self.interest;
        self.rooms
            .entry(room.clone())
            .or_insert_with(|| {
                if let Some(interest) = interest {
                    interest.add(Stream::Room(room), floor);
                }
                Vec::new()
            })
            .extend(local.conns.iter().cloned().map(Member::new));
        true
    }

    /// Removes `user` from `room` and unsubscribes its local connections.
    /// False when the user had no connection here or did not follow the room.
    pub fn leave(&mut self, user: UserId, room: &str) -> bool {
        let Some(local) = self.users.get_mut(&user) else {
            return false;
        };
        if !local.rooms.remove(room) {
            return false;
        }
        local.unmute(room);
        if let Some(members) = self.rooms.get_mut(room) {
            members.retain(|m| m.conn.user != user);
            if members.is_empty() {
                if let Some((name, _)) = self.rooms.remove_entry(room) {
                    if let Some(interest) = &self.interest {
                        interest.remove(&Stream::Room(name));
                    }
                }
            }
        }
        true
    }

    /// What connection `conn` was sent of `room` (None: it does not follow it).
    pub fn room_cursor(&self, conn: ConnId, room: &str) -> Option<&Cursor> {
        self.rooms
            .get(room)?
            .iter()
            .find(|m| m.conn.id == conn)
            .map(|m| &m.cursor)
    }

    /// The client of connection `conn` has every message of `room` up to
    /// `since` (it sent `join` with `since`): see [`Cursor::seen_through`].
    /// Nothing when the connection does not follow the room (yet).
    pub fn room_seen_through(&self, conn: ConnId, room: &str, since: i64) {
        if let Some(cursor) = self.room_cursor(conn, room) {
            cursor.seen_through(since);
        }
    }

    /// What connection `conn` was sent of its user's DMs.
    pub fn dm_cursor(&self, conn: ConnId) -> Option<&Cursor> {
        self.conns.get(&conn).map(|c| &c.dms)
    }

    /// True when the (locally connected) user belongs to the room.
    pub fn is_member(&self, user: UserId, room: &str) -> bool {
        self.users
            .get(&user)
            .is_some_and(|u| u.rooms.contains(room))
    }

    /// The shared name of a room the user belongs to (saves an allocation per message).
    pub fn member_room(&self, user: UserId, room: &str) -> Option<Arc<str>> {
        self.users.get(&user)?.rooms.get(room).cloned()
    }

    /// The shared name of a room the user belongs to, with the user's mute
    /// there if it has one (checked by `message`: no query per message).
    pub fn member_room_muted(&self, user: UserId, room: &str) -> Option<(Arc<str>, Option<Mute>)> {
        let local = self.users.get(&user)?;
        let name = local.rooms.get(room)?.clone();
        let mute = local.mutes.as_ref().and_then(|m| m.get(room)).copied();
        Some((name, mute))
    }

    /// Sets or lifts `user`'s cached mute in `room` (a room it follows here;
    /// otherwise nothing: the join loads it).
    pub fn set_mute(&mut self, user: UserId, room: &str, change: MuteChange) {
        let Some(local) = self.users.get_mut(&user) else {
            return;
        };
        let Some(name) = local.rooms.get(room).cloned() else {
            return;
        };
        match change {
            MuteChange::Unchanged => {}
            MuteChange::Muted(m) => {
                local.mutes.get_or_insert_default().insert(name, m);
            }
            MuteChange::Unmuted => {
                local.unmute(room);
            }
        }
    }

    /// Applies a member event: updates `user`'s cached mute, then queues
    /// `frame` for the room's local member connections (unless `audience`
    /// is [`Audience::Own`], issue 16) and for `user`'s local connections
    /// (once each, also when `user` left the room), but connection `skip`
    /// (the requester, answered with its ack).
    pub fn member_event(
        &mut self,
        room: &str,
        user: UserId,
        mute: MuteChange,
        frame: Option<&Frame>,
        audience: Audience,
        skip: Option<ConnId>,
    ) {
        self.set_mute(user, room, mute);
        let Some(frame) = frame else {
            return;
        };
        let to_room = audience == Audience::Room;
        if let Some(members) = self.rooms.get(room).filter(|_| to_room) {
            for m in members.iter().filter(|m| Some(m.conn.id) != skip) {
                m.conn.push(frame.clone(), self.limits);
            }
        }
        if let Some(local) = self.users.get(&user) {
            // Room members got it above (when the room was told).
            if !to_room || !local.rooms.contains(room) {
                for conn in local.conns.iter().filter(|c| Some(c.id) != skip) {
                    conn.push(frame.clone(), self.limits);
                }
            }
        }
    }

    /// Issue 15: asks every local connection of `user` to close with
    /// 4003 (each unregisters itself as it ends). Returns how many.
    pub fn disconnect_user(&self, user: UserId) -> usize {
        let Some(local) = self.users.get(&user) else {
            return 0;
        };
        for conn in &local.conns {
            conn.disconnect();
        }
        local.conns.len()
    }

    /// How many rooms the user belongs to.
    pub fn room_count(&self, user: UserId) -> usize {
        self.users.get(&user).map_or(0, |u| u.rooms.len())
    }

    /// True when the user has a connection on this shard.
    pub fn has_user(&self, user: UserId) -> bool {
        self.users.contains_key(&user)
    }

    /// Queues message `id`'s `frame` for every local member connection of
    /// `room` (the sending connection gets `own`'s frame instead), skipping
    /// connections that already got it from a replay.
    pub fn deliver_room(&mut self, room: &str, id: i64, frame: &Frame, own: Option<&OwnCopy>) {
        let Some(members) = self.rooms.get(room) else {
            return;
        };
        for m in members {
            if !m.cursor.admit(id) {
                continue;
            }
            let frame = match own {
                Some(own) if own.origin.conn == m.conn.id => &own.frame,
                _ => frame,
            };
            // An outbox that overflows marks itself; its connection closes.
            m.conn.push(frame.clone(), self.limits);
        }
    }

    /// Queues DM `id`'s `frame` for every local connection of each listed
    /// user (once per connection, also when both users are the same; the
    /// sending connection gets `own`'s frame instead).
    pub fn deliver_users(
        &mut self,
        users: [UserId; 2],
        id: i64,
        frame: &Frame,
        own: Option<&OwnCopy>,
    ) {
        let distinct = if users[0] == users[1] {
            &users[..1]
        } else {
            &users[..]
        };
        for user in distinct {
            if let Some(local) = self.users.get(user) {
                for conn in &local.conns {
                    if !conn.dms.admit(id) {
                        continue;
                    }
                    let frame = match own {
                        Some(own) if own.origin.conn == conn.id => &own.frame,
                        _ => frame,
                    };
                    conn.push(frame.clone(), self.limits);
                }
            }
        }
    }

    /// Queues an ephemeral notice for the room's local member connections,
    /// except those of `except` (not counted in any cursor: it has no id).
    pub fn deliver_notice(&mut self, room: &str, except: UserId, frame: &Frame) {
        let Some(members) = self.rooms.get(room) else {
            return;
        };
        for m in members {
            if m.conn.user != except {
                m.conn.push(frame.clone(), self.limits);
            }
        }
    }

    /// The rooms `user` follows here (empty when the user has no local connection).
    pub fn rooms_of(&self, user: UserId) -> Vec<Arc<str>> {
        self.users
            .get(&user)
            .map(|u| u.rooms.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Queues `frame` for one connection, if it is still here.
    pub fn deliver_conn(&mut self, id: ConnId, frame: Frame) {
        if let Some(conn) = self.conns.get(&id) {
            conn.push(frame, self.limits);
        }
    }

    /// Every connection, for shutdown.
    pub fn connections(&self) -> impl Iterator<Item = &Rc<Outbox>> {
        self.conns.values()
    }

    /// Number of connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: OutboxLimits = OutboxLimits {
        frames: 16,
        bytes: 1 << 20,
        grace: std::time::Duration::from_secs(5),
    };

    fn conn(id: ConnId, user: UserId) -> Rc<Outbox> {
        Rc::new(Outbox::new(id, user))
    }

    #[test]
    fn room_delivery_reaches_members_only() {
        let mut r = Registry::new(LIMITS);
        let (a1, a2, b, c) = (conn(1, 10), conn(2, 10), conn(3, 20), conn(4, 30));
        r.register(a1.clone(), [Arc::from("general")]);
        r.register(a2.clone(), []);
        r.register(b.clone(), []);
        r.register(c.clone(), []);
        assert!(r.is_member(10, "general"), "stored membership");
        assert!(r.join(20, "general".into()));
        assert!(!r.join(20, "general".into()), "idempotent");
        r.deliver_room("general", 1, &Frame::from("m1"), None);
        assert_eq!((a1.len(), a2.len(), b.len(), c.len()), (1, 1, 1, 0));
        r.deliver_users([30, 10], 2, &Frame::from("dm"), None);
        assert_eq!((a1.len(), a2.len(), b.len(), c.len()), (2, 2, 1, 1));
        r.deliver_users([30, 30], 3, &Frame::from("self"), None);
        assert_eq!(c.len(), 2, "a DM to oneself arrives once per connection");
        let own = OwnCopy {
            origin: crate::router::Origin { shard: 0, conn: 3 },
            frame: Frame::from("mine"),
        };
        r.deliver_room("general", 4, &Frame::from("m4"), Some(&own));
        assert_eq!(b.take().back().unwrap(), &Frame::from("mine"));
        assert_eq!(a1.take().back().unwrap(), &Frame::from("m4"));
        assert!(r.leave(20, "general"));
        assert!(!r.is_member(20, "general"));
        r.deliver_room("general", 5, &Frame::from("m5"), None);
        assert!(b.is_empty(), "left: no more room messages");
        assert_eq!(a2.len(), 4);
    }

    #[test]
    fn first_and_last_local_members_are_reported_to_the_cluster() {
        let interest = Arc::new(Interest::new());
        let mut r = Registry::new(LIMITS).with_interest(Some(interest.clone()));
        let room = Stream::Room(Arc::from("x"));
        let floors = Floors {
            rooms: [("x".to_string(), 41)].into_iter().collect(),
            user: Some(7),
        };
        r.register_with_floors(conn(1, 10), [Arc::from("x")], &floors);
        r.register(conn(2, 10), []);
        let mut got = interest.take_snapshot();
        got.sort();
        assert_eq!(
            got,
            vec![(room.clone(), Some(41)), (Stream::User(10), Some(7))]
        );
        assert!(r.join_with_floor(10, Arc::from("y"), Some(3)));
        assert!(interest.contains(&Stream::Room(Arc::from("y"))));
        assert!(r.leave(10, "y"));
        assert!(!interest.contains(&Stream::Room(Arc::from("y"))));
        r.unregister(1);
        assert!(interest.contains(&room), "connection 2 still follows x");
        r.unregister(2);
        assert!(!interest.contains(&room));
        assert!(!interest.contains(&Stream::User(10)));
    }

    #[test]
    fn mutes_are_cached_per_room_and_member_events_reach_the_user() {
        let mut r = Registry::new(LIMITS);
        let (a, b) = (conn(1, 10), conn(2, 20));
        r.register(a.clone(), [Arc::from("x")]);
        r.register(b.clone(), [Arc::from("x")]);
        assert_eq!(r.member_room_muted(10, "x"), Some((Arc::from("x"), None)));
        let m = Mute { until: None };
        r.member_event(
            "x",
            10,
            MuteChange::Muted(m),
            Some(&Frame::from("muted")),
            Audience::Room,
            None,
        );
        assert_eq!(r.member_room_muted(10, "x").unwrap().1, Some(m));
        assert_eq!((a.len(), b.len()), (1, 1), "once per connection");
        r.set_mute(10, "y", MuteChange::Muted(m));
        assert_eq!(r.member_room_muted(10, "y"), None, "not a member of y");
        r.member_event("x", 10, MuteChange::Unmuted, None, Audience::Room, None);
        assert_eq!(r.member_room_muted(10, "x").unwrap().1, None);
        r.set_mute(10, "x", MuteChange::Muted(m));
        assert!(r.leave(10, "x"));
        assert!(r.join(10, Arc::from("x")));
        assert_eq!(
            r.member_room_muted(10, "x").unwrap().1,
            None,
            "leaving drops the cached mute (a join reloads it)"
        );
        assert!(r.leave(10, "x"));
        r.member_event(
            "x",
            10,
            MuteChange::Unchanged,
            Some(&Frame::from("left")),
            Audience::Room,
            None,
        );
        assert_eq!((a.len(), b.len()), (2, 2), "the leaver hears of it too");
        r.member_event(
            "x",
            20,
            MuteChange::Unchanged,
            Some(&Frame::from("role")),
            Audience::Room,
            Some(2),
        );
        assert_eq!(
            (a.len(), b.len()),
            (2, 2),
            "the requester gets its ack instead"
        );
    }

    #[test]
    fn an_own_member_event_reaches_only_the_users_connections_in_the_room_or_not() {
        let mut r = Registry::new(LIMITS);
        let (a1, a2, b) = (conn(1, 10), conn(2, 10), conn(3, 20));
        r.register(a1.clone(), [Arc::from("x")]);
        r.register(a2.clone(), [Arc::from("x")]);
        r.register(b.clone(), [Arc::from("x")]);
        let joined = Frame::from("joined");
        r.member_event(
            "x",
            10,
            MuteChange::Unchanged,
            Some(&joined),
            Audience::Own,
            Some(1),
        );
        assert_eq!(
            (a1.len(), a2.len(), b.len()),
            (0, 1, 0),
            "a member: its own only"
        );
        assert!(r.leave(10, "x"));
        let left = Frame::from("left");
        r.member_event(
            "x",
            10,
            MuteChange::Unchanged,
            Some(&left),
            Audience::Own,
            None,
        );
        assert_eq!(
            (a1.len(), a2.len(), b.len()),
            (1, 2, 0),
            "no longer a member"
        );
        r.member_event(
            "x",
            20,
            MuteChange::Unchanged,
            Some(&left),
            Audience::Room,
            None,
        );
        assert_eq!(
            (a1.len(), a2.len(), b.len()),
            (1, 2, 1),
            "the room's way: members"
        );
    }

    #[test]
    fn unregister_cleans_every_index() {
        let mut r = Registry::new(LIMITS);
        let a = conn(1, 10);
        r.register(a.clone(), [Arc::from("x")]);
        r.unregister(1);
        assert!(!r.has_user(10));
        assert_eq!(r.connection_count(), 0);
        r.deliver_room("x", 1, &Frame::from("m"), None);
        assert!(a.is_empty());
        assert!(
            !r.join(10, "x".into()),
            "no local connection, nothing to subscribe"
        );
    }
}
