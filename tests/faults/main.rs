//! Fault tests: the real `chat_server` binary as a child process, killed,
//! stopped by signals, and cut off from PostgreSQL, with real WebSocket
//! clients. Each test checks the durability promise: whatever a client saw
//! is stored, and nothing the server refused is delivered.
//!
//! Tests that stop a database use a private cluster (`scripts/pg.sh` with
//! their own `CHAT_PG_DIR` under `target/faults-pg/` and a free port), never
//! the shared test cluster. The tests run one at a time.

mod harness;

mod api_messages;
mod fd_limits;
mod kill;
mod outage;
mod ready;
mod security;
mod shutdown;
mod slow;
mod startup;
