//! Device endpoints: enrol, list, show, retag, remove. Handlers parse, call `Fleet`,
//! serialize.

use std::collections::BTreeMap;

use crate::access::Caller;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use coracle_proto::{Bootstrap, DeviceId, ReportedState};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{parse_json, AppState};
use crate::store::{DeviceRecord, HealthPoint, StoredEvent};

/// `POST /api/v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDeviceRequest {
    pub id: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The answer to an enrolment: the record and the bootstrap bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddDeviceResponse {
    pub device: DeviceRecord,
    pub bootstrap: Bootstrap,
    /// The bootstrap file as the agent reads it (TOML), for clients that only save it
    /// (the dashboard's download).
    #[serde(default)]
    pub bootstrap_toml: String,
}

/// `PATCH /api/v1/devices/{id}/tags`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetagRequest {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `GET /api/v1/devices/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceDetail {
    pub device: DeviceRecord,
    pub reported: Option<ReportedState>,
    /// The layer the device is pulling, while it pulls (null otherwise).
    #[serde(default)]
    pub pull_progress: Option<crate::store::LatestProgress>,
}

/// `?limit=` of the events endpoint.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub limit: Option<u32>,
}

pub(super) fn device_id(text: &str) -> Result<DeviceId, ApiError> {
    text.parse()
        .map_err(|err: coracle_proto::IdError| ApiError::bad_request(err.to_string()))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<DeviceRecord>>, ApiError> {
    Ok(Json(state.fleet.store.list_devices()?))
}

pub async fn add(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, Json<AddDeviceResponse>), ApiError> {
    let request: AddDeviceRequest = parse_json(&body)?;
    let id = device_id(&request.id)?;
    let bootstrap = state.fleet.add_device(id.clone(), request.tags).await?;
    let device = state.fleet.store.device(&id)?;
    super::audit::record(&state, &caller, "device.add", id.as_str(), "");
    let bootstrap_toml = toml::to_string(&bootstrap).map_err(|err| ApiError::Internal {
        what: format!("encode the bootstrap file: {err}"),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(AddDeviceResponse {
            device,
            bootstrap,
            bootstrap_toml,
        }),
    ))
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let id = device_id(&id)?;
    let device = state.fleet.store.device(&id)?;
    let reported = state.fleet.store.reported(&id)?;
    let pull_progress = state.fleet.store.progress.latest(&id);
    Ok(Json(DeviceDetail {
        device,
        reported,
        pull_progress,
    }))
}

pub async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = device_id(&id)?;
    state.fleet.remove_device(&id).await?;
    super::audit::record(&state, &caller, "device.rm", id.as_str(), "");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/devices/{id}/rotate`: a new broker password, confirmed by the device
/// before the old one is revoked (`device_rotation`). The (empty) body is read so the
/// connection stays usable.
pub async fn rotate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    _body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::device_rotation::RotationError;
    let id = device_id(&id)?;
    match crate::device_rotation::rotate(&state.fleet, &state.commands, &id).await {
        Ok(()) => {
            super::audit::record(
                &state,
                &caller,
                "device.rotate",
                id.as_str(),
                "broker password",
            );
            Ok(Json(
                serde_json::json!({ "device": id.as_str(), "rotated": true }),
            ))
        }
        Err(RotationError::Store(err)) => Err(err.into()),
        Err(
            err @ (RotationError::Seal(crate::device_seal::DeviceSealError::Seal { .. })
            | RotationError::Access { .. }),
        ) => Err(ApiError::Internal {
            what: super::error::error_chain(&err),
        }),
        Err(err) => Err(ApiError::Refused {
            message: super::error::error_chain(&err),
        }),
    }
}

pub async fn retag(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<DeviceRecord>, ApiError> {
    let id = device_id(&id)?;
    let request: RetagRequest = parse_json(&body)?;
    let record = state
        .fleet
        .retag_device(&id, &request.set, &request.remove)?;
    let set: Vec<String> = request
        .set
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let detail = format!(
        "set [{}] removed [{}]",
        set.join(", "),
        request.remove.join(", ")
    );
    super::audit::record(&state, &caller, "device.tag", id.as_str(), &detail);
    Ok(Json(record))
}

pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Vec<StoredEvent>>, ApiError> {
    let id = device_id(&id)?;
    state.fleet.store.device(&id)?;
    let limit = query.limit.unwrap_or(100).min(1000);
    Ok(Json(state.fleet.store.events(&id, limit)?))
}

/// `?points=` of the health endpoint: only the newest points (default: all kept).
#[derive(Debug, Deserialize)]
pub struct HealthQuery {
    pub points: Option<u32>,
}

pub async fn health(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HealthQuery>,
) -> Result<Json<Vec<HealthPoint>>, ApiError> {
    let id = device_id(&id)?;
    state.fleet.store.device(&id)?;
    let points = query
        .points
        .map_or(crate::store::HEALTH_POINTS_KEPT, i64::from);
    Ok(Json(state.fleet.store.latest_health_points(&id, points)?))
}
