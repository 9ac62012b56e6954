//! The API's extractors, whose rejections are [`ApiError`]s (JSON bodies,
//! never axum's plain text): [`ApiJson`], a JSON body; [`OptionalJson`],
//! a JSON body that may be left out (`PUT /v1/rooms/{room}/bans/{user}`
//! with no body bans until unbanned), and [`path`] / [`query`], which turn
//! a path or query rejection into a 400.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A JSON body whose rejection is an [`ApiError`] (400, or 413 past
/// `--api-max-body`).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

/// A JSON body, or `T::default()` when the request has none. Its
/// rejection is an [`ApiError`]: 400 for a body that is not `T`, 413 past
/// `--api-max-body`.
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::Invalid(r.body_text())
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJson)
            .map_err(|e| ApiError::Invalid(format!("invalid JSON body: {e}")))
    }
}

/// The path's parameters, or 400.
pub fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t)
        .map_err(|r| ApiError::Invalid(r.body_text()))
}

/// The query's parameters, or 400.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(ApiError::from)
}
