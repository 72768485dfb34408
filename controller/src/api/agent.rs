//! Agent release and agent rollout endpoints:
//!
//! - `GET /agent/releases`: every release, one row per platform build.
//! - `POST /agent/releases?version=V&platform=P` with the binary as the body: checks and
//!   stores it (`agent_release`); both parameters are optional (the version stamp in the
//!   binary, the platform of its ELF header).
//! - `POST /agent/rollouts`: `{"version": "0.2.0", "selector": ..., "waves": ...,
//!   "max_failures": ..., "health_window_s": 60, "apply_timeout_s": 600,
//!   "rollback_on_failure": false}`, the same fields and defaults as `POST /rollouts`; the
//!   rollout is then listed and driven with the other rollouts.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{error_chain, ApiError};
use super::{parse_json, AppState};
use crate::access::Caller;
use crate::agent_release::{AgentReleases, Release, ReleaseError};
use crate::rollout::CreateAgentRollout;
use crate::store::RolloutRecord;

/// Largest agent binary accepted.
pub const MAX_RELEASE_BYTES: usize = 256 << 20;

fn releases(state: &AppState) -> AgentReleases {
    AgentReleases::new(state.registry.clone())
}

impl From<ReleaseError> for ApiError {
    fn from(err: ReleaseError) -> Self {
        match err {
            ReleaseError::Build(_) | ReleaseError::Registry(_) | ReleaseError::Damaged { .. } => {
                ApiError::Internal {
                    what: error_chain(&err),
                }
            }
            _ => ApiError::bad_request(err.to_string()),
        }
    }
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Release>>, ApiError> {
    Ok(Json(releases(&state).list()?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseQuery {
    pub version: Option<String>,
    pub platform: Option<String>,
}

pub async fn publish(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ReleaseQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<Release>), ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the body must be the agent binary"));
    }
    let keys = state.fleet.deployment_keys();
    let release = releases(&state)
        .publish(
            &body,
            query.version.as_deref(),
            query.platform.as_deref(),
            |release| keys.sign_with(|key| crate::agent_release::sign_release(release, key)),
        )
        .await?;
    let detail = format!("{} {} {}", release.platform, release.binary, release.size);
    let target = format!("agent {}", release.version);
    super::audit::record(&state, &caller, "agent.release", &target, &detail);
    Ok((StatusCode::CREATED, Json(release)))
}

/// `POST /api/v1/agent/rollouts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRolloutRequest {
    pub version: String,
    pub selector: Value,
    #[serde(default = "default_waves")]
    pub waves: String,
    #[serde(default = "default_max_failures")]
    pub max_failures: Value,
    #[serde(default = "default_health_window_s")]
    pub health_window_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_timeout_s: Option<u64>,
    #[serde(default)]
    pub rollback_on_failure: bool,
}

fn default_waves() -> String {
    "1,10%,100%".into()
}

fn default_max_failures() -> Value {
    Value::from(0)
}

fn default_health_window_s() -> u64 {
    60
}

pub async fn rollout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, Json<RolloutRecord>), ApiError> {
    let request: CreateAgentRolloutRequest = parse_json(&body)?;
    let pace = super::rollouts::pace_of!(request)?;
    let detail = format!(
        "agent {}, selector {}, waves {}",
        request.version, request.selector, request.waves
    );
    let record = state
        .rollouts
        .create_agent(CreateAgentRollout {
            version: request.version,
            pace,
        })
        .await?;
    let target = format!("rollout {}", record.id);
    super::audit::record(&state, &caller, "rollout.create", &target, &detail);
    Ok((StatusCode::CREATED, Json(record)))
}
