//! `POST /api/v1/devices/{id}/deploy`: an app (compose text) becomes the device's next
//! signed desired state. Parse and validation errors are 400s naming line, service, field.

use std::collections::BTreeMap;

use crate::access::Caller;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use coracle_proto::{Generation, ServiceSpec};
use serde::{Deserialize, Serialize};

use super::devices::device_id;
use super::error::error_chain;
use super::error::ApiError;
use super::{parse_json, AppState};
use crate::app_platforms::AppPlatforms;
use crate::compose::{self, ComposeContext, ComposeFile};
use crate::deploy::app_services;
use crate::policy::{host_network_services, AppRequest};

/// The request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The app, as docker-compose YAML.
    pub compose: String,
    /// Seccomp profile files the app names (`security_opt: seccomp=FILE`), by the path as
    /// written in it; `coracle deploy` reads them relative to the app file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seccomp_profiles: BTreeMap<String, String>,
    /// What `coracle deploy` read on the client (`ComposeContext`): the values of the
    /// variables the app names, its env files, the active profiles. Without it, an app
    /// holding a `$` in a value is refused, naming the key.
    #[serde(default, skip_serializing_if = "is_default")]
    pub context: ComposeContext,
}

fn is_default(context: &ComposeContext) -> bool {
    *context == ComposeContext::default()
}

/// The answer: the generation the device will apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployResponse {
    pub device: String,
    pub generation: Generation,
    pub services: Vec<String>,
    /// False when the broker could not take it now: stored, sent when the broker is back.
    #[serde(default = "published_by_default")]
    pub published: bool,
}

fn published_by_default() -> bool {
    true
}

/// The app of a deploy or rollout request: parsed, every image pinned, and the platforms
/// its images offer; each failure a 400 naming what was wrong.
pub(super) async fn pin_app(
    state: &AppState,
    text: &str,
    seccomp_profiles: &BTreeMap<String, String>,
    context: &ComposeContext,
) -> Result<(ComposeFile, Vec<ServiceSpec>, AppPlatforms), ApiError> {
    let file = compose::load(text, context)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .file;
    let services = app_services(
        &state.registry,
        &state.mirror,
        text,
        &file,
        seccomp_profiles,
    )
    .await
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let platforms = AppPlatforms::of(&state.registry, &state.mirror, &services)
        .await
        .map_err(ApiError::bad_request)?;
    Ok((file, services, platforms))
}

pub async fn deploy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<DeployResponse>, ApiError> {
    let id = device_id(&id)?;
    let request: DeployRequest = parse_json(&body)?;
    let (file, services, platforms) = pin_app(
        &state,
        &request.compose,
        &request.seccomp_profiles,
        &request.context,
    )
    .await?;
    let host_network = host_network_services(&file);
    state
        .fleet
        .check_policy(&id, &AppRequest::new(&services, &host_network))?;
    let reported = state.fleet.store.reported(&id)?;
    let (platform, sealing_key) = reported
        .map(|r| (r.platform, r.sealing_key))
        .unwrap_or_default();
    platforms
        .check(&id, &platform)
        .map_err(ApiError::bad_request)?;
    let registries = state
        .mirror
        .access_for(&id, &sealing_key, &services)
        .map_err(|e| ApiError::bad_request(error_chain(&e)))?;
    let names = services.iter().map(|s| s.name.to_string()).collect();
    let images = super::audit::images(&services);
    let deployment = state
        .fleet
        .deploy_with_registries(&id, services, registries)
        .await?;
    let detail = format!("generation {}: {images}", deployment.generation);
    super::audit::record(&state, &caller, "deploy", id.as_str(), &detail);
    Ok(Json(DeployResponse {
        device: id.to_string(),
        generation: deployment.generation,
        services: names,
        published: deployment.published,
    }))
}
