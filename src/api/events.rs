//! The server API's events routes: `GET /v1/events` (the event feed, read
//! after a seq, with an optional long poll).

pub mod watch;

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use super::openapi::error;
use super::{ApiError, ApiState, Route};
use crate::store::feed::{Event, ReadError};

pub use watch::HeadWatch;

/// `limit` when none is given.
pub const DEFAULT_LIMIT: i64 = 100;
/// The largest `limit`.
pub const MAX_LIMIT: i64 = 1000;
/// The longest `wait`, in seconds.
pub const MAX_WAIT_SECS: f64 = 30.0;

/// The events routes.
pub fn routes() -> Vec<Route> {
    vec![Route {
        method: Method::GET,
        path: "/v1/events",
        handler: axum::routing::get(list),
        doc: list_doc(),
    }]
}

/// The query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Events with a seq above this (default 0: from the start kept).
    pub after: Option<i64>,
    /// Most events answered (default 100, at most 1000).
    pub limit: Option<i64>,
    /// Seconds an empty answer may wait for a first new event (at most 30).
    pub wait: Option<f64>,
}

/// The checked query.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Checked {
    after: i64,
    limit: i64,
    wait: Duration,
}

impl EventsQuery {
    fn check(&self) -> Result<Checked, ApiError> {
        let after = self.after.unwrap_or(0);
        if after < 0 {
            return Err(ApiError::Invalid("after must be 0 or more".into()));
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::Invalid(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let wait = self.wait.unwrap_or(0.0);
        if !(0.0..=MAX_WAIT_SECS).contains(&wait) {
            return Err(ApiError::Invalid(format!(
                "wait must be between 0 and {MAX_WAIT_SECS} seconds"
            )));
        }
        Ok(Checked {
            after,
            limit,
            wait: Duration::from_secs_f64(wait),
        })
    }
}

/// `{"items": [...]}`.
#[derive(Serialize)]
struct Items {
    items: Vec<Event>,
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> ApiError {
        match e {
            ReadError::Gone { after, oldest } => ApiError::Gone { after, oldest },
            ReadError::Db(e) => ApiError::from(e),
            ReadError::Pool(e) => ApiError::from(crate::store::StoreError::from(e)),
        }
    }
}

/// `GET /v1/events?after&limit&wait`: the events after `after`, in seq
/// order; with `wait`, an empty answer first waits (up to `wait` seconds)
/// for the head to move past `after`.
async fn list(
    State(state): State<ApiState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Items>, ApiError> {
    let Query(query) = query?;
    let q = query.check()?;
    let items = state.store.feed_read(q.after, q.limit).await?;
    if !items.is_empty() || q.wait.is_zero() {
        return Ok(Json(Items { items }));
    }
    let deadline = Instant::now() + q.wait;
    let Some(mut waiter) = state.feed.wait() else {
        return Err(ApiError::Unavailable(
            "too many readers waiting on the event feed (--feed-max-waiters)".into(),
        ));
    };
    loop {
        // The head the poller saw last: past `after`, there is something to read.
        if *waiter.head.borrow_and_update() > q.after {
            let items = state.store.feed_read(q.after, q.limit).await?;
            if !items.is_empty() {
                return Ok(Json(Items { items }));
            }
        }
        if state.feed.is_closed() {
            return Ok(Json(Items { items: Vec::new() }));
        }
        match tokio::time::timeout_at(deadline, waiter.head.changed()).await {
            Ok(Ok(())) => {}
            // Timed out, or the watcher is gone (shutting down): nothing new.
            Ok(Err(_)) | Err(_) => return Ok(Json(Items { items: Vec::new() })),
        }
    }
}

fn list_doc() -> serde_json::Value {
    json!({
        "summary": "Read the event feed",
        "description": "Events with a seq above `after`, in seq order (the commit order), at most `limit`. A consumer that always asks for what follows the last seq it processed sees every event exactly once, in order. With `wait`, an empty answer waits up to that many seconds for the first new event (a long poll). Asking for events older than retention kept is 410 `gone` with `oldest`, the oldest seq kept.",
        "operationId": "listEvents",
        "tags": ["events"],
        "parameters": [
            { "name": "after", "in": "query", "required": false,
              "description": "Answer events with a seq above this (default 0).",
              "schema": { "type": "integer", "minimum": 0, "default": 0 } },
            { "name": "limit", "in": "query", "required": false,
              "description": "Most events answered.",
              "schema": { "type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT } },
            { "name": "wait", "in": "query", "required": false,
              "description": "Seconds an empty answer may wait for a first new event.",
              "schema": { "type": "number", "minimum": 0, "maximum": MAX_WAIT_SECS, "default": 0 } }
        ],
        "responses": {
            "200": {
                "description": "The events (an empty list: none yet, after waiting `wait`).",
                "content": { "application/json": { "schema": {
                    "type": "object",
                    "required": ["items"],
                    "properties": { "items": { "type": "array", "items": event_schema() } }
                } } }
            },
            "400": error("A bad `after`, `limit` or `wait`."),
            "401": error("Missing or wrong key."),
            "410": error("Events after `after` were deleted by retention; `error.oldest` is the oldest seq kept."),
            "503": error("The database is unavailable, or too many readers are waiting.")
        }
    })
}

/// The JSON schema of one event.
pub fn event_schema() -> serde_json::Value {
    let types: Vec<&str> = crate::store::feed::EventType::ALL
        .iter()
        .map(|t| t.name())
        .collect();
    json!({
        "type": "object",
        "required": ["seq", "type", "at"],
        "properties": {
            "seq": { "type": "integer", "description": "Position in the feed (commit order)." },
            "type": { "type": "string", "enum": types },
            "at": { "type": "string", "format": "date-time" },
            "room": { "type": "string" },
            "user": { "type": "integer", "description": "The user it happened to (a message's author)." },
            "by": { "type": "integer", "description": "Who did it (absent: the user itself or the operator)." },
            "message": { "type": "object", "description": "A message event's frame `data`, in its current state (a delete erases the content)." },
            "role": { "type": "string" },
            "until": { "type": "string", "format": "date-time" },
            "reason": { "type": "string" },
            "visibility": { "type": "string" }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(after: Option<i64>, limit: Option<i64>, wait: Option<f64>) -> EventsQuery {
        EventsQuery { after, limit, wait }
    }

    #[test]
    fn defaults_and_bounds() {
        let c = q(None, None, None).check().unwrap();
        assert_eq!((c.after, c.limit, c.wait), (0, 100, Duration::ZERO));
        assert!(q(Some(-1), None, None).check().is_err());
        assert!(q(None, Some(0), None).check().is_err());
        assert!(q(None, Some(1001), None).check().is_err());
        assert!(q(None, Some(1000), Some(30.0)).check().is_ok());
        assert!(q(None, None, Some(30.5)).check().is_err());
        assert!(q(None, None, Some(-1.0)).check().is_err());
        assert!(q(None, None, Some(f64::NAN)).check().is_err());
    }
}
