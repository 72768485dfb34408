//! The operator's entry points: create a rollout (checked: waves, threshold, window,
//! selector, the deploy policy for every selected device, devices not held by another
//! active rollout) and the commands pause, resume, abort and rollback, whose allowed moves
//! are `command::transition`.

use std::collections::{BTreeSet, HashMap};

use coracle_proto::{DeviceId, ServiceSpec};

use super::command::{transition, RolloutCommand};
use super::driver::Rollouts;
use super::pace::RolloutPace;
use super::RolloutError;
use crate::app_platforms::AppPlatforms;
use crate::policy::AppRequest;
use crate::store::{DeviceStatus, NewRollout, RolloutRecord, Selector, StoreError};

/// What a new rollout is checked against, per selected device.
pub(super) enum Checks<'a> {
    /// The deploy policy and the platforms the app's images offer.
    App {
        platforms: &'a AppPlatforms,
        host_network: &'a BTreeSet<String>,
    },
    /// The platforms the agent release has builds for.
    Agent { platforms: BTreeSet<String> },
}

/// A rollout to create; `services` are the app with images already pinned.
#[derive(Debug, Clone)]
pub struct CreateRollout {
    pub app: String,
    pub compose: String,
    /// Services whose compose entry says `network_mode: host` (the policy judges them).
    pub host_network: BTreeSet<String>,
    pub services: Vec<ServiceSpec>,
    /// The platforms the app's images offer, checked against each selected device.
    pub platforms: AppPlatforms,
    pub pace: RolloutPace,
}

impl Rollouts {
    /// Checks and stores a rollout; the driver starts its first wave at once.
    pub async fn create(&self, request: CreateRollout) -> Result<RolloutRecord, RolloutError> {
        request.pace.check()?;
        let checks = Checks::App {
            platforms: &request.platforms,
            host_network: &request.host_network,
        };
        let new = request
            .pace
            .into_new(request.app, request.compose, request.services, None);
        self.create_checked(new, checks).await
    }

    /// Stores a checked rollout and starts its first wave.
    pub(super) async fn create_checked(
        &self,
        new: NewRollout,
        checks: Checks<'_>,
    ) -> Result<RolloutRecord, RolloutError> {
        let id = self.store_new(new, checks).await?;
        // The first wave starts before the answer, so the caller sees it under way.
        if let Err(err) = self.step(id).await {
            tracing::warn!(rollout = id, error = %crate::api::error::error_chain(&err), "first rollout step failed; retrying on the next tick");
        }
        self.wake();
        self.fleet
            .store
            .rollout(id)?
            .ok_or(RolloutError::NotFound { id })
    }

    /// Resolves the selector, checks every device can run the app's images and none is held
    /// by another active rollout, stores.
    async fn store_new(
        &self,
        mut new: NewRollout,
        checks: Checks<'_>,
    ) -> Result<i64, RolloutError> {
        let _serialized = self.lock.lock().await;
        let store = &self.fleet.store;
        new.devices = match &new.pace.selector {
            Selector::Tag { key, value } => store.devices_with_tag(key, value)?,
            Selector::Devices(ids) => {
                for id in ids {
                    match store.device(id) {
                        Ok(_) => {}
                        Err(StoreError::DeviceNotFound { .. }) => {
                            return Err(RolloutError::UnknownDevice { device: id.clone() })
                        }
                        Err(err) => return Err(err.into()),
                    }
                }
                ids.clone()
            }
        };
        if new.devices.is_empty() {
            return Err(RolloutError::NoDevices {
                selector: new.pace.selector.to_string(),
            });
        }
        // Every selected device, before any is sent to: a rollout is not half allowed.
        let refused: Vec<String> = match checks {
            Checks::App {
                platforms,
                host_network,
            } => {
                let app = AppRequest::new(&new.services, host_network);
                // The fleet's tags and reports in one read each, not one per device.
                let tags: HashMap<DeviceId, _> = store
                    .list_devices()?
                    .into_iter()
                    .map(|d| (d.id, d.tags))
                    .collect();
                let no_tags = Default::default();
                for device in &new.devices {
                    let tags = tags.get(device).unwrap_or(&no_tags);
                    self.fleet.policy().check(device, tags, &app)?;
                }
                let reported = store.reported_of(&new.devices)?;
                new.devices
                    .iter()
                    .filter_map(|device| {
                        let reported = reported.get(device)?;
                        platforms.check(device, &reported.platform).err()
                    })
                    .collect()
            }
            Checks::Agent { platforms } => {
                let reported = store.reported_of(&new.devices)?;
                new.devices
                    .iter()
                    .filter_map(|device| {
                        let platform = reported
                            .get(device)
                            .map(|r| r.platform.as_str())
                            .unwrap_or_default();
                        (!platforms.contains(platform)).then(|| {
                            format!(
                                "{device} runs {platform:?}, which the release has no build for"
                            )
                        })
                    })
                    .collect()
            }
        };
        if !refused.is_empty() {
            let what = new
                .agent_version
                .as_deref()
                .map_or("the app".to_string(), |v| format!("agent {v}"));
            return Err(RolloutError::Invalid {
                field: "selector",
                message: format!("devices that cannot run {what}: {}", refused.join("; ")),
            });
        }
        if let Some((device, rollout)) = store
            .devices_in_active_rollouts(&new.devices)?
            .into_iter()
            .next()
        {
            return Err(RolloutError::Busy { device, rollout });
        }
        let id = store.create_rollout(&new)?;
        let record = store.rollout(id)?.ok_or(RolloutError::NotFound { id })?;
        tracing::info!(
            rollout = id,
            app = %record.app,
            selector = %record.selector,
            devices = record.devices.len(),
            waves = %record.waves,
            "rollout created"
        );
        self.announce_phase(&record);
        Ok(id)
    }

    /// Pauses, resumes, aborts or rolls back a rollout, on whichever controller the operator
    /// reached: the change is stored at once; the sends it implies are made here when this
    /// controller drives the rollout, else by the one that does on its next step.
    pub async fn command(
        &self,
        id: i64,
        command: RolloutCommand,
    ) -> Result<RolloutRecord, RolloutError> {
        let _serialized = self.lock.lock().await;
        // Another controller's step may write the rollout between this read and write:
        // read it again and apply the command to what it wrote.
        let mut attempts = 0;
        loop {
            match self.apply_command(id, command).await {
                Err(RolloutError::Store(StoreError::RolloutChanged { .. })) if attempts < 5 => {
                    attempts += 1;
                }
                result => return result,
            }
        }
    }

    async fn apply_command(
        &self,
        id: i64,
        command: RolloutCommand,
    ) -> Result<RolloutRecord, RolloutError> {
        let store = &self.fleet.store;
        let mut rollout = store.rollout(id)?.ok_or(RolloutError::NotFound { id })?;
        let next = transition(command, rollout.phase)
            .map_err(|source| RolloutError::Refused { id, source })?;
        // What `decide` counts as failed: failed devices and those rolled back on failure.
        let failed = |r: &RolloutRecord| {
            r.devices
                .iter()
                .filter(|d| matches!(d.status, DeviceStatus::Failed | DeviceStatus::RolledBack))
                .count()
        };
        rollout.reason = match command {
            RolloutCommand::Pause => Some("paused by the operator".into()),
            RolloutCommand::Resume => {
                // The failures seen so far are accepted; only new ones count.
                rollout.accepted_failures = failed(&rollout);
                None
            }
            RolloutCommand::Abort => Some("aborted by the operator".into()),
            RolloutCommand::Rollback => Some("rolled back by the operator".into()),
        };
        rollout.phase = next;
        if command == RolloutCommand::Rollback {
            self.mark_for_rollback(&mut rollout, 0, usize::MAX)?;
        }
        let rows: Vec<_> = rollout.devices.iter().collect();
        rollout.revision = store.save_rollout(&rollout, &rows)?;
        self.announce_phase(&rollout);
        if command == RolloutCommand::Rollback && self.claim(id)? {
            // The intents are saved: a send that fails now is retried by the driver.
            if let Err(err) = self.send_pending(&mut rollout).await {
                tracing::warn!(rollout = id, error = %crate::api::error::error_chain(&err), "rollback not sent to every device yet; retrying on the next tick");
            }
        }
        self.wake();
        store.rollout(id)?.ok_or(RolloutError::NotFound { id })
    }

    /// Every device in `from..to` the new app reached is marked to get its previous app back;
    /// an intent that was never sent is dropped.
    pub(super) fn mark_for_rollback(
        &self,
        rollout: &mut RolloutRecord,
        from: usize,
        to: usize,
    ) -> Result<(), RolloutError> {
        let agent = rollout.agent_version.is_some();
        let to = to.min(rollout.devices.len());
        for device in &mut rollout.devices[from.min(to)..to] {
            let reached = match (device.status, device.generation) {
                // An agent update not sent yet reached nobody.
                (DeviceStatus::Deploying, None) if agent => false,
                (DeviceStatus::Deploying, None) => {
                    let current = self.fleet.store.desired_generation(&device.device)?;
                    match current.map(|g| g.0) > device.previous_generation {
                        true => {
                            device.generation = current.map(|g| g.0);
                            true
                        }
                        false => false,
                    }
                }
                (
                    DeviceStatus::Deploying | DeviceStatus::Healthy | DeviceStatus::Failed,
                    Some(_),
                ) => true,
                _ => continue,
            };
            if reached {
                device.status = DeviceStatus::RolledBack;
                device.rollback_generation = None;
            } else {
                device.status = DeviceStatus::NotStarted;
            }
        }
        Ok(())
    }
}
