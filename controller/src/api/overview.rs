//! `GET /api/v1/fleet`: one row per device for the dashboard's fleet table — the device
//! record, a one-word status, its services, the app it should run (image tags when the
//! registry has one for the digest) and its latest health sample. Built from three
//! whole-fleet queries, not one per device.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use coracle_proto::{
    ContainerState, DesiredState, Health, HealthSample, ImageRef, ReportedState, Signed,
    UpdateStatus,
};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::images::TagIndex;
use super::AppState;
use crate::store::DeviceRecord;

/// What a device is doing, in one word for the fleet table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetStatus {
    /// Enrolled, never reported.
    New,
    /// Nothing deployed yet.
    Idle,
    Updating,
    Healthy,
    Unhealthy,
    RolledBack,
    Failed,
}

/// One service, as the table shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    pub state: ContainerState,
    pub health: Health,
    pub restarts: u32,
}

/// One row of the fleet table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetRow {
    #[serde(flatten)]
    pub device: DeviceRecord,
    pub status: FleetStatus,
    /// Why the last update failed or rolled back.
    pub reason: Option<String>,
    /// The desired app's images, `repo:tag` where a tag names the digest.
    pub app: Vec<String>,
    pub services: Vec<ServiceSummary>,
    pub health: Option<HealthSample>,
    pub health_unix: Option<i64>,
}

/// The one-word status of a device (a pure function of what it reported).
pub fn status(device: &DeviceRecord, reported: Option<&ReportedState>) -> FleetStatus {
    let Some(reported) = reported else {
        return FleetStatus::New;
    };
    match &reported.update {
        UpdateStatus::Applying { .. } | UpdateStatus::Verifying { .. } => {
            return FleetStatus::Updating
        }
        UpdateStatus::RolledBack { .. } => return FleetStatus::RolledBack,
        UpdateStatus::Failed { .. } => return FleetStatus::Failed,
        UpdateStatus::Idle => {}
    }
    if device.desired_generation > device.applied_generation.filter(|g| *g > 0) {
        return FleetStatus::Updating;
    }
    if reported.services.is_empty() {
        return FleetStatus::Idle;
    }
    let bad = reported.services.iter().any(|s| {
        s.health == Health::Unhealthy
            || !matches!(s.state, ContainerState::Running | ContainerState::Created)
    });
    if bad {
        FleetStatus::Unhealthy
    } else {
        FleetStatus::Healthy
    }
}

fn reason(reported: Option<&ReportedState>) -> Option<String> {
    match &reported?.update {
        UpdateStatus::RolledBack { reason, .. } | UpdateStatus::Failed { reason, .. } => {
            Some(reason.clone())
        }
        _ => None,
    }
}

fn label(image: &ImageRef, tags: &mut TagIndex) -> String {
    match tags.tag_of(&image.repository, &image.digest.to_string()) {
        Some(tag) => format!("{}:{tag}", image.repository),
        None => {
            let digest = image.digest.to_string();
            let short = digest.get(..19).unwrap_or(&digest);
            format!("{}@{short}", image.repository)
        }
    }
}

pub async fn fleet(State(state): State<AppState>) -> Result<Json<Vec<FleetRow>>, ApiError> {
    let store = &state.fleet.store;
    let devices = store.list_devices()?;
    let mut reported = store.all_reported()?;
    let mut health = store.latest_health()?;
    let trusted = state.fleet.deployment_key().verifying_key();
    let desired: HashMap<_, _> = store
        .all_desired()?
        .into_iter()
        .filter_map(|(id, body)| {
            let signed: Signed<DesiredState> = coracle_proto::decode(&body).ok()?;
            Some((id, signed.open(&trusted).ok()?))
        })
        .collect();
    let mut tags = TagIndex::new(&state.registry);
    let rows = devices
        .into_iter()
        .map(|device| {
            let report = reported.remove(&device.id);
            let point = health.remove(&device.id);
            let app = desired
                .get(&device.id)
                .map(|d| {
                    d.services
                        .iter()
                        .map(|s| label(&s.image, &mut tags))
                        .collect()
                })
                .unwrap_or_default();
            let services = report
                .iter()
                .flat_map(|r| &r.services)
                .map(|s| ServiceSummary {
                    name: s.name.to_string(),
                    state: s.state,
                    health: s.health,
                    restarts: s.restart_count,
                })
                .collect();
            FleetRow {
                status: status(&device, report.as_ref()),
                reason: reason(report.as_ref()),
                app,
                services,
                health_unix: point.as_ref().map(|p| p.bucket_unix),
                health: point.map(|p| p.sample),
                device,
            }
        })
        .collect();
    Ok(Json(rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::{samples, Generation};

    fn record(desired: Option<u64>, applied: Option<u64>) -> DeviceRecord {
        DeviceRecord {
            id: samples::device(),
            created_unix: 0,
            tags: Default::default(),
            online: true,
            last_seen_unix: None,
            desired_generation: desired,
            applied_generation: applied,
        }
    }

    #[test]
    fn status_table() {
        let healthy = samples::reported_state(2);
        let mut unhealthy = healthy.clone();
        unhealthy.services[0].health = Health::Unhealthy;
        let mut rolled = healthy.clone();
        rolled.update = UpdateStatus::RolledBack {
            generation: Generation(3),
            reason: "gate".into(),
        };
        let mut applying = healthy.clone();
        applying.update = UpdateStatus::Applying {
            generation: Generation(3),
        };
        let mut empty = healthy.clone();
        empty.services.clear();
        let applied = Some(healthy.applied.0);
        let cases = [
            (record(None, None), None, FleetStatus::New),
            (
                record(applied, applied),
                Some(&healthy),
                FleetStatus::Healthy,
            ),
            (
                record(applied, applied),
                Some(&unhealthy),
                FleetStatus::Unhealthy,
            ),
            (
                record(Some(99), applied),
                Some(&healthy),
                FleetStatus::Updating,
            ),
            (
                record(applied, applied),
                Some(&applying),
                FleetStatus::Updating,
            ),
            (
                record(Some(99), applied),
                Some(&rolled),
                FleetStatus::RolledBack,
            ),
            (record(None, None), Some(&empty), FleetStatus::Idle),
        ];
        for (i, (device, reported, want)) in cases.into_iter().enumerate() {
            assert_eq!(status(&device, reported), want, "case {i}");
        }
    }
}
