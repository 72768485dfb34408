//! Scheduled rotation of the devices' registry pull tokens (`[registry]
//! pull_token_rotation_s`; `registry::device_tokens` for what a token is and which are live).
//!
//! Every tick, each online device whose token is a period old (or that reports one older
//! than any live token) is sent its next epoch's token in `Command::RotatePullToken`, sealed
//! to its X25519 key so the broker carries only ciphertext. The agent keeps it, pulls with
//! it from the next request on, and replies `Done`; only then does the store record the
//! epoch, which revokes the tokens two epochs back. A device that does not answer keeps its
//! tokens (the offered one is live already, so one that switched without its reply reaching
//! us still pulls) and is tried again after a back-off; an offline device is tried when it
//! is back. Agents older than pull token rotation never answer, and keep their bootstrap
//! token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use coracle_proto::command::PULL_TOKEN_LABEL;
use coracle_proto::{Command, CommandOutcome, DeviceId};
use futures_util::StreamExt as _;

use crate::commands::{CommandError, DeviceCommands};
use crate::device_seal::{seal_to_device, DeviceSealError};
use crate::registry::PullTokens;
use crate::store::{PullTokenDue, Store, StoreError};

/// How long a device has to keep its new token and confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries in flight at once.
const CONCURRENCY: usize = 16;

/// Why one device's delivery did not happen (or is not known to have happened).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("device {device} has not reported a sealing key, so a token cannot be sent sealed")]
    NoSealingKey { device: DeviceId },
    #[error(transparent)]
    Seal(#[from] DeviceSealError),
    #[error("device {device} refused pull token epoch {epoch}: {reason}")]
    Refused {
        device: DeviceId,
        epoch: u32,
        reason: String,
    },
    #[error("pull token epoch {epoch} not confirmed")]
    Unconfirmed {
        epoch: u32,
        #[source]
        source: CommandError,
    },
    #[error("record pull token epoch {epoch} of device {device}")]
    Store {
        device: DeviceId,
        epoch: u32,
        #[source]
        source: StoreError,
    },
}

/// The schedule's parts.
#[derive(Debug, Clone)]
pub struct PullTokenRotation {
    pub store: std::sync::Arc<Store>,
    pub commands: DeviceCommands,
    pub tokens: PullTokens,
    /// A token's age before the next replaces it (zero: never rotate).
    pub period: Duration,
}

impl PullTokenRotation {
    /// How often due devices are looked for: an eighth of the period, between 1 s and 10 min.
    pub fn tick(&self) -> Duration {
        (self.period / 8).clamp(Duration::from_secs(1), Duration::from_secs(600))
    }

    /// Rotates on schedule for ever (returns at once when rotation is off).
    pub async fn run(self) {
        if self.period.is_zero() {
            tracing::info!("pull token rotation is off ([registry] pull_token_rotation_s = 0)");
            return;
        }
        let mut retry_after: HashMap<DeviceId, Instant> = HashMap::new();
        let mut ticks = tokio::time::interval(self.tick());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = Instant::now();
            retry_after.retain(|_, at| *at > now);
            let due = match self.due().await {
                Ok(due) => due,
                Err(err) => {
                    tracing::warn!(error = %crate::api::error::error_chain(&err), "cannot list the devices due a pull token; trying again next tick");
                    continue;
                }
            };
            let due = due
                .into_iter()
                .filter(|d| !retry_after.contains_key(&d.device));
            let this = &self;
            let results: Vec<_> = futures_util::stream::iter(due)
                .map(|due| async move { (due.device.clone(), this.deliver(&due).await) })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for (device, result) in results {
                match result {
                    Ok(epoch) => {
                        tracing::info!(device = %device, epoch, "pull token rotated; tokens two epochs back are revoked");
                    }
                    Err(err) => {
                        // Once per device per back-off: the retry map is the rate limit.
                        tracing::warn!(device = %device, error = %crate::api::error::error_chain(&err), "pull token rotation did not complete; the device keeps its tokens and is tried again later");
                        retry_after.insert(device, now + self.tick() * 4);
                    }
                }
            }
        }
    }

    async fn due(&self) -> Result<Vec<PullTokenDue>, StoreError> {
        let store = self.store.clone();
        let period = i64::try_from(self.period.as_secs()).unwrap_or(i64::MAX);
        tokio::task::spawn_blocking(move || store.pull_tokens_due(unix_now(), period))
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }

    /// Sends `due.device` its next token and records it once confirmed; returns the epoch.
    pub async fn deliver(&self, due: &PullTokenDue) -> Result<u32, DeliveryError> {
        let device = &due.device;
        let epoch = due.confirmed.saturating_add(1);
        if due.sealing_key.is_empty() {
            return Err(DeliveryError::NoSealingKey {
                device: device.clone(),
            });
        }
        let token = self.tokens.issue(device, &due.enrolment_sha256, epoch);
        let mut plain = PULL_TOKEN_LABEL.to_vec();
        plain.extend_from_slice(token.as_bytes());
        let boxed = seal_to_device(&due.sealing_key, device, &plain)?;
        let command = Command::RotatePullToken {
            epoch,
            sealed: boxed,
        };
        match self.commands.run(device, command, CONFIRM_TIMEOUT).await {
            Ok(CommandOutcome::Done) => {}
            Ok(other) => {
                return Err(DeliveryError::Refused {
                    device: device.clone(),
                    epoch,
                    reason: match other {
                        CommandOutcome::Failed { reason } => reason,
                        other => format!("unexpected answer {other:?}"),
                    },
                })
            }
            Err(source) => return Err(DeliveryError::Unconfirmed { epoch, source }),
        }
        let store = self.store.clone();
        let id = device.clone();
        tokio::task::spawn_blocking(move || store.confirm_pull_epoch(&id, epoch, unix_now()))
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
            .map_err(|source| DeliveryError::Store {
                device: device.clone(),
                epoch,
                source,
            })?;
        Ok(epoch)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
