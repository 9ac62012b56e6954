//! Members, bans, mutes and the audit log of a room, through the server
//! API (issue 15), with the operator's authority (`by` null):
//!
//! - `PUT /v1/rooms/{room}/members/{user}` (`{"role"?}`): an invitation
//!   then a role, each through `rooms::act`, told to connections as the
//!   WebSocket door tells them (`rooms::effects`, `api::tell`);
//! - `DELETE /v1/rooms/{room}/members/{user}` and
//!   `PUT /v1/rooms/{room}/bans/{user}`: a kick or ban committed by the
//!   room's writer in the room's stream (`Kind::Member`, author
//!   [`OPERATOR`]), which every shard applies like a WebSocket kick;
//! - `DELETE .../bans/{user}`, `PUT|DELETE .../mutes/{user}`: `rooms::act`;
//! - `GET .../members` (`Store::members`) and `GET .../moderation` (the
//!   audit log), paged.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{delete, get, put};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::super::extract::{path, query, OptionalJson};
use super::super::openapi::error;
use super::super::users::{check_reason, check_seconds, user_id};
use super::super::{tell, ApiError, ApiState, Route};
use super::{page_params, refused, room_name, room_param};
use crate::protocol::{Kind, StoredMessage, Target, UserId, MAX_MUTE_SECONDS, OPERATOR};
use crate::rooms::{self, Refusal, Refused, Role};
use crate::router::Origin;
use crate::store::writer::{Outcome, PersistRequest};
use crate::store::{Applied, Change};

/// `PUT .../members/{user}`'s body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutMember {
    /// `member` (default), `moderator` or `owner`.
    pub role: Option<String>,
}

/// The body of a kick, a ban or a mute (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sanction {
    /// How long a ban or mute lasts (none: until lifted; ignored by a kick).
    pub seconds: Option<i64>,
    /// Why (the content rules of a message).
    pub reason: Option<String>,
}

/// A page of members (`after`: a user id) or of the audit log (`after`:
/// an entry's id).
#[derive(Debug, Deserialize)]
pub struct IdPage {
    /// Items after this id.
    pub after: Option<i64>,
    /// At most this many.
    pub limit: Option<i64>,
}

type RoomUser = Result<Path<(String, String)>, PathRejection>;

fn room_user(p: RoomUser) -> Result<(String, UserId), ApiError> {
    let (room, user) = path(p)?;
    Ok((room_name(room)?, user_id(&user)?))
}

/// `rooms::act` as the operator (with its reason, if any), then tells
/// connections what changed (as the WebSocket door does); a refusal
/// becomes its status.
async fn act_and_tell(
    state: &ApiState,
    room: &str,
    user: UserId,
    change: Change,
    reason: Option<&str>,
) -> Result<Applied, ApiError> {
    let max = state.config.max_rooms_per_user;
    let applied = rooms::act_because(&state.store, room, None, user, change, reason, max)
        .await?
        .map_err(|r| refused(r, room, user))?;
    let fx = rooms::effects::of(room, None, user, change, applied);
    tell::member_effects(state, room, user, fx).await;
    Ok(applied)
}

/// A kick or ban, committed by the room's writer in the room's stream
/// (which checks it with `rooms::decide`, operator authority): the stored
/// row, or 404 (no such room or user, a kick of a non-member), 503.
async fn by_writer(
    state: &ApiState,
    room: &str,
    user: UserId,
    ban: bool,
    s: Sanction,
) -> Result<StoredMessage, ApiError> {
    check_reason(s.reason.as_deref(), state.config.max_content)?;
    check_seconds("seconds", s.seconds)?;
    // The writer's stream rows need an existing room (a WebSocket kick
    // comes from a member, so its room exists; rooms are never deleted).
    existing_room(state, room).await?;
    let (tx, rx) = oneshot::channel();
    let request = PersistRequest {
        target: Target::Room(Arc::from(room)),
        from: OPERATOR,
        username: Arc::from(""),
        content: s.reason.unwrap_or_default(),
        // Unused: the outcome comes back on `reply`.
        origin: Origin { shard: 0, conn: 0 },
        enqueued: Instant::now(),
        reference: None,
        client_id: None,
        kind: Kind::Member {
            user,
            ban,
            seconds: if ban { s.seconds } else { None },
        },
        reply: Some(tx),
    };
    state
        .writers
        .submit(request)
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    match rx.await {
        Ok(Outcome::Stored(m) | Outcome::Duplicate(m)) => Ok(m),
        Ok(Outcome::Refused(text)) => Err(ApiError::NotFound(text)),
        Ok(Outcome::NotStored) | Err(_) => Err(ApiError::Unavailable(
            "not stored: database unavailable".into(),
        )),
    }
}

/// The member's role now (`None`: not a member).
async fn role_of(state: &ApiState, room: &str, user: UserId) -> Result<Option<Role>, ApiError> {
    let rows = state.store.members(room, user - 1, 1).await?;
    Ok(rows.first().filter(|m| m.user == user).map(|m| m.role))
}

async fn put_member(
    State(state): State<ApiState>,
    p: RoomUser,
    OptionalJson(body): OptionalJson<PutMember>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (room, user) = room_user(p)?;
    let role = match body.role.as_deref() {
        None => None,
        Some(r) => Some(Role::parse(r).ok_or_else(|| {
            ApiError::Invalid(format!(
                "role must be member, moderator or owner, not '{r}'"
            ))
        })?),
    };
    let max = state.config.max_rooms_per_user;
    let created = match rooms::act(&state.store, &room, None, user, Change::Invite, max).await? {
        Ok(applied) => {
            let fx = rooms::effects::of(&room, None, user, Change::Invite, applied);
            tell::member_effects(&state, &room, user, fx).await;
            true
        }
        Err(Refused::Rule(Refusal::AlreadyAMember)) => false,
        Err(r) => return Err(refused(r, &room, user)),
    };
    if let Some(role) = role.filter(|r| !created || *r != Role::Member) {
        act_and_tell(&state, &room, user, Change::SetRole(role), None).await?;
    }
    let role = role_of(&state, &room, user).await?.unwrap_or(Role::Member);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "room": room, "user": user, "role": role.as_str() })),
    ))
}

async fn kick(
    State(state): State<ApiState>,
    p: RoomUser,
    OptionalJson(body): OptionalJson<Sanction>,
) -> Result<Json<Value>, ApiError> {
    let (room, user) = room_user(p)?;
    let row = by_writer(&state, &room, user, false, body).await?;
    Ok(Json(
        json!({ "room": room, "user": user, "kicked": true, "id": row.id }),
    ))
}

async fn ban(
    State(state): State<ApiState>,
    p: RoomUser,
    OptionalJson(body): OptionalJson<Sanction>,
) -> Result<Json<Value>, ApiError> {
    let (room, user) = room_user(p)?;
    let row = by_writer(&state, &room, user, true, body).await?;
    Ok(Json(json!({
        "room": room, "user": user, "banned": true, "id": row.id, "until": row.edited_at,
    })))
}

async fn unban(State(state): State<ApiState>, p: RoomUser) -> Result<Json<Value>, ApiError> {
    let (room, user) = room_user(p)?;
    if !state.store.user_exists(user).await? {
        return Err(ApiError::no_user(user));
    }
    let changed = match act_and_tell(&state, &room, user, Change::Unban, None).await? {
        Applied::Unbanned { changed } => changed,
        _ => false,
    };
    Ok(Json(
        json!({ "room": room, "user": user, "unbanned": changed }),
    ))
}

async fn mute(
    State(state): State<ApiState>,
    p: RoomUser,
    OptionalJson(body): OptionalJson<Sanction>,
) -> Result<Json<Value>, ApiError> {
    let (room, user) = room_user(p)?;
    check_reason(body.reason.as_deref(), state.config.max_content)?;
    check_seconds("seconds", body.seconds)?;
    let until = match act_and_tell(
        &state,
        &room,
        user,
        Change::Mute(body.seconds),
        body.reason.as_deref(),
    )
    .await?
    {
        Applied::Muted(m) => m.until,
        _ => None,
    };
    Ok(Json(
        json!({ "room": room, "user": user, "muted": true, "until": until }),
    ))
}

async fn unmute(State(state): State<ApiState>, p: RoomUser) -> Result<Json<Value>, ApiError> {
    let (room, user) = room_user(p)?;
    let changed = match act_and_tell(&state, &room, user, Change::Unmute, None).await? {
        Applied::Unmuted { changed } => changed,
        _ => false,
    };
    Ok(Json(
        json!({ "room": room, "user": user, "unmuted": changed }),
    ))
}

/// 404 unless the room exists.
async fn existing_room(state: &ApiState, room: &str) -> Result<(), ApiError> {
    if state.store.room_exists(room).await? {
        Ok(())
    } else {
        Err(ApiError::no_room(room))
    }
}

async fn members(
    State(state): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<IdPage>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let room = room_name(path(p)?)?;
    let q = query(q)?;
    let limit = state
        .config
        .members_limit(q.limit)
        .map_err(|e| ApiError::Invalid(e.into()))?;
    existing_room(&state, &room).await?;
    let rows = state
        .store
        .members(&room, q.after.unwrap_or(0), limit)
        .await?;
    let now = Utc::now();
    let items: Vec<Value> = rows
        .into_iter()
        .map(|m| {
            let mute = m.mute.filter(|m| m.active_at(now));
            json!({
                "user": m.user,
                "username": m.username,
                "role": m.role.as_str(),
                "muted": mute.is_some(),
                "muted_until": mute.and_then(|m| m.until),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn moderation(
    State(state): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<IdPage>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let room = room_name(path(p)?)?;
    let q = query(q)?;
    let limit = state
        .config
        .api_page_limit(q.limit)
        .map_err(|e| ApiError::Invalid(e.into()))?;
    existing_room(&state, &room).await?;
    let rows = state
        .store
        .audit_page(&room, q.after.unwrap_or(0), limit)
        .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|a| {
            json!({
                "id": a.id, "action": a.action, "user": a.user, "by": a.by,
                "role": a.role, "reason": a.reason, "until": a.until,
                "message": a.message, "at": a.at,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

fn user_param() -> Value {
    json!({ "name": "user", "in": "path", "required": true, "description": "The user's id.",
            "schema": { "type": "integer", "minimum": 1 } })
}

fn sanction_body(what: &str) -> Value {
    json!({ "required": false, "content": { "application/json": { "schema": {
        "type": "object", "additionalProperties": false,
        "properties": {
            "seconds": { "type": "integer", "minimum": 1, "maximum": MAX_MUTE_SECONDS,
                         "description": format!("How long the {what} lasts (none: until lifted)") },
            "reason": { "type": "string" }
        }
    } } } })
}

fn ok(description: &str, properties: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": {
        "type": "object", "properties": properties
    } } } })
}

fn op(summary: &str, extra: Value, responses: Value) -> Value {
    let mut doc = json!({
        "summary": summary,
        "parameters": [room_param(), user_param()],
        "responses": responses,
    });
    if let (Some(doc), Some(extra)) = (doc.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            doc.insert(k.clone(), v.clone());
        }
    }
    doc
}

fn errors(mut ok: serde_json::Map<String, Value>, conflict: Option<&str>) -> Value {
    ok.insert("400".into(), error("Invalid room, user, body or JSON"));
    ok.insert("401".into(), error("Missing or wrong key"));
    ok.insert(
        "404".into(),
        error("No such room or user (or, for a change to a member, not a member)"),
    );
    if let Some(c) = conflict {
        ok.insert("409".into(), error(c));
    }
    ok.insert("413".into(), error("Body over --api-max-body"));
    ok.insert("503".into(), error("Database unavailable"));
    Value::Object(ok)
}

fn responses(pairs: &[(&str, Value)], conflict: Option<&str>) -> Value {
    let map = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    errors(map, conflict)
}

fn list_doc(summary: &str, after: &str, item: Value) -> Value {
    let mut params = vec![room_param()];
    if let Some(p) = page_params(after, "integer").as_array() {
        params.extend(p.iter().cloned());
    }
    json!({
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": { "description": "A page", "content": { "application/json": { "schema": {
                "type": "object", "required": ["items"],
                "properties": { "items": { "type": "array", "items": item } }
            } } } },
            "400": error("Invalid room name or limit"),
            "401": error("Missing or wrong key"),
            "404": error("No such room"),
            "503": error("Database unavailable")
        }
    })
}

/// The members, bans, mutes and audit log routes.
pub fn routes() -> Vec<Route> {
    let member = json!({ "room": { "type": "string" }, "user": { "type": "integer" },
                         "role": { "type": "string", "enum": ["member", "moderator", "owner"] } });
    vec![
        Route {
            method: Method::PUT,
            path: "/v1/rooms/{room}/members/{user}",
            handler: put(put_member),
            doc: op(
                "Add a user to a room (an invitation: private rooms too), with a role",
                json!({ "requestBody": { "required": false, "content": { "application/json": { "schema": {
                    "type": "object", "additionalProperties": false,
                    "properties": { "role": { "type": "string", "enum": ["member", "moderator", "owner"] } }
                } } } } }),
                responses(
                    &[
                        ("201", ok("Added", member.clone())),
                        ("200", ok("Was a member (its role set if given)", member)),
                    ],
                    Some("The user is banned from the room, or in too many rooms"),
                ),
            ),
        },
        Route {
            method: Method::DELETE,
            path: "/v1/rooms/{room}/members/{user}",
            handler: delete(kick),
            doc: op(
                "Kick a member: ordered in the room's stream; its connections stop following the room",
                json!({ "requestBody": sanction_body("kick") }),
                responses(
                    &[(
                        "200",
                        ok("Kicked", json!({ "id": { "type": "integer", "description": "The kick's position in the room's stream" } })),
                    )],
                    None,
                ),
            ),
        },
        Route {
            method: Method::GET,
            path: "/v1/rooms/{room}/members",
            handler: get(members),
            doc: list_doc(
                "A room's members, by user id",
                "Members with user ids above this one",
                json!({ "type": "object", "properties": {
                    "user": { "type": "integer" }, "username": { "type": "string" },
                    "role": { "type": "string" }, "muted": { "type": "boolean" },
                    "muted_until": { "type": ["string", "null"], "format": "date-time" }
                } }),
            ),
        },
        Route {
            method: Method::PUT,
            path: "/v1/rooms/{room}/bans/{user}",
            handler: put(ban),
            doc: op(
                "Ban a user (member or not): ordered in the room's stream; refused joins until it ends",
                json!({ "requestBody": sanction_body("ban") }),
                responses(
                    &[(
                        "200",
                        ok("Banned", json!({ "id": { "type": "integer" }, "until": { "type": ["string", "null"] } })),
                    )],
                    None,
                ),
            ),
        },
        Route {
            method: Method::DELETE,
            path: "/v1/rooms/{room}/bans/{user}",
            handler: delete(unban),
            doc: op(
                "Lift a user's ban",
                json!({}),
                responses(
                    &[("200", ok("Done; `unbanned`: a ban held", json!({ "unbanned": { "type": "boolean" } })))],
                    None,
                ),
            ),
        },
        Route {
            method: Method::PUT,
            path: "/v1/rooms/{room}/mutes/{user}",
            handler: put(mute),
            doc: op(
                "Mute a member: its messages to the room are refused until it ends",
                json!({ "requestBody": sanction_body("mute") }),
                responses(
                    &[("200", ok("Muted", json!({ "until": { "type": ["string", "null"] } })))],
                    None,
                ),
            ),
        },
        Route {
            method: Method::DELETE,
            path: "/v1/rooms/{room}/mutes/{user}",
            handler: delete(unmute),
            doc: op(
                "Lift a member's mute",
                json!({}),
                responses(
                    &[("200", ok("Done; `unmuted`: a mute held", json!({ "unmuted": { "type": "boolean" } })))],
                    None,
                ),
            ),
        },
        Route {
            method: Method::GET,
            path: "/v1/rooms/{room}/moderation",
            handler: get(moderation),
            doc: list_doc(
                "A room's audit log (invitations, roles, mutes, kicks, bans), oldest first",
                "Entries after this id",
                json!({ "type": "object", "properties": {
                    "id": { "type": "integer" }, "action": { "type": "string" },
                    "user": { "type": "integer" }, "by": { "type": ["integer", "null"] },
                    "role": { "type": ["string", "null"] }, "reason": { "type": ["string", "null"] },
                    "until": { "type": ["string", "null"] }, "message": { "type": ["integer", "null"] },
                    "at": { "type": "string", "format": "date-time" }
                } }),
            ),
        },
    ]
}
