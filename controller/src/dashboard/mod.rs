//! The web dashboard, served by the API listener: `/` loads one page whose JavaScript
//! modules (`/assets/…`, embedded by [`assets`]) call the JSON API. Login trades the admin
//! token or an API token for an HttpOnly session cookie (`access::login_sessions`) with that
//! token's scope; every API call is then checked by the same middleware as bearer-token
//! calls. The dashboard depends on the API (state, errors, the bearer check), never the
//! other way round; `server.rs` mounts both routers on the API listener.

pub mod assets;

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::api::{parse_json, ApiError, AppState};

/// Scripts, styles and connections only from this origin; no framing.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'self'";

/// `POST /dashboard/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    token: String,
}

/// The dashboard's routes (merged into the API listener's router).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .with_state(state)
}

fn page(asset: &assets::Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Assets change with the binary; revalidating each load is cheap on a LAN.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    page(&assets::INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match assets::find(&name) {
        Some(asset) => page(asset),
        None => (StatusCode::NOT_FOUND, "no such dashboard file").into_response(),
    }
}

async fn login(
    State(state): State<AppState>,
    extensions: Extensions,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The server (`net::http`) records the peer; a router served otherwise is not limited.
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let now = Instant::now();
    let limit = &state.sessions.logins;
    if peer.is_some_and(|ip| !limit.allows(ip, now)) {
        return Err(ApiError::TooManyRequests {
            what: "failed dashboard logins from this address; wait a minute".into(),
        });
    }
    let request: LoginRequest = parse_json(&body)?;
    let token = request.token.trim();
    let Some(caller) = crate::api::bearer_caller(&state, token)? else {
        if let Some(ip) = peer {
            limit.failed(ip, now);
        }
        tracing::info!(peer = ?peer, "dashboard login refused: wrong token");
        return Err(ApiError::Unauthorized);
    };
    tracing::info!(actor = %caller.actor, scope = %caller.scope, "dashboard login");
    let id = state.sessions.create(caller, Instant::now());
    Ok(with_cookie(
        StatusCode::NO_CONTENT,
        &state.sessions.set_cookie(Some(&id)),
    ))
}

// The body is read (and ignored) so the connection stays usable for the next request.
async fn logout(State(state): State<AppState>, headers: HeaderMap, _body: Bytes) -> Response {
    if let Some(id) = crate::access::login_sessions::session_cookie(&headers) {
        state.sessions.end(&id);
    }
    with_cookie(StatusCode::NO_CONTENT, &state.sessions.set_cookie(None))
}

fn with_cookie(status: StatusCode, cookie: &str) -> Response {
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
