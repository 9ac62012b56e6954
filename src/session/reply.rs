//! Replies written page by page: replays (`join` with `since`, `dm_sync`)
//! and histories. No reply is built whole in memory beyond one page.
//!
//! A paged reply is planned from the ids and content sizes of its rows (a
//! small query that reads no content), cut into pages of at most
//! `--replay-page` rows and `--replay-page-bytes` content bytes. Each page
//! holds a [`Lease`] on the server-wide [`ReplyBudget`] from before its rows
//! are read until it is written; the connection writes it to the socket
//! with back-pressure (feeding a frame waits for the socket) before the
//! next page is read. A replay's messages are ordinary frames, one per
//! message; a history reply is one WebSocket message sent as fragments of
//! about [`FRAGMENT_BYTES`] (the client sees the same single frame).

use std::rc::Rc;

use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::budget::{BudgetError, Lease, ReplyBudget};
use crate::protocol::{
    encode_message, history_head, push_history_entry, Frame, HistoryKind, Ref, StoredMessage,
    HISTORY_TAIL,
};
use crate::shard::Shard;
use crate::store::{RowSize, StoreError};

/// What a request's deferred work gives the connection to send.
pub enum Reply {
    /// Frames to queue in the outbox, in order (acks, errors: small).
    Frames(Vec<Frame>),
    /// A reply written page by page straight to the socket.
    Stream(ReplyStream),
}

/// What a paged reply's rows become.
#[derive(Debug, Clone)]
pub enum Body {
    /// One `message` / `dm` frame each (a replay).
    Messages,
    /// The entries of one `room_history` / `dm_history` frame.
    History {
        /// Which history.
        kind: HistoryKind,
        /// The request's `ref`.
        reference: Option<Ref>,
    },
}

/// Bytes counted per row besides its content: its username and room, the
/// JSON around it, the row as the driver holds it.
pub const ROW_OVERHEAD: usize = 512;
/// The most bytes one content byte takes once escaped in JSON (`\u0001`).
pub const MAX_ESCAPE: usize = 6;
/// The size at which a history reply's pending bytes go out as a fragment
/// (the default WebSocket write buffer: a connection's buffer never grows
/// past it by more than one entry).
pub const FRAGMENT_BYTES: usize = 16 * 1024;

/// How many of `rows` (the rest of a plan) the next page takes: at most
/// `max_rows`, and at most `max_bytes` of content unless its first row
/// alone is larger (then that row is the page).
pub fn page_len(rows: &[RowSize], max_rows: usize, max_bytes: usize) -> usize {
    let mut n = 0;
    let mut bytes = 0usize;
    for r in rows.iter().take(max_rows.max(1)) {
        if n > 0 && bytes.saturating_add(r.bytes) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(r.bytes);
        n += 1;
    }
    n
}

/// What a page is charged against the budget: an upper bound of what it
/// holds at once. Its rows twice (as the driver received them and as
/// messages), one message encoded at the worst escaping, and for a
/// history the fragment being filled.
pub fn page_cost(page: &[RowSize], body: &Body) -> u64 {
    let rows: usize = page
        .iter()
        .map(|r| r.bytes.saturating_add(ROW_OVERHEAD))
        .fold(0, usize::saturating_add);
    let largest = page.iter().map(|r| r.bytes).max().unwrap_or(0);
    let fragment = match body {
        Body::Messages => 0,
        Body::History { .. } => FRAGMENT_BYTES,
    };
    let cost = rows
        .saturating_mul(2)
        .saturating_add(largest.saturating_mul(MAX_ESCAPE))
        .saturating_add(ROW_OVERHEAD)
        .saturating_add(fragment);
    u64::try_from(cost).unwrap_or(u64::MAX)
}

/// A reply under way: an optional first frame (the `join_ack` or
/// `dm_sync_ack`), then its planned rows, page by page.
pub struct ReplyStream {
    shard: Rc<Shard>,
    head: Option<Frame>,
    body: Body,
    rows: Vec<RowSize>,
    next: usize,
    first: Option<Lease>,
}

impl ReplyStream {
    /// Takes the budget for the first page of `rows` (waiting at most
    /// `--reply-budget-wait-ms`): done before anything of the reply is
    /// decided, so that a refusal leaves no trace. The first page of any
    /// prefix of `rows` (what a replay plan keeps) costs no more.
    pub async fn first_lease(
        shard: &Shard,
        rows: &[RowSize],
        body: &Body,
    ) -> Result<Lease, BudgetError> {
        let n = page_len(
            rows,
            shard.config.replay_page,
            shard.config.replay_page_bytes,
        );
        shard
            .reply_budget
            .acquire(page_cost(&rows[..n], body))
            .await
    }

    /// The reply: `head`, then `rows` (ascending ids) as `body`, the first
    /// page under `first`.
    pub fn new(
        shard: Rc<Shard>,
        head: Option<Frame>,
        body: Body,
        rows: Vec<RowSize>,
        first: Lease,
    ) -> ReplyStream {
        ReplyStream {
            shard,
            head,
            body,
            rows,
            next: 0,
            first: Some(first),
        }
    }

    /// The frame to write before any page (once).
    pub fn take_head(&mut self) -> Option<Frame> {
        self.head.take()
    }

    /// Reads the next page, under its lease (the first page's was taken
    /// already; later ones wait for budget as long as it takes). `None`
    /// when the reply is complete.
    pub async fn next_page(&mut self) -> Option<Result<Page, StoreError>> {
        let first = self.next == 0;
        if self.next >= self.rows.len() && !(first && self.is_history()) {
            return None;
        }
        let config = &self.shard.config;
        let n = page_len(
            &self.rows[self.next..],
            config.replay_page,
            config.replay_page_bytes,
        );
        let page = &self.rows[self.next..self.next + n];
        let budget: &std::sync::Arc<ReplyBudget> = &self.shard.reply_budget;
        let mut lease = match self.first.take() {
            Some(lease) => lease,
            None => budget.acquire_waiting(page_cost(page, &self.body)).await,
        };
        let ids: Vec<i64> = page.iter().map(|r| r.id).collect();
        let messages = if ids.is_empty() {
            Vec::new()
        } else {
            match self.shard.store.messages_by_id(&ids).await {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            }
        };
        // An edit committed between the plan and this read may have made a
        // row larger than planned (issue 14): the page is then charged what
        // it holds. The lease is given back before waiting for the larger
        // one, so a page never holds budget while it waits for more.
        let held: Vec<RowSize> = messages
            .iter()
            .map(|m| RowSize {
                id: m.id,
                bytes: m.content.len(),
            })
            .collect();
        let cost = page_cost(&held, &self.body);
        if cost > page_cost(page, &self.body) {
            drop(lease);
            lease = budget.acquire_waiting(cost).await;
        }
        self.next += n;
        // An empty history still has its one (empty) page.
        if n == 0 {
            self.next = usize::MAX;
        }
        Some(Ok(Page {
            rows: messages.into_iter(),
            body: self.body.clone(),
            first,
            last: self.next >= self.rows.len(),
            fragment: None,
            sent_any: !first,
            entries: 0,
            done: false,
            _lease: lease,
        }))
    }

    fn is_history(&self) -> bool {
        matches!(self.body, Body::History { .. })
    }
}

/// One page read: iterated, it encodes its WebSocket frames one at a time,
/// as the connection writes them; its lease is given back when dropped.
pub struct Page {
    rows: std::vec::IntoIter<StoredMessage>,
    body: Body,
    first: bool,
    last: bool,
    /// A history's bytes not yet sent as a fragment.
    fragment: Option<Vec<u8>>,
    /// A fragment of this history was sent already (on this page or before).
    sent_any: bool,
    entries: usize,
    done: bool,
    _lease: Lease,
}

impl Page {
    /// A history's pending bytes as a fragment (`fin`: the last one).
    fn fragment(&mut self, fin: bool) -> Message {
        let data = self.fragment.take().unwrap_or_default();
        let opcode = if self.sent_any {
            Data::Continue
        } else {
            Data::Text
        };
        self.sent_any = true;
        Message::Frame(WsFrame::message(data, OpCode::Data(opcode), fin))
    }
}

impl Iterator for Page {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        let Body::History { kind, reference } = &self.body else {
            return self.rows.next().map(|m| Message::Text(encode_message(&m)));
        };
        if self.done {
            return None;
        }
        if self.fragment.is_none() {
            let mut start = Vec::with_capacity(FRAGMENT_BYTES);
            if self.first && !self.sent_any {
                start = history_head(*kind, reference.as_ref());
            }
            self.fragment = Some(start);
        }
        loop {
            match self.rows.next() {
                Some(m) => {
                    let (first, entries) = (self.first, self.entries);
                    let out = self.fragment.get_or_insert_with(Vec::new);
                    if !(first && entries == 0) {
                        out.push(b',');
                    }
                    push_history_entry(out, &m);
                    self.entries += 1;
                    if out.len() >= FRAGMENT_BYTES {
                        let fragment = self.fragment(false);
                        self.fragment = Some(Vec::with_capacity(FRAGMENT_BYTES));
                        return Some(fragment);
                    }
                }
                None => {
                    self.done = true;
                    if self.last {
                        self.fragment
                            .get_or_insert_with(Vec::new)
                            .extend_from_slice(HISTORY_TAIL.as_bytes());
                        return Some(self.fragment(true));
                    }
                    let pending = self.fragment.as_ref().is_some_and(|f| !f.is_empty());
                    return pending.then(|| self.fragment(false));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::ReplyGauges;
    use crate::protocol::{encode_history, Target};
    use std::sync::Arc;
    use std::time::Duration;

    fn message(id: i64, content: String) -> StoredMessage {
        StoredMessage {
            id,
            from_user: 7,
            username: "al\"ice".into(),
            content,
            timestamp: chrono::Utc::now(),
            target: Target::Room("g".into()),
            kind: crate::protocol::Kind::Message,
            edited_at: None,
            deleted: false,
        }
    }

    fn page(
        messages: Vec<StoredMessage>,
        body: &Body,
        first: bool,
        last: bool,
        lease: Lease,
    ) -> Page {
        Page {
            rows: messages.into_iter(),
            body: body.clone(),
            first,
            last,
            fragment: None,
            sent_any: !first,
            entries: 0,
            done: false,
            _lease: lease,
        }
    }

    #[tokio::test]
    async fn a_history_in_pages_and_fragments_is_one_message_equal_to_the_whole() {
        let budget = ReplyBudget::new(
            1 << 30,
            Duration::from_secs(1),
            Arc::new(ReplyGauges::default()),
        );
        let messages: Vec<StoredMessage> = (1..=9)
            .map(|i| message(i, "\u{1}".repeat(if i % 2 == 0 { 4096 } else { 10 })))
            .collect();
        let body = Body::History {
            kind: HistoryKind::Room,
            reference: Some(Ref::Int(3)),
        };
        let whole = encode_history(HistoryKind::Room, &messages, Some(&Ref::Int(3)));
        // Pages of 4, 4 and 1 messages.
        let pages = [
            page(
                messages[..4].to_vec(),
                &body,
                true,
                false,
                budget.acquire(1).await.unwrap(),
            ),
            page(
                messages[4..8].to_vec(),
                &body,
                false,
                false,
                budget.acquire(1).await.unwrap(),
            ),
            page(
                messages[8..].to_vec(),
                &body,
                false,
                true,
                budget.acquire(1).await.unwrap(),
            ),
        ];
        let mut joined = Vec::new();
        let mut frames = Vec::new();
        for p in pages {
            for m in p {
                let Message::Frame(f) = m else {
                    panic!("fragments")
                };
                frames.push((f.header().opcode, f.header().is_final));
                assert!(f.payload().len() <= FRAGMENT_BYTES + 6 * 4096 + ROW_OVERHEAD);
                joined.extend_from_slice(f.payload());
            }
        }
        assert_eq!(joined, whole.as_bytes(), "the same single frame");
        assert!(frames.len() > 3, "several fragments: {frames:?}");
        assert_eq!(frames[0], (OpCode::Data(Data::Text), false));
        assert!(frames[1..frames.len() - 1]
            .iter()
            .all(|f| *f == (OpCode::Data(Data::Continue), false)));
        assert_eq!(
            frames[frames.len() - 1],
            (OpCode::Data(Data::Continue), true)
        );
        assert_eq!(budget.gauges().in_flight(), 0, "every lease given back");
    }

    #[tokio::test]
    async fn a_replay_page_is_one_frame_per_message() {
        let budget = ReplyBudget::new(
            1 << 30,
            Duration::from_secs(1),
            Arc::new(ReplyGauges::default()),
        );
        let messages: Vec<StoredMessage> = (1..=3).map(|i| message(i, format!("m{i}"))).collect();
        let p = page(
            messages.clone(),
            &Body::Messages,
            true,
            true,
            budget.acquire(10).await.unwrap(),
        );
        let got: Vec<Message> = p.collect();
        let want: Vec<Message> = messages
            .iter()
            .map(|m| Message::Text(encode_message(m)))
            .collect();
        assert_eq!(got, want);
    }

    fn rows(sizes: &[usize]) -> Vec<RowSize> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &bytes)| RowSize {
                id: i as i64 + 1,
                bytes,
            })
            .collect()
    }

    #[test]
    fn pages_are_bounded_by_rows_and_by_bytes() {
        let r = rows(&[10; 7]);
        assert_eq!(page_len(&r, 3, 1000), 3, "by rows");
        assert_eq!(page_len(&r, 100, 35), 3, "by bytes");
        assert_eq!(page_len(&r[6..], 3, 1000), 1, "what is left");
        assert_eq!(page_len(&[], 3, 1000), 0);
        let big = rows(&[5000, 10]);
        assert_eq!(page_len(&big, 100, 1000), 1, "a larger row is a page alone");
        assert_eq!(page_len(&r, 0, 0), 1, "always progress");
    }

    #[test]
    fn the_first_page_of_a_prefix_costs_no_more() {
        let r = rows(&[100, 4000, 16_000, 300, 20]);
        let whole = page_len(&r, 3, 20_000);
        for keep in 0..=r.len() {
            let n = page_len(&r[..keep], 3, 20_000);
            assert!(n <= whole);
            assert!(page_cost(&r[..n], &Body::Messages) <= page_cost(&r[..whole], &Body::Messages));
        }
    }

    #[test]
    fn a_page_is_charged_at_least_what_it_holds() {
        let page = rows(&[4096; 100]);
        let cost = page_cost(&page, &Body::Messages);
        // The rows themselves, and one fully escaped message on top.
        assert!(cost >= 2 * 100 * 4096 + 6 * 4096, "{cost}");
        let history = Body::History {
            kind: HistoryKind::Room,
            reference: None,
        };
        assert!(page_cost(&page, &history) >= cost + FRAGMENT_BYTES as u64);
    }
}
