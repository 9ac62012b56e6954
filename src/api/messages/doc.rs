//! The OpenAPI operation objects of the message routes.

use serde_json::{json, Value};

use crate::api::openapi::error;

/// A stored row as its frame's `data` (a room message, a DM, or an edit or
/// delete event).
fn message_schema() -> Value {
    json!({
        "type": "object",
        "description": "The row as the WebSocket frame's `data`: a room message (`room`), a DM (`to`), or an edit (`target`, new `content`) or delete (`target`, `by`: null for the operator) event. A deleted message is a tombstone: `deleted: true`, no `content`.",
        "required": ["id", "timestamp"],
        "properties": {
            "id": { "type": "integer", "description": "Its position in its stream (the room, or the DM pair)." },
            "fromUser": { "type": "integer" },
            "username": { "type": "string" },
            "content": { "type": "string" },
            "timestamp": { "type": "string", "format": "date-time" },
            "room": { "type": "string" },
            "to": { "type": "integer" },
            "target": { "type": "integer", "description": "An edit or delete: the message it changes." },
            "by": { "type": ["integer", "null"], "description": "A delete: who deleted (null: the operator)." },
            "edited_at": { "type": "string", "format": "date-time" },
            "deleted": { "type": "boolean" }
        }
    })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn body(required: &[&str], properties: Value) -> Value {
    json!({
        "required": true,
        "content": { "application/json": { "schema": {
            "type": "object", "required": required, "properties": properties
        } } }
    })
}

fn room_param() -> Value {
    json!({ "name": "room", "in": "path", "required": true, "schema": { "type": "string" }, "description": "The room's name." })
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" }, "description": "The message's id." })
}

fn post_properties(dm: bool) -> Value {
    let mut p = json!({
        "from_user": { "type": "integer", "description": "The sender: an existing user, a member of the room or not (a bot)." },
        "content": { "type": "string", "description": "1 to --max-content characters, no NUL." },
        "client_id": { "type": "string", "maxLength": 64, "description": "Idempotency key, unique per sender: a retry answers the original with 200." }
    });
    if dm {
        p["to"] = json!({ "type": "integer", "description": "The recipient: an existing user." });
    }
    p
}

/// `POST /v1/rooms/{room}/messages`.
pub fn post_room() -> Value {
    json!({
        "summary": "Post a message to a room as a user",
        "description": "Committed by the room's writer, then delivered to the room's members exactly like a client's message (same frame, same order, recovered by `join` with `since`). The operator's authority: the sender need not be a member, and a mute does not stop it.",
        "operationId": "postRoomMessage",
        "parameters": [room_param()],
        "requestBody": body(&["from_user", "content"], post_properties(false)),
        "responses": {
            "201": ok("Stored: the message, with its id.", message_schema()),
            "200": ok("A retried client_id: the original message.", message_schema()),
            "400": error("Invalid body or content (too long, empty, NUL), or an invalid client_id."),
            "401": error("Missing or wrong key."),
            "404": error("No such room or sender."),
            "413": error("Body over --api-max-body."),
            "503": error("The writers are busy or the database is unavailable: not stored.")
        }
    })
}

/// `POST /v1/dms`.
pub fn post_dm() -> Value {
    json!({
        "summary": "Send a direct message as a user",
        "description": "Committed by the DM writer, then delivered to both users exactly like a client's DM (recovered by `dm_sync`).",
        "operationId": "postDm",
        "requestBody": body(&["from_user", "to", "content"], post_properties(true)),
        "responses": {
            "201": ok("Stored: the DM, with its id.", message_schema()),
            "200": ok("A retried client_id: the original DM.", message_schema()),
            "400": error("Invalid body or content, or an invalid client_id."),
            "401": error("Missing or wrong key."),
            "404": error("No such sender or recipient."),
            "413": error("Body over --api-max-body."),
            "503": error("The writers are busy or the database is unavailable: not stored.")
        }
    })
}

/// `GET /v1/rooms/{room}/messages`.
pub fn room_history() -> Value {
    json!({
        "summary": "A room's history",
        "description": "Messages in their current state (edits applied, deleted ones as tombstones), oldest first. Without `after`, the newest `limit` below `before`; with it, the oldest `limit` above it.",
        "operationId": "roomHistory",
        "parameters": [
            room_param(),
            { "name": "before", "in": "query", "schema": { "type": "integer" }, "description": "Only ids below this one." },
            { "name": "after", "in": "query", "schema": { "type": "integer" }, "description": "Only ids above this one (the oldest first)." },
            { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1 }, "description": "At most this many (default --history-default, at most --history-max)." }
        ],
        "responses": {
            "200": ok("The window.", json!({
                "type": "object", "required": ["items"],
                "properties": { "items": { "type": "array", "items": message_schema() } }
            })),
            "400": error("A limit below 1 or above --history-max, or a non-integer bound."),
            "401": error("Missing or wrong key."),
            "404": error("No such room.")
        }
    })
}

/// `PATCH /v1/messages/{id}`.
pub fn edit() -> Value {
    json!({
        "summary": "Edit a message as its author",
        "description": "An edit event in the message's stream, written as its author's (membership and mutes do not restrict the API), delivered as `message_edited`.",
        "operationId": "editMessage",
        "parameters": [id_param()],
        "requestBody": body(&["content"], json!({
            "content": { "type": "string", "description": "The new content: 1 to --max-content characters, no NUL." }
        })),
        "responses": {
            "200": ok("The edit event (its own id, `target` the message).", message_schema()),
            "400": error("Invalid body or content, or a non-integer id."),
            "401": error("Missing or wrong key."),
            "404": error("No such message, or it is deleted."),
            "413": error("Body over --api-max-body."),
            "503": error("The writers are busy or the database is unavailable: not stored.")
        }
    })
}

/// `DELETE /v1/messages/{id}`.
pub fn remove() -> Value {
    json!({
        "summary": "Delete a message (moderation)",
        "description": "A delete event in the message's stream, delivered as `message_deleted`; the content is erased everywhere. A room message's delete is the operator's (`by`: null); a DM's is written as its author's (a DM stream holds only its two users' rows).",
        "operationId": "deleteMessage",
        "parameters": [id_param()],
        "responses": {
            "200": ok("The delete event (its own id, `target` the message).", message_schema()),
            "400": error("A non-integer id."),
            "401": error("Missing or wrong key."),
            "404": error("No such message, or it is deleted already."),
            "503": error("The writers are busy or the database is unavailable: not stored.")
        }
    })
}
