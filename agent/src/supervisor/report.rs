//! Builds the `ReportedState` and the per-container part of the `HealthSample` from the
//! persisted state and the last observation. Pure.

use std::collections::BTreeMap;

use coracle_proto::{
    Condition, ContainerSample, ContainerState, DeviceId, Generation, ReportedState, ServiceName,
    ServiceStatus, UpdateStatus,
};

use super::tracker::Tracker;
use crate::reconcile::{refusal, target, Observed, Phase};
use crate::state::AgentState;

/// The reported reason of a generation the agent could not run at all (`why` names the
/// service, field and value): nothing was stopped for it.
pub fn refused(why: &str) -> String {
    format!("desired state refused, nothing was changed: {why}")
}

/// The device's reported state.
pub fn reported(
    device: &DeviceId,
    state: &AgentState,
    observed: &Observed,
    tracker: &Tracker,
    conditions: &[Condition],
) -> ReportedState {
    let update = match (refusal(state), &state.pending) {
        (Some((generation, reason)), _) => UpdateStatus::Failed {
            generation,
            reason: refused(&reason),
        },
        (None, Some(p)) if observed.gate_started_ms.is_some() => UpdateStatus::Verifying {
            generation: p.generation,
        },
        (None, Some(p)) => UpdateStatus::Applying {
            generation: p.generation,
        },
        (None, None) => match state.rolled_back.iter().next_back() {
            Some((&generation, reason)) if generation > state.committed_generation() => {
                UpdateStatus::RolledBack {
                    generation,
                    reason: reason.clone(),
                }
            }
            _ => UpdateStatus::Idle,
        },
    };
    let services = target(state)
        .map(|t| {
            t.services
                .iter()
                .map(|spec| {
                    let c = observed.containers.get(&spec.name);
                    let state = match c.map(|c| c.phase) {
                        None if observed.images.contains(&spec.image.digest) => {
                            ContainerState::Pending
                        }
                        None => ContainerState::Pulling,
                        Some(Phase::Created) => ContainerState::Created,
                        Some(Phase::Running { .. }) => ContainerState::Running,
                        Some(Phase::Exited { .. }) => ContainerState::Exited,
                        Some(Phase::Stopped) => ContainerState::Stopped,
                    };
                    let exit = tracker.last_exit.get(&spec.name);
                    ServiceStatus {
                        name: spec.name.clone(),
                        image: spec.image.digest,
                        state,
                        restart_count: tracker.total_restarts.get(&spec.name).copied().unwrap_or(0),
                        last_exit_code: exit.map(|e| e.exit_code),
                        oom_killed: exit.is_some_and(|e| e.oom_killed),
                        health: c.map(|c| c.health).unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    ReportedState {
        device: device.clone(),
        applied: state
            .committed
            .as_ref()
            .map_or(Generation(0), |d| d.generation),
        update,
        services,
        layers: Vec::new(),
        conditions: conditions.to_vec(),
        agent_version: crate::ota::agent_version(),
        platform: crate::platform::this_device().to_string(),
        // Filled in by the supervisor from its engine.
        sealing_key: String::new(),
        credentials: Default::default(),
    }
}

/// Per-container samples, indexed by the services of the committed state; `usage` holds
/// what the running ones use.
pub fn container_samples(
    state: &AgentState,
    tracker: &Tracker,
    usage: &BTreeMap<ServiceName, Usage>,
) -> Vec<ContainerSample> {
    let Some(committed) = &state.committed else {
        return Vec::new();
    };
    committed
        .services
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| {
            let used = usage.get(&spec.name).copied().unwrap_or_default();
            Some(ContainerSample {
                service: u8::try_from(i).ok()?,
                cpu_permille: used.cpu_permille,
                mem_kib: used.mem_kib,
                net_rx_kib: used.net_rx_kib,
                net_tx_kib: used.net_tx_kib,
                restarts: tracker
                    .total_restarts
                    .get(&spec.name)
                    .map_or(0, |&r| u16::try_from(r).unwrap_or(u16::MAX)),
            })
        })
        .collect()
}

/// What one running container used, as the health sample carries it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_permille: u16,
    pub mem_kib: u32,
    pub net_rx_kib: u64,
    pub net_tx_kib: u64,
}

/// The device's conditions: what the runtime could not enforce (deduplicated) and a disk
/// below the configured reserve.
pub fn conditions(
    runtime: impl IntoIterator<Item = Condition>,
    disk_free_mib: u32,
    disk_reserve_mib: u32,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = Vec::new();
    for c in runtime {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if disk_free_mib < disk_reserve_mib {
        out.push(Condition::DiskLow {
            free_bytes: u64::from(disk_free_mib) << 20,
            needed_bytes: u64::from(disk_reserve_mib) << 20,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_deduplicated_and_disk_low_appears_below_the_reserve() {
        let memory = Condition::CgroupControllerMissing {
            controller: "memory".into(),
        };
        let got = conditions([memory.clone(), memory.clone()], 100, 256);
        assert_eq!(
            got,
            [
                memory.clone(),
                Condition::DiskLow {
                    free_bytes: 100 << 20,
                    needed_bytes: 256 << 20
                }
            ]
        );
        assert_eq!(conditions([memory.clone()], 300, 256), [memory]);
    }
}
