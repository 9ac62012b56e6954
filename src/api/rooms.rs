//! The server API's rooms routes (issue 15):
//!
//! - this file: `POST /v1/rooms` (name, visibility, optional owner:
//!   `store::create_room_as`), `GET /v1/rooms` (paged by name),
//!   `GET /v1/rooms/{room}`, and what the rooms routes share (path
//!   parameters, the refusals' statuses);
//! - [`members`]: members, bans, mutes and the audit log, through the
//!   same rules as the WebSocket door (`rooms::act`, the room's writer for
//!   kicks and bans), with the operator's authority (`by` null).

pub mod members;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{path, query};
use super::openapi::error;
use super::users::user_id;
use super::{tell, ApiError, ApiJson, ApiState, Route};
use crate::protocol::{valid_new_room_name, valid_room_name, UserId};
use crate::rooms::effects::{Audience, Effects};
use crate::rooms::{MuteChange, Refusal, Refused, Visibility};
use crate::store::{AdminCreated, RoomRow};

/// `POST /v1/rooms`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// The new room's name (`create_room`'s rule).
    pub name: String,
    /// `public` (default) or `private`.
    pub visibility: Option<String>,
    /// Its owner, an existing user (none: the room has no owner).
    pub owner: Option<UserId>,
}

/// `GET /v1/rooms`'s query.
#[derive(Debug, Deserialize)]
pub struct RoomsPage {
    /// Rooms named after this one.
    pub after: Option<String>,
    /// At most this many (capped at `--api-page-max`).
    pub limit: Option<i64>,
}

/// A room name from the path: 400 unless a valid name.
pub(super) fn room_name(raw: String) -> Result<String, ApiError> {
    if valid_room_name(&raw) {
        Ok(raw)
    } else {
        Err(ApiError::Invalid(format!("invalid room name '{raw}'")))
    }
}

/// The status of a room access refusal (the operator's: roles never
/// refuse it): 404 for a missing room or user or a target that is not a
/// member, 409 for a state that forbids it (already a member, banned,
/// in too many rooms).
pub(super) fn refused(r: Refused, room: &str, target: UserId) -> ApiError {
    let text = r.message(room, target);
    match r {
        Refused::NoSuchRoom | Refused::NoSuchUser | Refused::Rule(Refusal::TargetNotAMember) => {
            ApiError::NotFound(text)
        }
        Refused::Rule(_) | Refused::Banned | Refused::TooManyRooms(_) => ApiError::Conflict(text),
    }
}

fn room_json(r: &RoomRow) -> Value {
    json!({
        "name": r.name,
        "visibility": r.visibility.as_str(),
        "created_at": r.created_at,
        "members": r.members,
    })
}

async fn create(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<CreateRoom>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !valid_new_room_name(&body.name) {
        return Err(ApiError::Invalid(
            "invalid room name: use 1 to 64 ASCII letters, digits, '-', '_' or '.'".into(),
        ));
    }
    let visibility = match body.visibility.as_deref() {
        None => Visibility::Public,
        Some(v) => Visibility::parse(v).ok_or_else(|| {
            ApiError::Invalid(format!("visibility must be public or private, not '{v}'"))
        })?,
    };
    if let Some(owner) = body.owner {
        user_id(&owner.to_string())?;
    }
    match state
        .store
        .create_room_as(&body.name, visibility, body.owner)
        .await?
    {
        AdminCreated::Created => {}
        AdminCreated::Exists => {
            return Err(ApiError::Conflict(format!(
                "room '{}' already exists",
                body.name
            )))
        }
        AdminCreated::NoSuchOwner => {
            return Err(ApiError::NotFound(format!(
                "user {} does not exist",
                body.owner.unwrap_or(0)
            )))
        }
    }
    if let Some(owner) = body.owner {
        // The owner's connections follow its new room (nothing stored in it yet).
        let fx = Effects {
            joined: Some(0),
            mute: MuteChange::Unchanged,
            frame: None,
            until: None,
            audience: Audience::Room,
        };
        tell::member_effects(&state, &body.name, owner, fx).await;
    }
    let room = state
        .store
        .room(&body.name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("room '{}' does not exist", body.name)))?;
    let mut answer = room_json(&room);
    answer["owner"] = json!(body.owner);
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn list(
    State(state): State<ApiState>,
    q: Result<Query<RoomsPage>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = state
        .config
        .api_page_limit(q.limit)
        .map_err(|e| ApiError::Invalid(e.into()))?;
    let rows = state
        .store
        .rooms_page(q.after.as_deref().unwrap_or(""), limit)
        .await?;
    let items: Vec<Value> = rows.iter().map(room_json).collect();
    Ok(Json(json!({ "items": items })))
}

async fn one(
    State(state): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let room = room_name(path(p)?)?;
    match state.store.room(&room).await? {
        Some(r) => Ok(Json(room_json(&r))),
        None => Err(ApiError::no_room(&room)),
    }
}

/// The `{room}` path parameter.
pub(super) fn room_param() -> Value {
    json!({ "name": "room", "in": "path", "required": true, "description": "The room's name.",
            "schema": { "type": "string", "maxLength": 64 } })
}

/// The paging query parameters (`after` of `after_type`).
pub(super) fn page_params(after: &str, after_type: &str) -> Value {
    json!([
        { "name": "after", "in": "query", "required": false, "description": after,
          "schema": { "type": after_type } },
        { "name": "limit", "in": "query", "required": false,
          "description": "At most this many items (the server's cap applies).",
          "schema": { "type": "integer", "minimum": 1 } }
    ])
}

fn room_schema() -> Value {
    json!({
        "type": "object", "required": ["name", "visibility", "created_at", "members"],
        "properties": {
            "name": { "type": "string" },
            "visibility": { "type": "string", "enum": ["public", "private"] },
            "created_at": { "type": "string", "format": "date-time" },
            "members": { "type": "integer" },
            "owner": { "type": ["integer", "null"] }
        }
    })
}

/// The rooms routes.
pub fn routes() -> Vec<Route> {
    let mut all = vec![
        Route {
            method: Method::POST,
            path: "/v1/rooms",
            handler: post(create),
            doc: json!({
                "summary": "Create a room (with an optional owner)",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["name"], "additionalProperties": false,
                    "properties": {
                        "name": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" },
                        "visibility": { "type": "string", "enum": ["public", "private"], "default": "public" },
                        "owner": { "type": "integer", "description": "An existing user, made the room's owner" }
                    }
                } } } },
                "responses": {
                    "201": { "description": "Created", "content": { "application/json": { "schema": room_schema() } } },
                    "400": error("Invalid name, visibility, owner or JSON"),
                    "401": error("Missing or wrong key"),
                    "404": error("No such owner"),
                    "409": error("A room of that name exists"),
                    "413": error("Body over --api-max-body"),
                    "503": error("Database unavailable")
                }
            }),
        },
        Route {
            method: Method::GET,
            path: "/v1/rooms",
            handler: get(list),
            doc: json!({
                "summary": "Rooms, by name, a page at a time",
                "parameters": page_params("Rooms named after this one", "string"),
                "responses": {
                    "200": { "description": "A page", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["items"],
                        "properties": { "items": { "type": "array", "items": room_schema() } }
                    } } } },
                    "400": error("Invalid limit"),
                    "401": error("Missing or wrong key"),
                    "503": error("Database unavailable")
                }
            }),
        },
        Route {
            method: Method::GET,
            path: "/v1/rooms/{room}",
            handler: get(one),
            doc: json!({
                "summary": "A room",
                "parameters": [room_param()],
                "responses": {
                    "200": { "description": "The room", "content": { "application/json": { "schema": room_schema() } } },
                    "400": error("Invalid room name"),
                    "401": error("Missing or wrong key"),
                    "404": error("No such room"),
                    "503": error("Database unavailable")
                }
            }),
        },
    ];
    all.extend(members::routes());
    all
}
