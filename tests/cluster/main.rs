//! Cluster tests (issue #8): two or three real `chat_server` processes,
//! each on its own port, against one PostgreSQL database and one NATS
//! server, with real WebSocket clients. Every test checks what clients saw
//! against the database: a room's messages in `room_history` order, with
//! no gap and no duplicate, on every node.
//!
//! NATS: `CHAT_TEST_NATS_URL` (set by `scripts/test.sh`, which starts a
//! private `nats-server`); tests that restart NATS start their own on a
//! free port. The tests run one at a time (the machine may have two cores).

#[allow(dead_code)]
#[path = "../faults/harness.rs"]
mod harness;

mod nodes;
#[path = "../common/webhook_receiver.rs"]
mod webhook_receiver;

mod access;
mod api_messages;
mod api_users;
mod edits;
mod fanout;
mod faults;
mod kick;
mod member_cap;
mod webhook;
mod writer;
