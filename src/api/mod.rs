//! The server API (issue 15): the application backend's door, beside the
//! WebSocket door of the clients.
//!
//! - this file: [`spawn`] (its own listener, thread and current-thread
//!   runtime: it is not the hot path), [`ApiState`] (what handlers may
//!   use), the route table ([`routes`]) the router and the OpenAPI
//!   document are both built from, and the bearer-key check;
//! - [`auth`]: the keys (CHAT_API_KEYS), compared in constant time;
//! - [`error`]: [`ApiError`], the one error type (status + JSON body);
//! - [`users`], [`rooms`], [`messages`], [`events`]: the routes, each
//!   calling the same rule functions as the WebSocket `session`
//!   (`rooms::act`, `rooms::decide` in the writer, `Writers::submit`);
//! - [`openapi`]: `GET /v1/openapi.json`, assembled from the routes' own
//!   descriptions;
//! - [`tell`]: what the users and rooms routes tell connections (member
//!   events, disconnects) through the router and the cluster link;
//! - [`extract`]: optional JSON bodies, path and query parameters whose
//!   rejections are [`ApiError`]s.
//!
//! API calls act with the operator's authority: `by` is `None` (shown as
//! `null`), and a stream row the operator writes (a delete, kick or ban)
//! has [`OPERATOR`](crate::protocol::OPERATOR) as its author.

pub mod auth;
pub mod error;
pub mod events;
pub mod extract;
pub mod messages;
pub mod openapi;
pub mod rooms;
pub mod tell;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::MethodRouter;
use tokio::sync::watch;
use tracing::{info, warn};

pub use auth::{ApiKeys, KeysError};
pub use error::ApiError;
pub use extract::ApiJson;

use crate::cluster::ClusterHandle;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::router::Router;
use crate::shard::Phase;
use crate::store::writer::Writers;
use crate::store::Store;
use crate::userlimits::UserLimits;

/// What the API's handlers may use: its own database pool, the writers'
/// submit handle, the shards' router (to tell connections), and the
/// process-wide counts (presence, connections per user). Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// The server's settings.
    pub config: Arc<Config>,
    /// The API's own pool (`--api-db-pool-size`).
    pub store: Store,
    /// Where messages and stream events are committed (the same writers
    /// as the WebSocket door's).
    pub writers: Writers,
    /// The shards' inboxes (member events, disconnects).
    pub router: Router,
    /// Who is online on this node.
    pub presence: Arc<Presence>,
    /// Connections per user on this node.
    pub user_limits: Arc<UserLimits>,
    /// Cluster mode: the other nodes.
    pub cluster: Option<ClusterHandle>,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// The accepted keys.
    pub keys: ApiKeys,
    /// The feed's head for `GET /v1/events?wait=` (one poller for all).
    pub feed: events::HeadWatch,
}

/// One route: its method and path (in OpenAPI's `{param}` syntax, which is
/// axum's too), its handler, and its OpenAPI operation object.
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path, e.g. `/v1/users/{id}`.
    pub path: &'static str,
    /// The handler.
    pub handler: MethodRouter<ApiState>,
    /// The OpenAPI operation object describing it.
    pub doc: serde_json::Value,
}

/// Every route of the API: the router is built from this table and the
/// OpenAPI document describes exactly it (a test checks both ways over
/// HTTP).
pub fn routes() -> Vec<Route> {
    let mut all = Vec::new();
    all.extend(users::routes());
    all.extend(rooms::routes());
    all.extend(messages::routes());
    all.extend(events::routes());
    all
}

/// The API's router: the table's routes behind the key check, the OpenAPI
/// document without it, a JSON 404 for anything else, bodies capped at
/// `--api-max-body`.
pub fn router(state: ApiState) -> axum::Router {
    let mut api = axum::Router::new();
    for r in routes() {
        api = api.route(r.path, r.handler);
    }
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    axum::Router::new()
        .route("/v1/openapi.json", axum::routing::get(openapi::serve))
        .merge(api)
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::NoRoute })
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.api_max_body,
        ))
        .with_state(state)
}

/// Refuses a request without one of the keys (401).
async fn require_key(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !state.keys.authorizes(header) {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}

/// Binds `addr` now (a bad address fails the start) and serves the API
/// on a thread of its own until `phase` leaves `Running`. Returns the
/// bound address and the thread.
pub fn spawn(
    addr: SocketAddr,
    state: ApiState,
    mut phase: watch::Receiver<Phase>,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    crate::service_thread::spawn_listener("api", addr, move |listener, bound| async move {
        info!(addr = %bound, "serving the server API");
        let feed = state.feed.clone();
        let stop = async move {
            crate::service_thread::until_draining(&mut phase).await;
            // Long polls answer now rather than hold the shutdown.
            feed.close();
        };
        if let Err(e) = axum::serve(listener, router(state))
            .with_graceful_shutdown(stop)
            .await
        {
            warn!(error = %e, "server API stopped");
        }
    })
}
