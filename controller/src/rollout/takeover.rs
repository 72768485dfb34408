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
        let (mut republished, mut asked) = (0usize, 0usize);
        let client = self.fleet.client();
        for device in rollout.devices.iter().filter(|d| in_flight(d)) {
            if awaiting_send(device) {
                if let Some((_, body)) = self.fleet.store.desired_signed(&device.device)? {
                    match client.publish_desired(&device.device, body).await {
                        Ok(()) => republished += 1,
                        Err(err) => {
                            tracing::warn!(device = %device.device, error = %error_chain(&err), "cannot republish a desired state of a rollout taken over")
                        }
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
                    tracing::warn!(device = %device.device, error = %error_chain(&err), "cannot ask a device of a rollout taken over to report again")
                }
            }
        }
        if republished + asked > 0 {
            tracing::info!(
                rollout = rollout.id,
                republished,
                asked,
                "driving rollout: desired states in flight published again, devices asked to report"
            );
        }
        Ok(())
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
