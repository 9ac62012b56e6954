//! The server API's one error type: every refusal renders a status and
//! `{"error":{"code","message"}}`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// Why an API request was not done. Each variant is one status and one
/// `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid`: a malformed or invalid request (content too long included).
    #[error("{0}")]
    Invalid(String),
    /// 401 `unauthorized`: no key, or not one of CHAT_API_KEYS.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// 404 `not_found`: the room, user or message does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 404 `no_route`: no such route (the path or its method).
    #[error("no such route")]
    NoRoute,
    /// 409 `conflict`: it exists already, or the username is taken.
    #[error("{0}")]
    Conflict(String),
    /// 413 `too_large`: a body over `--api-max-body`.
    #[error("request body larger than --api-max-body")]
    TooLarge,
    /// 410 `gone`: feed events older than retention kept.
    #[error("events after {after} are gone; the oldest kept is {oldest}")]
    Gone {
        /// What was asked for.
        after: i64,
        /// The oldest seq kept.
        oldest: i64,
    },
    /// 503 `unavailable`: the database (or the writers) cannot serve now.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// 404: room `room` does not exist (or is not one the API can name).
    pub fn no_room(room: &str) -> ApiError {
        ApiError::NotFound(format!("room '{room}' does not exist"))
    }

    /// 404: user `user` does not exist.
    pub fn no_user(user: crate::protocol::UserId) -> ApiError {
        ApiError::NotFound(format!("user {user} does not exist"))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `code` of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::NoRoute => "no_route",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge => "too_large",
            ApiError::Gone { .. } => "gone",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        if let ApiError::Gone { oldest, .. } = self {
            error["oldest"] = json!(oldest);
        }
        let mut response = (self.status(), axum::Json(json!({ "error": error }))).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::warn!(error = %e, "server API: database error");
        ApiError::Unavailable("database unavailable".to_owned())
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> ApiError {
        ApiError::from(StoreError::from(e))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::TooLarge;
        }
        ApiError::Invalid(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::Invalid(r.body_text())
    }
}
