//! The HTTP JSON API under `/api/v1`, authenticated by the admin token, a named API token
//! (`Authorization: Bearer <token>`) or a dashboard session cookie. One middleware
//! ([`require_token`]) finds the caller, refuses with 403 naming the scope the request needs
//! ([`crate::access::scope::required`]) and hands the caller to handlers (an `Extension`)
//! for the audit log. Handlers parse, call `Fleet`, serialize; errors become responses in
//! `error::ApiError`'s one `IntoResponse` impl.

pub mod admin;
pub mod agent;
pub mod audit;
pub mod commands;
pub mod deploy;
pub mod devices;
pub mod error;
pub mod exec;
pub mod exec_frames;
pub mod images;
pub mod keys;
pub mod logs_stream;
pub mod overview;
pub mod rollouts;
pub mod stream;
pub mod tokens;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::access::Caller;
use crate::fleet::Fleet;
pub use error::{ApiError, ErrorBody};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub fleet: Fleet,
    /// The admin token (rotatable).
    pub admin: crate::access::AdminToken,
    pub counters: std::sync::Arc<crate::metrics::IngestCounters>,
    /// Every stored device message, for the SSE stream.
    pub events: crate::fleet_events::FleetEvents,
    /// The registry, to pin an app's image tags to digests at deploy time.
    pub registry: crate::registry::Registry,
    /// Pulls images of other registries into `registry` at deploy time.
    pub mirror: crate::upstream::Mirror,
    /// Commands to devices, paired with their replies.
    pub commands: crate::commands::DeviceCommands,
    /// Dashboard login sessions (cookie), accepted like the bearer token.
    pub sessions: crate::access::LoginSessions,
    /// Staged rollouts (create and operator commands; the driver task shares it).
    pub rollouts: crate::rollout::Rollouts,
    /// Remote sessions to devices (logs follow, exec).
    pub remote: crate::sessions::DeviceSessions,
}

/// Parses a JSON body, naming what was wrong in a 400.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| ApiError::bad_request(format!("JSON body: {err}")))
}

/// The API routes.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/devices", get(devices::list).post(devices::add))
        .route("/devices/{id}", get(devices::show).delete(devices::remove))
        .route("/devices/{id}/tags", patch(devices::retag))
        .route("/devices/{id}/rotate", post(devices::rotate))
        .route("/devices/{id}/events", get(devices::events))
        .route("/devices/{id}/health", get(devices::health))
        .route("/devices/{id}/deploy", axum::routing::post(deploy::deploy))
        .route("/rollouts", get(rollouts::list).post(rollouts::create))
        .route("/rollouts/{id}", get(rollouts::show))
        .route(
            "/rollouts/{id}/{command}",
            axum::routing::post(rollouts::command),
        )
        .route(
            "/agent/releases",
            get(agent::list)
                .post(agent::publish)
                .layer(axum::extract::DefaultBodyLimit::max(
                    agent::MAX_RELEASE_BYTES,
                )),
        )
        .route("/agent/rollouts", post(agent::rollout))
        .route("/events/stream", get(stream::fleet_events))
        .route("/fleet", get(overview::fleet))
        .route("/metrics", get(device_metrics))
        .route("/images", get(images::list))
        .route("/images/deltas/plan", post(images::plan_deltas))
        .route("/devices/{id}/services/{svc}/logs", get(commands::logs))
        .route(
            "/devices/{id}/services/{svc}/restart",
            post(commands::restart),
        )
        .route(
            "/devices/{id}/services/{svc}/logs/stream",
            get(logs_stream::stream),
        )
        .route("/devices/{id}/services/{svc}/exec", get(exec::exec))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{name}", axum::routing::delete(tokens::revoke))
        .route("/audit", get(audit::list))
        .route("/admin/rotate", post(admin::rotate))
        .route("/admin/keys", get(keys::status))
        .route(
            "/admin/deployment-key/rotate",
            post(admin::rotate_deployment_key),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state.clone());
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .nest("/api/v1", api)
}

async fn metrics(State(state): State<AppState>) -> Result<String, ApiError> {
    Ok(crate::metrics::render(
        &state.fleet.store,
        &state.counters,
        &state.registry.deltas().metrics(),
        state.rollouts.passes(),
    )?)
}

/// Per-device gauges for Prometheus (a scrape job with this API's bearer token).
async fn device_metrics(State(state): State<AppState>) -> Result<String, ApiError> {
    let store = state.fleet.store.clone();
    let text = tokio::task::spawn_blocking(move || {
        crate::device_metrics::render(&store, crate::device_metrics::DEVICE_SERIES_CAP)
    })
    .await
    .map_err(|err| ApiError::Internal {
        what: format!("render device metrics: {err}"),
    })??;
    Ok(text)
}

async fn not_found() -> ApiError {
    ApiError::NotFound {
        what: "API route".into(),
    }
}

/// The caller a bearer token proves: the admin token, or a live named API token.
pub(crate) fn bearer_caller(state: &AppState, token: &str) -> Result<Option<Caller>, ApiError> {
    if state.admin.matches(token) {
        return Ok(Some(Caller::admin()));
    }
    if !token.starts_with(crate::access::tokens::PREFIX) {
        return Ok(None);
    }
    let found = state
        .fleet
        .store
        .api_token_scope(&crate::access::hash_secret(token))?;
    Ok(found.map(|(name, scope)| Caller::token(&name, scope)))
}

async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let caller = match presented {
        Some(token) => bearer_caller(&state, token)?,
        None => None,
    };
    let caller = match caller {
        Some(caller) => caller,
        None => state
            .sessions
            .caller(request.method(), request.headers())
            .ok_or(ApiError::Unauthorized)?,
    };
    let needed = crate::access::scope::required(request.method(), request.uri().path());
    if !caller.scope.allows(needed) {
        return Err(ApiError::Forbidden {
            actor: caller.actor,
            have: caller.scope,
            needed,
            method: request.method().to_string(),
            path: format!("/api/v1{}", request.uri().path()),
        });
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
