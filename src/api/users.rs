//! The server API's users routes (issue 15):
//!
//! - `PUT /v1/users/{id}`: create or rename a user (`{"username"}`), with
//!   the handshake's username rules and look-alike keys;
//! - `GET /v1/users/{id}`: `{"id","username","online","connections"}`,
//!   counted on every node;
//! - `POST /v1/users/{id}/disconnect`: close its connections everywhere
//!   with 4003 and, with `block_seconds`, refuse its handshakes (403) for
//!   that long (`user.blocked` in the feed);
//! - `DELETE /v1/users/{id}/block`: lift the block (`user.unblocked`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, post, put};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::extract::{path, OptionalJson};
use super::openapi::error;
use super::{tell, ApiError, ApiJson, ApiState, Route};
use crate::auth::check_username;
use crate::protocol::{valid_user_id, UserId, MAX_MUTE_SECONDS};
use crate::store::{PutUser, StoreError};

/// `PUT /v1/users/{id}`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutUserBody {
    /// The username (the handshake's rules).
    pub username: String,
}

/// `POST /v1/users/{id}/disconnect`'s body (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectBody {
    /// Why (kept with the block and its event).
    pub reason: Option<String>,
    /// Refuse the user's handshakes for this long (1 to ten years).
    pub block_seconds: Option<i64>,
}

/// A user id from the path: 400 unless in `1 ..= 2^53-1`.
pub(super) fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse::<UserId>()
        .ok()
        .filter(|id| valid_user_id(*id))
        .ok_or_else(|| ApiError::Invalid(format!("invalid user id '{raw}'")))
}

/// A `reason`: the content rules of a message (length, no NUL).
pub(super) fn check_reason(reason: Option<&str>, max: usize) -> Result<(), ApiError> {
    match reason {
        Some(r) => crate::session::check_content(r, max)
            .map_err(|e| ApiError::Invalid(format!("reason: {e}"))),
        None => Ok(()),
    }
}

/// A duration in seconds: 1 to ten years (the `mute`/`ban` rule).
pub(super) fn check_seconds(field: &str, seconds: Option<i64>) -> Result<(), ApiError> {
    match seconds {
        Some(s) if !(1..=MAX_MUTE_SECONDS).contains(&s) => Err(ApiError::Invalid(format!(
            "`{field}` must be 1 to {MAX_MUTE_SECONDS}"
        ))),
        _ => Ok(()),
    }
}

async fn put_user(
    State(state): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<PutUserBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = user_id(&path(p)?)?;
    check_username(&body.username)
        .map_err(|e| ApiError::Invalid(format!("invalid username: {e}")))?;
    let status = match state.store.put_user(id, &body.username).await {
        Ok(PutUser::Created) => StatusCode::CREATED,
        Ok(PutUser::Updated) => StatusCode::OK,
        Err(StoreError::UsernameTaken) => {
            return Err(ApiError::Conflict(
                "username already taken by another user".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    Ok((status, Json(json!({ "id": id, "username": body.username }))))
}

async fn get_user(
    State(state): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = user_id(&path(p)?)?;
    let username = state
        .store
        .username(id)
        .await?
        .ok_or_else(|| ApiError::no_user(id))?;
    let connections = tell::connections(&state, id).await;
    Ok(Json(json!({
        "id": id,
        "username": username,
        "online": connections > 0,
        "connections": connections,
    })))
}

async fn disconnect(
    State(state): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    OptionalJson(body): OptionalJson<DisconnectBody>,
) -> Result<Json<Value>, ApiError> {
    let id = user_id(&path(p)?)?;
    check_reason(body.reason.as_deref(), state.config.max_content)?;
    check_seconds("block_seconds", body.block_seconds)?;
    // The block first: a handshake that starts after the disconnect order
    // is refused.
    let until = match body.block_seconds {
        Some(seconds) => match state
            .store
            .block_user(id, Some(seconds), body.reason.as_deref())
            .await?
        {
            Some(until) => Some(until),
            None => return Err(ApiError::no_user(id)),
        },
        None => {
            if !state.store.user_exists(id).await? {
                return Err(ApiError::no_user(id));
            }
            None
        }
    };
    let everywhere = tell::disconnect(&state, id).await;
    info!(
        user = id,
        blocked = until.is_some(),
        everywhere,
        "server API: user disconnected"
    );
    let mut answer = json!({ "id": id, "disconnected": true, "blocked": until.is_some() });
    if let Some(Some(until)) = until {
        answer["until"] = json!(until);
    }
    Ok(Json(answer))
}

async fn unblock(
    State(state): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = user_id(&path(p)?)?;
    match state.store.unblock_user(id).await? {
        Some(held) => Ok(Json(json!({ "id": id, "unblocked": held }))),
        None => Err(ApiError::no_user(id)),
    }
}

fn id_param() -> Value {
    json!({
        "name": "id", "in": "path", "required": true,
        "description": "The user's id (1 to 2^53-1), the `sub` of its tokens.",
        "schema": { "type": "integer", "minimum": 1, "maximum": 9007199254740991i64 }
    })
}

fn user_schema() -> Value {
    json!({
        "type": "object",
        "required": ["id", "username"],
        "properties": { "id": { "type": "integer" }, "username": { "type": "string" } }
    })
}

/// The users routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            method: Method::PUT,
            path: "/v1/users/{id}",
            handler: put(put_user),
            doc: json!({
                "summary": "Create a user, or rename it",
                "description": "The username follows the handshake's rules (length, no control, invisible or bidi characters) and must not look like another user's (NFKC, case folding, confusables).",
                "parameters": [id_param()],
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["username"], "additionalProperties": false,
                    "properties": { "username": { "type": "string", "maxLength": 64 } }
                } } } },
                "responses": {
                    "201": { "description": "Created", "content": { "application/json": { "schema": user_schema() } } },
                    "200": { "description": "Renamed (or unchanged)", "content": { "application/json": { "schema": user_schema() } } },
                    "400": error("Invalid id, username or JSON"),
                    "401": error("Missing or wrong key"),
                    "409": error("Username taken by another user (or one that looks like it)"),
                    "413": error("Body over --api-max-body"),
                    "503": error("Database unavailable")
                }
            }),
        },
        Route {
            method: Method::GET,
            path: "/v1/users/{id}",
            handler: get(get_user),
            doc: json!({
                "summary": "A user, whether it is online and how many connections it has (every node)",
                "parameters": [id_param()],
                "responses": {
                    "200": { "description": "The user", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["id", "username", "online", "connections"],
                        "properties": {
                            "id": { "type": "integer" }, "username": { "type": "string" },
                            "online": { "type": "boolean" }, "connections": { "type": "integer" }
                        }
                    } } } },
                    "400": error("Invalid id"),
                    "401": error("Missing or wrong key"),
                    "404": error("No such user"),
                    "503": error("Database unavailable")
                }
            }),
        },
        Route {
            method: Method::POST,
            path: "/v1/users/{id}/disconnect",
            handler: post(disconnect),
            doc: json!({
                "summary": "Close all of the user's connections on every node (close code 4003)",
                "description": "With `block_seconds`, the user's handshakes are refused with 403 until then (`user.blocked` in the feed); `DELETE /v1/users/{id}/block` lifts it. The body may be left out.",
                "parameters": [id_param()],
                "requestBody": { "required": false, "content": { "application/json": { "schema": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "reason": { "type": "string" },
                        "block_seconds": { "type": "integer", "minimum": 1, "maximum": MAX_MUTE_SECONDS }
                    }
                } } } },
                "responses": {
                    "200": { "description": "Disconnected", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["id", "disconnected", "blocked"],
                        "properties": {
                            "id": { "type": "integer" }, "disconnected": { "type": "boolean" },
                            "blocked": { "type": "boolean" },
                            "until": { "type": "string", "format": "date-time" }
                        }
                    } } } },
                    "400": error("Invalid id, reason, block_seconds or JSON"),
                    "401": error("Missing or wrong key"),
                    "404": error("No such user"),
                    "413": error("Body over --api-max-body"),
                    "503": error("Database unavailable")
                }
            }),
        },
        Route {
            method: Method::DELETE,
            path: "/v1/users/{id}/block",
            handler: delete(unblock),
            doc: json!({
                "summary": "Lift the user's block (`user.unblocked` in the feed when one held)",
                "parameters": [id_param()],
                "responses": {
                    "200": { "description": "Done; `unblocked`: a block held", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["id", "unblocked"],
                        "properties": { "id": { "type": "integer" }, "unblocked": { "type": "boolean" } }
                    } } } },
                    "400": error("Invalid id"),
                    "401": error("Missing or wrong key"),
                    "404": error("No such user"),
                    "503": error("Database unavailable")
                }
            }),
        },
    ]
}
