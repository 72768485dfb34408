//! Commands to one service of a device, answered by the device itself:
//! `GET /devices/{id}/services/{svc}/logs?lines=N` and `POST .../restart`.
//! 404 for an unknown device or service, 409 when the device is offline or refuses,
//! 504 when it does not answer in time (10 s for logs, 30 s for a restart).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::Json;
use coracle_proto::{Command, CommandOutcome, DeviceId, ServiceName};
use serde::{Deserialize, Serialize};

use super::devices::device_id;
use super::error::ApiError;
use super::AppState;

/// How long a device gets to answer a log tail: quick on the device, the rest is the link
/// (cellular round trips of a few seconds).
pub const LOGS_TIMEOUT: Duration = Duration::from_secs(10);
/// A restart waits for the container to stop: the agent's stop grace (SIGTERM, 10 s by
/// default, then SIGKILL) plus the start and the link.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines a tail may ask for, and the byte cap sent with it (one protocol body holds it).
const MAX_LINES: u32 = 1000;
const MAX_LOG_BYTES: u32 = 64 * 1024;

/// `?lines=` of the logs endpoint.
#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    pub lines: Option<u32>,
}

/// The last lines of a service's log, as the device sent them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsResponse {
    pub device: String,
    pub service: String,
    pub lines: Vec<String>,
    /// The device cut the tail to fit its byte cap.
    pub truncated: bool,
}

/// The answer to a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestartResponse {
    pub device: String,
    pub service: String,
    pub restarted: bool,
}

/// Checks that the device exists, is online and reports the service.
pub(super) fn target(
    state: &AppState,
    device: &str,
    service: &str,
) -> Result<(DeviceId, ServiceName), ApiError> {
    let id = device_id(device)?;
    let service: ServiceName = service
        .to_string()
        .try_into()
        .map_err(|err: coracle_proto::IdError| ApiError::bad_request(err.to_string()))?;
    let record = state.fleet.store.device(&id)?;
    let reported = state.fleet.store.reported(&id)?;
    let known = reported.is_some_and(|r| r.services.iter().any(|s| s.name == service));
    if !known {
        return Err(ApiError::NotFound {
            what: format!("service {service} on device {id}"),
        });
    }
    if !record.online {
        return Err(ApiError::DeviceOffline {
            device: id.to_string(),
        });
    }
    Ok((id, service))
}

fn refused(device: &DeviceId, outcome: CommandOutcome) -> ApiError {
    let reason = match outcome {
        CommandOutcome::Failed { reason } => reason,
        other => format!("unexpected answer {other:?}"),
    };
    ApiError::CommandFailed {
        device: device.to_string(),
        reason,
    }
}

pub async fn logs(
    State(state): State<AppState>,
    Path((device, service)): Path<(String, String)>,
    Query(query): Query<LogsQuery>,
) -> Result<Json<LogsResponse>, ApiError> {
    let (id, service) = target(&state, &device, &service)?;
    let command = Command::LogsTail {
        service: service.clone(),
        lines: query.lines.unwrap_or(100).clamp(1, MAX_LINES),
        max_bytes: MAX_LOG_BYTES,
    };
    match state.commands.run(&id, command, LOGS_TIMEOUT).await? {
        CommandOutcome::Logs { lines, truncated } => Ok(Json(LogsResponse {
            device: id.to_string(),
            service: service.to_string(),
            lines,
            truncated,
        })),
        other => Err(refused(&id, other)),
    }
}

/// The (empty) body is read so hyper keeps the connection open for the client's next call.
pub async fn restart(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::access::Caller>,
    Path((device, service)): Path<(String, String)>,
    _body: axum::body::Bytes,
) -> Result<Json<RestartResponse>, ApiError> {
    let (id, service) = target(&state, &device, &service)?;
    let command = Command::Restart {
        service: service.clone(),
    };
    match state.commands.run(&id, command, RESTART_TIMEOUT).await? {
        CommandOutcome::Done => {
            tracing::info!(device = %id, service = %service, "service restarted on request");
            let target = format!("{id}/{service}");
            super::audit::record(&state, &caller, "service.restart", &target, "");
            Ok(Json(RestartResponse {
                device: id.to_string(),
                service: service.to_string(),
                restarted: true,
            }))
        }
        other => Err(refused(&id, other)),
    }
}
