//! A runtime-per-core WebSocket chat server with its history in PostgreSQL.
//!
//! # Layout
//!
//! The file tree follows a message from socket to socket:
//!
//! - [`server`]: start-up. Binds one `SO_REUSEPORT` socket per shard, builds
//!   the mesh (shard inboxes, [`router::Router`], writer queues) once, starts
//!   the writer threads and the shard threads; graceful shutdown.
//! - [`shard`]: one OS thread with one single-threaded tokio runtime. It
//!   accepts on its own socket and owns every connection it accepted, its
//!   context [`shard::Shard`], its inbox, and the local indexes
//!   ([`shard::registry`]) used to deliver; [`shard::announce`] tells other
//!   shards and nodes about joins, leaves and notices, [`shard::presence`]
//!   about users coming online and going offline.
//! - [`accept`]: one accepted socket: TLS, the HTTP request
//!   ([`handshake`]), admission (token verified by [`auth`] against the key
//!   set held by [`credentials`]), registration *before* `101`, then the
//!   WebSocket. A refused handshake goes through one path.
//! - [`connection`]: the transport of one WebSocket: reads frames (counted
//!   by [`ratelimit`]), writes its [`shard::outbox`] (feed everything
//!   queued, flush once), heartbeat and token expiry.
//! - [`session`]: the rules of each request; [`protocol`] decodes requests and
//!   encodes replies (the only module that knows JSON).
//! - [`rooms`]: room access (visibility, roles, invitations, mutes): the
//!   pure rules ([`rooms::rules`]) and the one call every door makes
//!   ([`rooms::act`]) to check and commit a change with its audit row.
//! - [`changes`]: who may edit or delete a stored message, the rules both
//!   doors (the WebSocket [`session`] and the server [`api`]) call.
//! - [`store::writer`]: writer threads take messages from bounded
//!   [`mesh`] mailboxes, insert them in batches, and only after the commit
//!   encode each one once and publish it through the [`router`] to every
//!   shard's inbox (in cluster mode, through the cluster link); each shard
//!   writes it to its local recipients.
//! - [`store`]: the only module that touches PostgreSQL (pools, queries,
//!   migrations from `sql/`), the event feed included ([`store::feed`]:
//!   every durable change numbered in commit order).
//! - [`api`]: the server API (issue 15), the application backend's door:
//!   its own listener and thread, bearer keys, `/v1` routes that call the
//!   same rule functions as [`session`], the event feed's pull and the
//!   webhook deliverer.
//! - [`presence`]: who is online across shards (counted at connection open
//!   and close, never per message) and the typing throttle.
//! - [`userlimits`]: limits per user across all its connections on this
//!   server (connections, message rate), shared by every shard.
//! - [`budget`]: the server-wide budget of reply bytes in flight (replays
//!   and histories are written page by page, each page under a lease).
//! - [`config`]: every setting, as flags and environment variables.
//! - [`cluster`]: cluster mode: several nodes serve one chat through NATS;
//!   the cluster link orders local and remote messages per stream.
//! - [`web`]: the plain-HTTP side of the port: the embedded chat page,
//!   probes, `/metrics` ([`metrics`]) and the `--dev` token endpoint.
//!
//! See `docs/ARCHITECTURE.md` for the life of one message and the invariants.

pub mod accept;
pub mod api;
pub mod auth;
pub mod budget;
pub mod changes;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod credentials;
pub mod fd_budget;
pub mod feed_jobs;
pub mod handshake;
pub mod mesh;
pub mod metrics;
pub mod metrics_port;
pub mod pending;
pub mod presence;
pub mod protocol;
pub mod ratelimit;
pub mod rooms;
pub mod router;
pub mod server;
pub mod service_thread;
pub mod session;
pub mod shard;
pub mod store;
pub mod userlimits;
pub mod web;
pub mod webhook;

pub use config::Config;
pub use server::{start, ServerHandle, StartError};
