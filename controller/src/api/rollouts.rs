//! Rollout endpoints: `POST /rollouts` (create), `GET /rollouts`, `GET /rollouts/{id}` (with
//! per-device progress) and `POST /rollouts/{id}/{pause|resume|abort|rollback}`.
//!
//! The create body: `{"compose": "...", "selector": "site=greenhouse" | ["pi-1", "pi-2"] |
//! {"tag": "site=greenhouse"} | {"devices": [...]}, "waves": "1,10%,100%", "max_failures":
//! 2 | "5%", "health_window_s": 60, "apply_timeout_s": 600, "app": "name",
//! "rollback_on_failure": false}`; all but `compose` and `selector` have defaults (waves
//! `1,10%,100%`, 0 failures, 60 s, 600 s, app named after its services, no automatic
//! rollback).

use std::collections::BTreeMap;

use crate::access::Caller;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use coracle_proto::DeviceId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{error_chain, ApiError};
use super::{parse_json, AppState};
use crate::compose::ComposeContext;
use crate::rollout::{CreateRollout, RolloutCommand, RolloutError, RolloutPace};
use crate::store::{RolloutRecord, Selector};

/// `POST /api/v1/rollouts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRolloutRequest {
    /// The app, as docker-compose YAML.
    pub compose: String,
    /// `"key=value"`, a list of device ids, `{"tag": "key=value"}` or `{"devices": [...]}`.
    pub selector: Value,
    #[serde(default = "default_waves")]
    pub waves: String,
    /// A count (`2`, `"2"`) or a percentage of the started devices (`"5%"`).
    #[serde(default = "default_max_failures")]
    pub max_failures: Value,
    #[serde(default = "default_health_window_s")]
    pub health_window_s: u64,
    /// Seconds a device may take from the send to running the new generation (default
    /// 600); its health window starts then. Omitted when unset, for older controllers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_timeout_s: Option<u64>,
    #[serde(default)]
    pub app: Option<String>,
    /// Roll the failing wave back at once when failures pause the rollout.
    #[serde(default)]
    pub rollback_on_failure: bool,
    /// Seccomp profile files the app names (`security_opt: seccomp=FILE`), by the path as
    /// written in it; `coracle deploy` reads them relative to the app file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seccomp_profiles: BTreeMap<String, String>,
    /// What `coracle deploy` read on the client: variable values, env files, profiles.
    #[serde(default, skip_serializing_if = "is_default")]
    pub context: ComposeContext,
}

fn is_default(context: &ComposeContext) -> bool {
    *context == ComposeContext::default()
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

impl From<RolloutError> for ApiError {
    fn from(err: RolloutError) -> Self {
        match err {
            RolloutError::NotFound { id } => ApiError::NotFound {
                what: format!("rollout {id}"),
            },
            RolloutError::Refused { .. }
            | RolloutError::Busy { .. }
            | RolloutError::LeaseLost { .. } => ApiError::Refused {
                message: error_chain(&err),
            },
            RolloutError::Invalid { .. }
            | RolloutError::NoDevices { .. }
            | RolloutError::UnknownDevice { .. } => ApiError::bad_request(err.to_string()),
            RolloutError::Store(err) => err.into(),
            RolloutError::PolicyRefused(refusal) => ApiError::PolicyRefused(refusal),
            RolloutError::Deploy { source, .. } => (*source).into(),
        }
    }
}

fn parse_tag(text: &str) -> Result<Selector, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "selector {text:?} must be a tag key=value or a list of device ids"
        ))
    };
    let (key, value) = text.split_once('=').ok_or_else(bad)?;
    crate::fleet::check_tag(key, value)
        .map_err(|e| ApiError::bad_request(format!("selector: {e}")))?;
    Ok(Selector::Tag {
        key: key.to_string(),
        value: value.to_string(),
    })
}

fn parse_devices(items: &[Value]) -> Result<Selector, ApiError> {
    let mut ids: Vec<DeviceId> = Vec::with_capacity(items.len());
    for item in items {
        let text = item.as_str().ok_or_else(|| {
            ApiError::bad_request(format!("selector: device {item} is not a string"))
        })?;
        let id: DeviceId = text.parse().map_err(|e: coracle_proto::IdError| {
            ApiError::bad_request(format!("selector: device {text:?}: {e}"))
        })?;
        if ids.contains(&id) {
            return Err(ApiError::bad_request(format!(
                "selector names device {id} twice"
            )));
        }
        ids.push(id);
    }
    Ok(Selector::Devices(ids))
}

/// Reads the selector in any of its accepted shapes.
pub fn parse_selector(value: &Value) -> Result<Selector, ApiError> {
    match value {
        Value::String(text) => parse_tag(text),
        Value::Array(items) => parse_devices(items),
        Value::Object(map) => match (map.get("tag"), map.get("devices"), map.len()) {
            (Some(Value::String(text)), None, 1) => parse_tag(text),
            (None, Some(Value::Array(items)), 1) => parse_devices(items),
            _ => Err(ApiError::bad_request(
                "selector object must be {\"tag\": \"key=value\"} or {\"devices\": [ids]}",
            )),
        },
        other => Err(ApiError::bad_request(format!(
            "selector {other} must be a tag key=value or a list of device ids"
        ))),
    }
}

pub fn threshold_text(value: &Value) -> Result<String, ApiError> {
    match value {
        Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        Value::String(text) => Ok(text.clone()),
        other => Err(ApiError::bad_request(format!(
            "max_failures: {other} must be a count (e.g. 2) or a percentage (e.g. \"5%\")"
        ))),
    }
}

/// [`rollout_pace`] of an app or an agent rollout request, which name the same fields.
macro_rules! pace_of {
    ($request:expr) => {
        $crate::api::rollouts::rollout_pace(
            &$request.selector,
            &$request.waves,
            &$request.max_failures,
            $request.health_window_s,
            $request.apply_timeout_s,
            $request.rollback_on_failure,
        )
    };
}
pub(super) use pace_of;

/// The pace of a rollout request (app or agent): its selector and threshold parsed, the
/// apply timeout defaulted.
pub(super) fn rollout_pace(
    selector: &Value,
    waves: &str,
    max_failures: &Value,
    health_window_s: u64,
    apply_timeout_s: Option<u64>,
    rollback_on_failure: bool,
) -> Result<RolloutPace, ApiError> {
    Ok(RolloutPace {
        selector: parse_selector(selector)?,
        waves: waves.to_string(),
        max_failures: threshold_text(max_failures)?,
        health_window_s,
        apply_timeout_s: apply_timeout_s.unwrap_or(crate::store::DEFAULT_APPLY_TIMEOUT_S),
        rollback_on_failure,
    })
}

fn rollout_id(text: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("rollout id {text:?} is not a number")))
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, Json<RolloutRecord>), ApiError> {
    let request: CreateRolloutRequest = parse_json(&body)?;
    let pace = pace_of!(request)?;
    let (file, services, platforms) = super::deploy::pin_app(
        &state,
        &request.compose,
        &request.seccomp_profiles,
        &request.context,
    )
    .await?;
    let app = match request.app.map(|a| a.trim().to_string()) {
        Some(app) if !app.is_empty() => app,
        _ => file.services.keys().cloned().collect::<Vec<_>>().join("+"),
    };
    let detail = format!(
        "app {app}, selector {}, waves {}: {}",
        request.selector,
        request.waves,
        super::audit::images(&services)
    );
    let record = state
        .rollouts
        .create(CreateRollout {
            app,
            compose: request.compose,
            host_network: crate::policy::host_network_services(&file),
            services,
            platforms,
            pace,
        })
        .await?;
    let target = format!("rollout {}", record.id);
    super::audit::record(&state, &caller, "rollout.create", &target, &detail);
    Ok((StatusCode::CREATED, Json(record)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<RolloutRecord>>, ApiError> {
    Ok(Json(state.fleet.store.list_rollouts()?))
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RolloutRecord>, ApiError> {
    let id = rollout_id(&id)?;
    let record = state
        .fleet
        .store
        .rollout(id)?
        .ok_or(RolloutError::NotFound { id })?;
    Ok(Json(record))
}

pub async fn command(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, command)): Path<(String, String)>,
    // Read (and ignore) the body even when refusing: an unread body makes the server drop
    // the connection, which a client that reuses it sees as a failed next request.
    _body: axum::body::Bytes,
) -> Result<Json<RolloutRecord>, ApiError> {
    let id = rollout_id(&id)?;
    let command = RolloutCommand::parse(&command).ok_or_else(|| ApiError::NotFound {
        what: format!("rollout command {command:?} (pause, resume, abort, rollback)"),
    })?;
    let record = state.rollouts.command(id, command).await?;
    let action = format!("rollout.{}", command.as_str());
    super::audit::record(&state, &caller, &action, &format!("rollout {id}"), "");
    Ok(Json(record))
}
