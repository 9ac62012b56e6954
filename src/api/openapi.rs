//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the server API,
//! assembled from the route table ([`super::routes`]), so that every route
//! the server answers is described.

use axum::Json;
use serde_json::{json, Map, Value};

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in super::routes() {
        let entry = paths
            .entry(r.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[r.method.as_str().to_ascii_lowercase()] = r.doc;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "chat_server API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The application backend's door to the chat: users, rooms, members, moderation, messages and the event feed. Every route but this document needs `Authorization: Bearer <key>` (one of CHAT_API_KEYS). Errors are `{\"error\":{\"code\",\"message\"}}`."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": { "type": "string", "enum": ["invalid", "unauthorized", "not_found", "no_route", "conflict", "too_large", "gone", "unavailable"] },
                            "message": { "type": "string" },
                            "oldest": { "type": "integer", "description": "gone: the oldest seq kept" }
                        }
                    } }
                }
            }
        },
        "security": [ { "bearer": [] } ],
        "paths": Value::Object(paths),
    })
}

/// Serves [`document`] (no key needed).
pub async fn serve() -> Json<Value> {
    Json(document())
}

/// A JSON error response, for the operations' `responses`.
pub fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}
