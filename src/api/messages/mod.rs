//! The server API's message routes (issue 15): posting room messages and
//! DMs as a given user, reading a room's history, editing a message as its
//! author and deleting one as the operator.
//!
//! Every route goes through the doors' shared rules and the same writers
//! as the WebSocket `session`: content by [`check_content`], `client_id`
//! by [`valid_client_id`], edits and deletes by [`changes`], and each
//! stored row is committed and published by its stream's writer (same
//! frame, same order, same recovery as a client's), which answers the
//! request on its `reply` channel once committed. API calls act with the
//! operator's authority: a sender need not be a member of the room, and a
//! mute does not stop it.
//!
//! - this file: the handlers;
//! - [`doc`]: their OpenAPI operation objects.

mod doc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use serde::Deserialize;
use tracing::{debug_span, Instrument};

use super::extract::path;
use super::{ApiError, ApiJson, ApiState, Route};
use crate::changes::{self, Changer, Refusal};
use crate::protocol::{
    check_content, encode_message_data, valid_client_id, valid_room_name, valid_user_id, Kind,
    Target, UserId, OPERATOR,
};
use crate::router::Origin;
use crate::store::writer::{Outcome, PersistRequest, SubmitError};
use crate::store::Window;

/// How long past `--persist-timeout-ms` a request waits for its writer's
/// answer (the writer answers `NotStored` at the timeout itself).
const REPLY_MARGIN: Duration = Duration::from_secs(5);

/// The message routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            method: Method::POST,
            path: "/v1/rooms/{room}/messages",
            handler: post(post_room),
            doc: doc::post_room(),
        },
        Route {
            method: Method::GET,
            path: "/v1/rooms/{room}/messages",
            handler: get(room_history),
            doc: doc::room_history(),
        },
        Route {
            method: Method::POST,
            path: "/v1/dms",
            handler: post(post_dm),
            doc: doc::post_dm(),
        },
        Route {
            method: Method::PATCH,
            path: "/v1/messages/{id}",
            handler: patch(edit),
            doc: doc::edit(),
        },
        Route {
            method: Method::DELETE,
            path: "/v1/messages/{id}",
            handler: delete(remove),
            doc: doc::remove(),
        },
    ]
}

/// `POST /v1/rooms/{room}/messages`.
#[derive(Debug, Deserialize)]
struct RoomPost {
    from_user: UserId,
    content: String,
    client_id: Option<String>,
}

/// `POST /v1/dms`.
#[derive(Debug, Deserialize)]
struct DmPost {
    from_user: UserId,
    to: UserId,
    content: String,
    client_id: Option<String>,
}

/// `PATCH /v1/messages/{id}`.
#[derive(Debug, Deserialize)]
struct EditBody {
    content: String,
}

/// `GET /v1/rooms/{room}/messages`'s query.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    before: Option<i64>,
    after: Option<i64>,
    limit: Option<i64>,
}

async fn post_room(
    State(state): State<ApiState>,
    room: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<RoomPost>,
) -> Result<Response, ApiError> {
    let room = path(room)?;
    let (content, client_id) = checked(&state, body.content, body.client_id)?;
    if !valid_room_name(&room) {
        return Err(ApiError::no_room(&room));
    }
    let username = sender(&state, body.from_user, Some(&room), None).await?;
    let request = api_request(
        Target::Room(Arc::from(room)),
        body.from_user,
        username,
        content,
        client_id,
        Kind::Message,
    );
    created(commit(&state, request).await?)
}

async fn post_dm(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<DmPost>,
) -> Result<Response, ApiError> {
    let (content, client_id) = checked(&state, body.content, body.client_id)?;
    if !valid_user_id(body.to) {
        return Err(ApiError::no_user(body.to));
    }
    let username = sender(&state, body.from_user, None, Some(body.to)).await?;
    let request = api_request(
        Target::User(body.to),
        body.from_user,
        username,
        content,
        client_id,
        Kind::Message,
    );
    created(commit(&state, request).await?)
}

async fn room_history(
    State(state): State<ApiState>,
    room: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let room = path(room)?;
    let Query(q) = query?;
    let max = state.config.history_max;
    if q.limit.is_some_and(|n| n > max) {
        return Err(ApiError::Invalid(format!(
            "limit must be at most {max} (--history-max)"
        )));
    }
    let limit = state
        .config
        .history_limit(q.limit)
        .map_err(|e| ApiError::Invalid(e.to_owned()))?;
    if !valid_room_name(&room) {
        return Err(ApiError::no_room(&room));
    }
    let window = Window {
        limit,
        before: q.before,
        after: q.after,
    };
    let Some(rows) = state.store.operator_room_history(&room, window).await? else {
        return Err(ApiError::no_room(&room));
    };
    let mut body = String::from("{\"items\":[");
    for (i, m) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&encode_message_data(m));
    }
    body.push_str("]}");
    Ok(json(StatusCode::OK, body))
}

/// `PATCH /v1/messages/{id}`: an edit on behalf of the message's author.
async fn edit(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<EditBody>,
) -> Result<Response, ApiError> {
    let id = message_id(id)?;
    let (content, _) = checked(&state, body.content, None)?;
    let kind = Kind::Edit { target: id };
    let (found, stream) = target(&state, kind, id).await?;
    // The author's own stream: the room, or the DM pair seen from it.
    let request = api_request(stream, found.author, Arc::from(""), content, None, kind);
    changed(commit(&state, request).await?)
}

/// `DELETE /v1/messages/{id}`: a moderation delete by the operator.
async fn remove(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = message_id(id)?;
    let kind = Kind::Delete { target: id };
    let (found, stream) = target(&state, kind, id).await?;
    // A room's delete is the operator's row (`by: null`). A DM's stream is
    // its pair: a row of it must be one of the two users', so the delete
    // is written as its author's.
    let from = match stream {
        Target::Room(_) => OPERATOR,
        Target::User(_) => found.author,
    };
    let request = api_request(stream, from, Arc::from(""), String::new(), None, kind);
    changed(commit(&state, request).await?)
}

/// The message an edit or delete names and the stream the change goes to
/// (the author's: the room, or the DM pair with the recipient), after the
/// rules every door shares ([`changes`]) with the operator's authority.
async fn target(
    state: &ApiState,
    kind: Kind,
    id: i64,
) -> Result<(crate::store::EventTarget, Target), ApiError> {
    let (found, _) = state.store.event_target(id, OPERATOR, None).await?;
    let found = changes::message(id, found).map_err(refusal)?;
    let stream = found.stream.clone();
    changes::allowed(Changer::Operator, kind, id, &found, &stream).map_err(refusal)?;
    Ok((found, stream))
}

/// A refusal of the change rules: the message does not exist, or is
/// deleted (404 both, as the WebSocket door says "does not exist" and
/// "is deleted" alike with an error).
fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::Forbidden(why) => ApiError::Invalid(why),
        Refusal::Missing(_) | Refusal::Deleted(_) => ApiError::NotFound(r.to_string()),
    }
}

/// The content and `client_id` of a post or edit, checked as the WebSocket
/// door checks them.
fn checked(
    state: &ApiState,
    content: String,
    client_id: Option<String>,
) -> Result<(String, Option<Box<str>>), ApiError> {
    check_content(&content, state.config.max_content).map_err(ApiError::Invalid)?;
    if let Some(c) = &client_id {
        if !valid_client_id(c) {
            return Err(ApiError::Invalid(format!(
                "client_id must be 1 to {} characters, without NUL",
                crate::protocol::MAX_CLIENT_ID_CHARS
            )));
        }
    }
    Ok((content, client_id.map(String::into_boxed_str)))
}

/// The sender's username, after checking that it, and the room or
/// recipient it names, exist (404 otherwise).
async fn sender(
    state: &ApiState,
    from: UserId,
    room: Option<&str>,
    to: Option<UserId>,
) -> Result<Arc<str>, ApiError> {
    if !valid_user_id(from) {
        return Err(ApiError::no_user(from));
    }
    let found = state.store.sender(from, room, to).await?;
    let Some(username) = found.username else {
        return Err(ApiError::no_user(from));
    };
    if let (false, Some(room)) = (found.room, room) {
        return Err(ApiError::no_room(room));
    }
    if let (false, Some(to)) = (found.to, to) {
        return Err(ApiError::no_user(to));
    }
    Ok(Arc::from(username))
}

/// A request of the API for a writer: no connection (`origin` unused),
/// answered on its `reply` channel.
fn api_request(
    target: Target,
    from: UserId,
    username: Arc<str>,
    content: String,
    client_id: Option<Box<str>>,
    kind: Kind,
) -> (PersistRequest, tokio::sync::oneshot::Receiver<Outcome>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let request = PersistRequest {
        target,
        from,
        username,
        content,
        origin: Origin { shard: 0, conn: 0 },
        enqueued: Instant::now(),
        reference: None,
        client_id,
        kind,
        reply: Some(tx),
    };
    (request, rx)
}

/// Queues the request on its stream's writer (full or closed: 503) and
/// waits for its outcome, at most `--persist-timeout-ms` and a margin.
async fn commit(
    state: &ApiState,
    (request, reply): (PersistRequest, tokio::sync::oneshot::Receiver<Outcome>),
) -> Result<Outcome, ApiError> {
    let span = debug_span!("api_commit", from = request.from, kind = ?request.kind);
    state.writers.submit(request).map_err(|e| match e {
        SubmitError::Busy | SubmitError::Closed => ApiError::Unavailable(e.to_string()),
    })?;
    let bound = state.config.persist_timeout() + REPLY_MARGIN;
    match tokio::time::timeout(bound, reply).instrument(span).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(_)) | Err(_) => Err(not_stored()),
    }
}

/// A post's answer: 201 with the stored message, 200 with the original
/// for a retried `client_id`.
fn created(outcome: Outcome) -> Result<Response, ApiError> {
    match outcome {
        Outcome::Stored(m) => Ok(json(StatusCode::CREATED, encode_message_data(&m))),
        Outcome::Duplicate(m) => Ok(json(StatusCode::OK, encode_message_data(&m))),
        Outcome::Refused(why) => Err(ApiError::Invalid(why)),
        Outcome::NotStored => Err(not_stored()),
    }
}

/// An edit's or delete's answer: 200 with its event (refused by the
/// writer's re-check, a delete committed first: 404).
fn changed(outcome: Outcome) -> Result<Response, ApiError> {
    match outcome {
        Outcome::Stored(m) | Outcome::Duplicate(m) => {
            Ok(json(StatusCode::OK, encode_message_data(&m)))
        }
        Outcome::Refused(why) => Err(ApiError::NotFound(why)),
        Outcome::NotStored => Err(not_stored()),
    }
}

fn not_stored() -> ApiError {
    ApiError::Unavailable("database unavailable, not stored".to_owned())
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn message_id(p: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    let raw = path(p)?;
    raw.parse::<i64>()
        .map_err(|_| ApiError::Invalid(format!("message id must be an integer, not '{raw}'")))
}
