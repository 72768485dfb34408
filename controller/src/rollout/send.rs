//! Sending the rollout's app, or a device's previous app, as the device's next generation.
//! Each send completes an intent already saved in the store; a device that shows a newer
//! desired state than the one the intent replaced was sent to before a restart, and its
//! generation is adopted instead of deploying again. Images on direct registries get the
//! device's own sealed access with each send; a device that cannot be given it (no sealing
//! key reported yet) fails with that reason and counts against the rollout's threshold.

use coracle_proto::{DeviceId, ServiceSpec};

use super::driver::Rollouts;
use super::RolloutError;
use crate::api::error::error_chain;
use crate::deploy::DeployRequest;
use crate::fleet::FleetError;
use crate::store::{now_unix, DeviceProgress, DeviceStatus, RolloutRecord, StoreError};

/// Devices are sent to, and their rows saved, this many at a time: a few statements per
/// batch, where a wave of 9,000 devices sent one by one (six round trips each) took a minute
/// on PostgreSQL. A send whose save is lost (a crash between the two) is adopted on the
/// next step from the newer desired state it left.
const SAVE_EVERY: usize = 256;
/// A long send renews the rollout's lease this often (a fraction of its lifetime), so no
/// other controller takes the rollout over and sends to the same devices meanwhile.
const RENEW_FRACTION: u32 = 4;

impl Rollouts {
    /// Sends what saved intents still lack: the new app to `deploying` rows without a
    /// generation, the previous app to `rolled_back` rows without a rollback generation.
    /// What was sent is saved even when a later send fails.
    pub(super) async fn send_pending(
        &self,
        rollout: &mut RolloutRecord,
    ) -> Result<(), RolloutError> {
        let mut sent = Vec::new();
        let sending = self.send_each(rollout, &mut sent).await;
        let saved = self.save_sent(rollout, &mut sent);
        sending.and(saved)
    }

    async fn send_each(
        &self,
        rollout: &mut RolloutRecord,
        sent: &mut Vec<usize>,
    ) -> Result<(), RolloutError> {
        let renew_every = self.lease.ttl / RENEW_FRACTION;
        let mut renewed: Option<std::time::Instant> = None;
        let pending: Vec<(usize, Pending)> = rollout
            .devices
            .iter()
            .enumerate()
            .filter_map(|(index, device)| Some((index, Pending::of(device)?)))
            .collect();
        for chunk in pending.chunks(SAVE_EVERY) {
            // Before the first send and then periodically: the step's own claim may be
            // older than the lease by now.
            if renewed.is_none_or(|at| at.elapsed() >= renew_every) {
                self.save_sent(rollout, sent)?;
                if !self.claim(rollout.id)? {
                    return Err(RolloutError::LeaseLost { id: rollout.id });
                }
                renewed = Some(std::time::Instant::now());
            }
            let next = if rollout.agent_version.is_some() {
                self.send_agents(rollout, chunk).await?
            } else {
                self.send_apps(rollout, chunk).await?
            };
            for (index, progress) in next {
                rollout.devices[index] = progress;
                sent.push(index);
            }
            self.save_sent(rollout, sent)?;
        }
        Ok(())
    }

    /// Agent updates, one device at a time (`agent_send.rs`).
    async fn send_agents(
        &self,
        rollout: &RolloutRecord,
        chunk: &[(usize, Pending)],
    ) -> Result<Vec<(usize, DeviceProgress)>, RolloutError> {
        let mut next = Vec::with_capacity(chunk.len());
        for &(index, pending) in chunk {
            let device = &rollout.devices[index];
            let progress = match pending {
                Pending::New => self.send_agent_new(rollout, device).await?,
                Pending::Previous => self.send_agent_previous(device).await?,
            };
            next.push((index, progress));
        }
        Ok(next)
    }

    /// The app (or each device's previous app) to the chunk's devices, in one batch: their
    /// generations read at once, each device given its own access to direct registries,
    /// the states signed, stored in one transaction and published. A device showing a
    /// newer desired state than the one its intent replaced was sent to before a restart:
    /// its generation is adopted instead.
    async fn send_apps(
        &self,
        rollout: &RolloutRecord,
        chunk: &[(usize, Pending)],
    ) -> Result<Vec<(usize, DeviceProgress)>, RolloutError> {
        let ids: Vec<DeviceId> = chunk
            .iter()
            .map(|&(index, _)| rollout.devices[index].device.clone())
            .collect();
        let current = self.fleet.store.desired_generations_of(&ids)?;
        let mut outcomes: Vec<Option<Sent>> = Vec::with_capacity(chunk.len());
        let mut wanted: Vec<(usize, Vec<ServiceSpec>)> = Vec::new();
        for &(index, pending) in chunk {
            let device = &rollout.devices[index];
            let (services, replaced) = match pending {
                Pending::New => (rollout.services.clone(), device.previous_generation),
                Pending::Previous => (
                    device.previous_services.clone().unwrap_or_default(),
                    device.generation,
                ),
            };
            match current.get(&device.device).filter(|g| Some(g.0) > replaced) {
                Some(adopted) => outcomes.push(Some(Sent::Generation(adopted.0))),
                None => {
                    outcomes.push(None);
                    wanted.push((outcomes.len() - 1, services));
                }
            }
        }
        let requests = self.with_registry_access(rollout, chunk, wanted, &mut outcomes)?;
        let (positions, requests): (Vec<usize>, Vec<DeployRequest>) = requests.into_iter().unzip();
        let deployed = self.fleet.deploy_many(requests).await?;
        for (position, deployed) in positions.into_iter().zip(deployed) {
            outcomes[position] = Some(match deployed {
                Ok(deployment) => Sent::Generation(deployment.generation.0),
                Err(FleetError::Store(StoreError::DeviceNotFound { .. })) => Sent::Removed,
                // This device's state cannot be sent (too large with its registry access):
                // it fails, counted against the rollout's threshold.
                Err(err) => Sent::Refused(error_chain(&err)),
            });
        }
        Ok(chunk
            .iter()
            .zip(outcomes)
            .map(|(&(index, pending), outcome)| {
                let mut next = rollout.devices[index].clone();
                let outcome = outcome.unwrap_or(Sent::Removed);
                match pending {
                    Pending::New => outcome.record_new(&mut next),
                    Pending::Previous => outcome.record_rollback(&mut next),
                }
                (index, next)
            })
            .collect())
    }

    /// Each wanted device's deploy request with its own access to the direct registries
    /// its services name (credentials sealed to the key it reported); a device that cannot
    /// be given it is refused in `outcomes` instead.
    fn with_registry_access(
        &self,
        rollout: &RolloutRecord,
        chunk: &[(usize, Pending)],
        wanted: Vec<(usize, Vec<ServiceSpec>)>,
        outcomes: &mut [Option<Sent>],
    ) -> Result<Vec<(usize, DeployRequest)>, RolloutError> {
        let device_at = |position: usize| &rollout.devices[chunk[position].0].device;
        // Sealing keys only for devices that need them: most apps name no direct registry.
        let sealing: Vec<DeviceId> = wanted
            .iter()
            .filter(|(_, services)| !self.mirror.direct_hosts(services).is_empty())
            .map(|&(position, _)| device_at(position).clone())
            .collect();
        let reported = if sealing.is_empty() {
            Default::default()
        } else {
            self.fleet.store.reported_of(&sealing)?
        };
        let mut requests = Vec::with_capacity(wanted.len());
        for (position, services) in wanted {
            let device = device_at(position);
            let sealing_key = reported
                .get(device)
                .map(|r| r.sealing_key.as_str())
                .unwrap_or_default();
            match self.mirror.access_for(device, sealing_key, &services) {
                Ok(registries) => requests.push((
                    position,
                    DeployRequest {
                        device: device.clone(),
                        services,
                        registries,
                    },
                )),
                Err(err) => outcomes[position] = Some(Sent::Refused(error_chain(&err))),
            }
        }
        Ok(requests)
    }

    /// Saves the rows at `sent` in one transaction and announces them.
    fn save_sent(
        &self,
        rollout: &mut RolloutRecord,
        sent: &mut Vec<usize>,
    ) -> Result<(), RolloutError> {
        if sent.is_empty() {
            return Ok(());
        }
        let rows: Vec<&DeviceProgress> = sent.iter().map(|&i| &rollout.devices[i]).collect();
        rollout.revision = self.fleet.store.save_rollout(rollout, &rows)?;
        for index in sent.drain(..) {
            self.announce_device(rollout.id, &rollout.devices[index]);
        }
        Ok(())
    }
}

/// What a device's saved intent still lacks.
#[derive(Clone, Copy)]
enum Pending {
    /// The rollout's version.
    New,
    /// Its previous version (a rollback).
    Previous,
}

impl Pending {
    /// `deploying` rows without a generation lack the new version, `rolled_back` rows
    /// without a rollback generation their previous one; other rows lack nothing.
    fn of(device: &DeviceProgress) -> Option<Self> {
        match (device.status, device.generation, device.rollback_generation) {
            (DeviceStatus::Deploying, None, _) => Some(Pending::New),
            (DeviceStatus::RolledBack, _, None) => Some(Pending::Previous),
            _ => None,
        }
    }
}

/// What became of one send.
pub(super) enum Sent {
    /// The device's new desired generation (sent now, or adopted from before a restart).
    Generation(u64),
    /// The device no longer exists.
    Removed,
    /// The app cannot be given to this device; the reason is the device's failure.
    Refused(String),
}

impl Sent {
    /// Where sending the new version leaves the device: its generation (or agent update
    /// sequence) and when it was sent, or failed with the reason.
    pub(super) fn record_new(self, next: &mut DeviceProgress) {
        match self {
            Sent::Generation(generation) => {
                next.generation = Some(generation);
                next.deployed_unix = Some(now_unix());
            }
            Sent::Removed => {
                next.status = DeviceStatus::Failed;
                next.reason = Some("the device was removed".into());
            }
            Sent::Refused(reason) => {
                next.status = DeviceStatus::Failed;
                next.reason = Some(reason);
            }
        }
    }

    /// Where a rollback's send leaves the device: its rollback generation (or agent update
    /// sequence), or failed with the reason.
    pub(super) fn record_rollback(self, next: &mut DeviceProgress) {
        match self {
            Sent::Generation(generation) => next.rollback_generation = Some(generation),
            Sent::Removed => {
                next.status = DeviceStatus::Failed;
                next.reason = Some("the device was removed before its rollback".into());
            }
            Sent::Refused(reason) => {
                next.status = DeviceStatus::Failed;
                next.reason = Some(format!("rollback not sent: {reason}"));
            }
        }
    }
}
