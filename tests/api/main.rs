//! Integration tests: the real server (two shards) on a real PostgreSQL,
//! driven by real WebSocket clients. Each test has its own database.

mod helpers;
mod http;
#[path = "../common/webhook_receiver.rs"]
mod webhook_receiver;

mod api_feed;
mod api_webhook;

mod api_door;

mod access;
mod api_messages;
mod api_rooms;
mod api_users;
mod auth;
mod delivery;
mod edits;
mod errors;
mod history;
mod identity;
mod kick;
mod limits;
mod load;
mod member_cap;
mod presence;
mod recovery;
mod replies;
mod rooms;
mod security;
mod server_limits;
mod userlimits;
mod web;
