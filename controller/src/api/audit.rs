//! `GET /api/v1/audit?limit=N` (newest first, default 100, at most 1000) and [`record`],
//! which handlers call after an action succeeded.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::access::Caller;
use crate::store::AuditEntry;

/// `?limit=`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    pub limit: Option<u32>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(state.fleet.store.audit_entries(limit)?))
}

/// Appends an audit entry for an action that already happened. The action stands even if
/// the entry cannot be written (the disk is the likely cause, and the log says so).
pub fn record(state: &AppState, caller: &Caller, action: &str, target: &str, detail: &str) {
    if let Err(err) = state
        .fleet
        .store
        .record_audit(&caller.actor, action, target, detail)
    {
        tracing::error!(
            actor = %caller.actor,
            action,
            target,
            error = super::error::error_chain(&err),
            "cannot write the audit log"
        );
    }
}

/// The images of an app, for a deploy's or rollout's audit detail: `svc=image, …`.
pub fn images(services: &[coracle_proto::ServiceSpec]) -> String {
    services
        .iter()
        .map(|s| format!("{}={}", s.name, s.image))
        .collect::<Vec<_>>()
        .join(", ")
}
