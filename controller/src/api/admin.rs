//! `POST /api/v1/admin/rotate`: a new admin token replaces the old one at once (file and
//! memory); every dashboard session ends. Device pull tokens are keyed by the separate pull
//! key (`pull.key`), so devices keep pulling. The answer carries the new token.
//!
//! `POST /api/v1/admin/deployment-key/rotate`: a new deployment signing key (see
//! `deployment_keys`); the answer says its epoch, id and how many stored states were
//! signed again.

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{audit, ApiError, AppState};
use crate::access::Caller;

/// The answer: the new admin token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotatedAdmin {
    pub token: String,
    /// Dashboard sessions that were ended.
    pub sessions_ended: usize,
}

/// The (empty) body is read so the connection stays usable.
pub async fn rotate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    _body: axum::body::Bytes,
) -> Result<Json<RotatedAdmin>, ApiError> {
    let token = state.admin.rotate().map_err(|e| ApiError::Internal {
        what: format!("rotate the admin token: {}", super::error::error_chain(&e)),
    })?;
    let sessions_ended = state.sessions.end_all();
    tracing::info!(sessions_ended, "admin token rotated");
    audit::record(
        &state,
        &caller,
        "admin.rotate",
        "admin token",
        &format!("{sessions_ended} dashboard sessions ended"),
    );
    Ok(Json(RotatedAdmin {
        token,
        sessions_ended,
    }))
}

/// The (empty) body is read so the connection stays usable.
pub async fn rotate_deployment_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    _body: axum::body::Bytes,
) -> Result<Json<crate::deployment_keys::Rotated>, ApiError> {
    let rotated = state
        .fleet
        .rotate_deployment_key()
        .await
        .map_err(|e| ApiError::Internal {
            what: format!(
                "rotate the deployment key: {}",
                super::error::error_chain(&e)
            ),
        })?;
    audit::record(
        &state,
        &caller,
        "deployment_key.rotate",
        &format!("deployment key {}", rotated.key_id),
        &format!(
            "epoch {}, {} desired states signed again, {} left",
            rotated.epoch, rotated.resigned, rotated.skipped
        ),
    );
    Ok(Json(rotated))
}
