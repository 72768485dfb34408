//! A rollout this controller starts driving (taken over from another controller, or first
//! driven since this one started). A send of the previous driver may never have reached the
//! broker: a publish still queued in a killed controller's MQTT client dies with it, while
//! the store already records the device as sent to. So the new driver publishes again the
//! stored desired state of every device still waiting on a send. That is harmless: the same
//! signed state and generation, retained, which an agent that has it ignores.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use coracle_proto::{Command, CommandRequest};

use super::driver::Rollouts;
use super::RolloutError;
use crate::api::error::error_chain;
use crate::store::{DeviceProgress, DeviceStatus, RolloutRecord};

/// How long a device sent its generation may go unseen running before it is nudged.
const STALLED_AFTER_S: i64 = 15;

/// When each device was last nudged (Unix seconds).
pub type Nudged = Arc<Mutex<std::collections::HashMap<coracle_proto::DeviceId, i64>>>;

/// The rollouts whose lease this controller holds, as far as it knows.
#[derive(Debug, Clone, Default)]
pub struct HeldLeases(Arc<Mutex<HashSet<i64>>>);

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Another controller drives the rollout.
    Lost,
    /// This controller drove it already and still does.
    Renewed,
    /// This controller drives it from now on.
    Taken,
}

impl HeldLeases {
    /// Notes the outcome of a claim on `rollout` (`claimed`: the store gave us the lease).
    pub fn note(&self, rollout: i64, claimed: bool) -> Claim {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match (claimed, held.insert(rollout)) {
            (false, _) => {
                held.remove(&rollout);
                Claim::Lost
            }
            (true, true) => Claim::Taken,
            (true, false) => Claim::Renewed,
        }
    }
}

impl Rollouts {
    /// Publishes again what `rollout`'s devices wait on (see the module comment).
    pub(super) async fn republish_in_flight(
        &self,
        rollout: &RolloutRecord,
    ) -> Result<(), RolloutError> {
        if rollout.agent_version.is_some() {
            if let Err(err) = self.fleet.republish_agent_updates().await {
                tracing::warn!(rollout = rollout.id, error = %error_chain(&err), "cannot republish agent updates of a rollout taken over");
            }
            return Ok(());
        }
        let devices: Vec<&DeviceProgress> =
            rollout.devices.iter().filter(|d| in_flight(d)).collect();
        let asked = self.nudge(&devices).await?;
        if asked > 0 {
            tracing::info!(
                rollout = rollout.id,
                asked,
                "driving rollout: desired states in flight published again, devices asked to report"
            );
        }
        Ok(())
    }

    /// Devices sent their generation `STALLED_AFTER_S` ago and not seen running since are
    /// nudged the same way, at most once per that time each: their report may have gone to
    /// a controller that died without being the driver (no takeover happens then).
    pub(super) async fn nudge_stalled(
        &self,
        rollout: &RolloutRecord,
        now: i64,
    ) -> Result<(), RolloutError> {
        if rollout.agent_version.is_some() {
            return Ok(());
        }
        let stalled: Vec<&DeviceProgress> = {
            let mut nudged = self.nudged.lock().unwrap_or_else(|p| p.into_inner());
            rollout
                .devices
                .iter()
                .filter(|d| {
                    d.status == DeviceStatus::Deploying
                        && awaiting_send(d)
                        && d.deployed_unix
                            .is_some_and(|at| now - at >= STALLED_AFTER_S)
                })
                .filter(|d| {
                    let last = nudged.entry(d.device.clone()).or_insert(i64::MIN);
                    let due = now.saturating_sub(*last) >= STALLED_AFTER_S;
                    if due {
                        *last = now;
                    }
                    due
                })
                .collect()
        };
        let asked = self.nudge(&stalled).await?;
        if asked > 0 {
            tracing::info!(
                rollout = rollout.id,
                asked,
                "devices not seen running their generation asked again"
            );
        }
        Ok(())
    }

    /// Publishes each device's stored desired state again when it waits on it, and asks each
    /// to report (`Recheck`); how many were asked.
    async fn nudge(&self, devices: &[&DeviceProgress]) -> Result<usize, RolloutError> {
        let client = self.fleet.client();
        let mut asked = 0;
        for device in devices {
            if awaiting_send(device) {
                if let Some((_, body)) = self.fleet.store.desired_signed(&device.device)? {
                    if let Err(err) = client.publish_desired(&device.device, body).await {
                        tracing::warn!(device = %device.device, error = %error_chain(&err), "cannot publish a desired state again");
                    }
                }
            }
            // Nobody waits on the reply: the report it brings is what counts.
            let recheck = coracle_proto::encode(&CommandRequest {
                id: 0,
                command: Command::Recheck,
            });
            match client.publish_command(&device.device, recheck).await {
                Ok(()) => asked += 1,
                Err(err) => {
                    tracing::warn!(device = %device.device, error = %error_chain(&err), "cannot ask a device to report again")
                }
            }
        }
        Ok(asked)
    }
}

/// Whether the device's outcome is still open (a report lost now would stall it).
fn in_flight(device: &DeviceProgress) -> bool {
    device.status == DeviceStatus::Deploying || awaiting_send(device)
}

/// Whether the device was sent a generation it has not been seen running yet.
fn awaiting_send(device: &DeviceProgress) -> bool {
    match device.status {
        DeviceStatus::Deploying => {
            device.generation.is_some() && device.running_since_unix.is_none()
        }
        DeviceStatus::RolledBack => device.rollback_generation.is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_taken_once_then_renewed_until_lost() {
        let held = HeldLeases::default();
        assert_eq!(held.note(1, true), Claim::Taken);
        assert_eq!(held.note(1, true), Claim::Renewed);
        assert_eq!(held.note(2, true), Claim::Taken, "leases are per rollout");
        assert_eq!(held.note(1, false), Claim::Lost);
        assert_eq!(held.note(1, false), Claim::Lost);
        assert_eq!(
            held.note(1, true),
            Claim::Taken,
            "taken again after losing it"
        );
    }
}
