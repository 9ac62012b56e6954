//! Pure helpers over a batch of [`PersistRequest`]s: the insert's column
//! arrays, what became of each row, the rows whose deadline passed and, in
//! cluster mode, the streams a batch locks and each row's predecessors.
//! Nothing here touches the database or the clock.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::PersistRequest;
use crate::protocol::{Kind, StoredMessage, Target, UserId};

/// Ids and time given to a batch before its first insert attempt, kept
/// across retries so a retried insert is idempotent.
pub(super) struct Assigned {
    /// One id per row, in batch order.
    pub(super) ids: Vec<i64>,
    /// The batch's timestamp (microsecond precision, as stored).
    pub(super) at: DateTime<Utc>,
}

/// What became of one row of a committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Stored under the id it was given: deliver it.
    Stored,
    /// Its (sender, `client_id`) was already stored as this message: answer
    /// the sender with it and deliver nothing.
    Duplicate(StoredMessage),
    /// Neither inserted nor found (cannot happen while the unique index
    /// exists): tell the sender it was not stored.
    Lost,
    /// Issue 14: an edit or delete whose target was deleted by a commit
    /// before it (the writer's re-check): tell the sender why.
    Refused(String),
}

/// Issue 14: true when the batch holds an edit or delete (committed in one
/// transaction with its messages); a batch of plain messages takes the
/// plain insert unchanged.
pub(super) fn has_events(batch: &[PersistRequest]) -> bool {
    batch.iter().any(|r| r.kind != Kind::Message)
}

/// The batch's rows (all of them, or its plain messages only) as the
/// insert's column arrays.
#[allow(clippy::type_complexity)]
pub(super) fn columns<'a>(
    batch: impl Iterator<Item = &'a PersistRequest>,
) -> (
    Vec<UserId>,
    Vec<Option<UserId>>,
    Vec<Option<&'a str>>,
    Vec<&'a str>,
    Vec<Option<&'a str>>,
) {
    let n = batch.size_hint().1.unwrap_or(0);
    let mut from = Vec::with_capacity(n);
    let mut to: Vec<Option<UserId>> = Vec::with_capacity(n);
    let mut room: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut content = Vec::with_capacity(n);
    let mut client_id: Vec<Option<&str>> = Vec::with_capacity(n);
    for r in batch {
        client_id.push(r.client_id.as_deref());
        from.push(r.from);
        match &r.target {
            Target::Room(name) => {
                to.push(None);
                room.push(Some(&**name));
            }
            Target::User(u) => {
                to.push(Some(*u));
                room.push(None);
            }
        }
        content.push(r.content.as_str());
    }
    (from, to, room, content, client_id)
}

/// Matches a batch whose insert skipped rows with what the database holds
/// for its `client_id`s: a row found under its own id was stored (now or by
/// an earlier attempt), one found under another id is a retry.
pub(super) fn fates(
    batch: &[PersistRequest],
    ids: &[i64],
    found: Vec<(StoredMessage, String)>,
) -> Vec<Fate> {
    let stored: HashMap<(UserId, String), StoredMessage> = found
        .into_iter()
        .map(|(m, client_id)| ((m.from_user, client_id), m))
        .collect();
    batch
        .iter()
        .zip(ids)
        .map(|(r, &id)| match &r.client_id {
            None => Fate::Stored,
            // Two sends with one client_id in one batch both find the row
            // the first one stored: the second is its duplicate.
            Some(c) => match stored.get(&(r.from, c.to_string())) {
                Some(m) if m.id == id => Fate::Stored,
                Some(m) => Fate::Duplicate(m.clone()),
                None => Fate::Lost,
            },
        })
        .collect()
}

/// Cluster mode: the streams a batch writes, in the order its transaction
/// locks them: rooms sorted by name, then users (both ends of each DM)
/// sorted by id, each once.
pub(super) fn streams(batch: &[PersistRequest]) -> (Vec<&str>, Vec<UserId>) {
    let mut rooms: Vec<&str> = Vec::new();
    let mut users: Vec<UserId> = Vec::new();
    for r in batch {
        match &r.target {
            Target::Room(name) => rooms.push(name),
            Target::User(to) => {
                users.push(r.from);
                users.push(*to);
            }
        }
    }
    rooms.sort_unstable();
    rooms.dedup();
    users.sort_unstable();
    users.dedup();
    (rooms, users)
}

/// Cluster mode: chains each stored row to its stream's previous message,
/// given each stream's last id before the batch (absent: 0). A room
/// message gets `[prev, prev]`, a DM `[prev_from, prev_to]` (see
/// [`Committed::prev`](crate::cluster::Committed::prev)); a row not
/// `inserted` gets `[0, 0]` and moves no stream on.
pub(super) fn predecessors(
    batch: &[PersistRequest],
    ids: &[i64],
    inserted: &HashSet<i64>,
    mut room_last: HashMap<String, i64>,
    mut user_last: HashMap<UserId, i64>,
) -> Vec<[i64; 2]> {
    let mut prevs = Vec::with_capacity(batch.len());
    for (r, id) in batch.iter().zip(ids) {
        if !inserted.contains(id) {
            prevs.push([0, 0]);
            continue;
        }
        match &r.target {
            Target::Room(name) => {
                let last = room_last.entry(name.to_string()).or_insert(0);
                prevs.push([*last, *last]);
                *last = *id;
            }
            Target::User(to) => {
                let p_from = *user_last.get(&r.from).unwrap_or(&0);
                user_last.insert(r.from, *id);
                let p_to = if *to == r.from {
                    p_from
                } else {
                    let p = *user_last.get(to).unwrap_or(&0);
                    user_last.insert(*to, *id);
                    p
                };
                prevs.push([p_from, p_to]);
            }
        }
    }
    prevs
}

/// Removes the requests whose deadline passed (and their ids, if assigned).
pub(super) fn take_expired(
    batch: &mut Vec<PersistRequest>,
    assigned: &mut Option<Assigned>,
    now: Instant,
    timeout: Duration,
) -> Vec<PersistRequest> {
    let mut expired = Vec::new();
    let mut kept = Vec::with_capacity(batch.len());
    let mut kept_ids = Vec::with_capacity(batch.len());
    let ids = assigned.as_mut().map(|a| std::mem::take(&mut a.ids));
    for (i, req) in batch.drain(..).enumerate() {
        if req.enqueued + timeout <= now {
            expired.push(req);
        } else {
            kept.push(req);
            if let Some(ids) = &ids {
                kept_ids.push(ids[i]);
            }
        }
    }
    *batch = kept;
    if let Some(a) = assigned.as_mut() {
        a.ids = kept_ids;
    }
    expired
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::router::Origin;

    fn request(enqueued: Instant) -> PersistRequest {
        PersistRequest {
            target: Target::User(1),
            from: 2,
            username: Arc::from("u"),
            content: "c".into(),
            origin: Origin { shard: 0, conn: 0 },
            enqueued,
            reference: None,
            client_id: None,
            kind: Kind::Message,
            reply: None,
        }
    }

    #[test]
    fn skipped_rows_are_told_apart_by_client_id() {
        let t0 = Instant::now();
        let with_key = |key: &str| PersistRequest {
            client_id: Some(key.into()),
            ..request(t0)
        };
        let batch = vec![
            request(t0),
            with_key("a"),
            with_key("b"),
            with_key("a"),
            with_key("c"),
        ];
        let ids = [10, 11, 12, 13, 14];
        let msg = |id: i64| StoredMessage {
            id,
            from_user: 2,
            username: Arc::from("u"),
            content: "c".into(),
            timestamp: DateTime::<Utc>::UNIX_EPOCH,
            target: Target::User(1),
            kind: Kind::Message,
            edited_at: None,
            deleted: false,
        };
        // "a" was stored as 11 by this batch, "b" long ago as 5; "c" is missing.
        let found = vec![(msg(11), "a".to_string()), (msg(5), "b".to_string())];
        let f = fates(&batch, &ids, found);
        assert_eq!(f[0], Fate::Stored);
        assert_eq!(f[1], Fate::Stored);
        assert_eq!(f[2], Fate::Duplicate(msg(5)));
        assert!(
            matches!(&f[3], Fate::Duplicate(m) if m.id == 11),
            "{:?}",
            f[3]
        );
        assert_eq!(f[4], Fate::Lost);
    }

    #[test]
    fn expired_requests_leave_with_their_ids() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(5);
        let mut batch = vec![
            request(t0),
            request(t0 + Duration::from_secs(2)),
            request(t0 + Duration::from_secs(1)),
        ];
        let mut assigned = Some(Assigned {
            ids: vec![10, 11, 12],
            at: Utc::now(),
        });
        let expired = take_expired(
            &mut batch,
            &mut assigned,
            t0 + Duration::from_millis(6100),
            timeout,
        );
        assert_eq!(expired.len(), 2);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].enqueued, t0 + Duration::from_secs(2));
        assert_eq!(assigned.unwrap().ids, vec![11]);
    }

    #[test]
    fn cluster_rows_chain_to_their_streams_previous_message() {
        let t0 = Instant::now();
        let send = |target: Target, from: UserId| PersistRequest {
            target,
            from,
            ..request(t0)
        };
        let room = |name: &str| Target::Room(Arc::from(name));
        let batch = vec![
            send(room("b"), 2),
            send(room("a"), 1),
            send(Target::User(2), 1),
            send(room("a"), 3),
            send(room("a"), 2),
            send(Target::User(3), 2),
            send(Target::User(3), 3),
        ];
        let (rooms, users) = streams(&batch);
        assert_eq!(rooms, ["a", "b"]);
        assert_eq!(users, [1, 2, 3]);

        let ids = [10, 11, 12, 13, 14, 15, 16];
        // Row 13 was not inserted (a retried client_id).
        let inserted: HashSet<i64> = [10, 11, 12, 14, 15, 16].into();
        let room_last = HashMap::from([("a".to_string(), 5)]);
        let user_last = HashMap::from([(2, 7)]);
        let prevs = predecessors(&batch, &ids, &inserted, room_last, user_last);
        assert_eq!(
            prevs,
            [
                [0, 0],   // first message of room b
                [5, 5],   // room a's last stored message
                [0, 7],   // user 1's first DM; user 2's last stored one
                [0, 0],   // not inserted: chained to nothing
                [11, 11], // follows 11, not the skipped 13
                [12, 0],  // user 2's DM 12; user 3's first
                [15, 15], // a DM to oneself: one stream
            ]
        );
    }
}
