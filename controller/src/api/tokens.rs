//! API tokens: `POST /api/v1/tokens` `{"scope": "read"|"deploy"|"admin", "name": "ci"}`
//! (the secret is in the answer and nowhere else), `GET /api/v1/tokens`,
//! `DELETE /api/v1/tokens/{name}`. All need scope admin.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{audit, parse_json, ApiError, AppState};
use crate::access::{hash_secret, tokens, Caller, Scope};
use crate::store::ApiTokenRecord;

/// The create body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub scope: String,
    /// Default: the scope and 6 random hex digits (`deploy-3fa2c1`).
    #[serde(default)]
    pub name: Option<String>,
}

/// The create answer: the record and the secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: ApiTokenRecord,
    pub token: String,
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let request: CreateTokenRequest = parse_json(&body)?;
    let scope: Scope = request
        .scope
        .parse()
        .map_err(|e| ApiError::bad_request(format!("scope: {e}")))?;
    let name = match request.name {
        Some(name) => name,
        None => format!("{scope}-{}", &crate::secrets::random_token()[..6]),
    };
    tokens::check_name(&name).map_err(ApiError::bad_request)?;
    let secret = tokens::new_secret();
    let record =
        state
            .fleet
            .store
            .create_api_token(&name, scope, &hash_secret(&secret), &caller.actor)?;
    audit::record(
        &state,
        &caller,
        "token.create",
        &name,
        &format!("scope {scope}"),
    );
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            record,
            token: secret,
        }),
    ))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<ApiTokenRecord>>, ApiError> {
    Ok(Json(state.fleet.store.list_api_tokens()?))
}

pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.fleet.store.revoke_api_token(&name)?;
    // Dashboard sessions opened with it end with it.
    let ended = state
        .sessions
        .end_for(&Caller::token(&name, Scope::Read).actor);
    audit::record(
        &state,
        &caller,
        "token.revoke",
        &name,
        &format!("{ended} dashboard sessions ended"),
    );
    Ok(StatusCode::NO_CONTENT)
}
