//! `coracle device rotate NAME`: a new broker password for one device, delivered over its
//! own authenticated channel and switched to without a gap. In order:
//!
//! 1. the device must be online and have reported its X25519 sealing key (an offline device
//!    is refused, naming why: the switch needs the agent to confirm it, and a password that
//!    waited for a device would have to be kept valid for as long);
//! 2. a fresh random password is sealed to that key (`coracle_proto::sealed`, labelled
//!    [`ROTATED_PASSWORD_LABEL`]): the broker carries ciphertext only;
//! 3. the broker accepts the new password beside the old one;
//! 4. `Command::RotatePassword` goes to the device, whose agent rewrites its bootstrap file,
//!    reconnects with the new password and only then replies `Done`;
//! 5. on `Done` the store records the new hash and the broker drops the old password. On a
//!    `Failed` reply the new password is dropped and the old one stays. With no reply in
//!    time both stay valid, in the store too (the agent may have switched after all, and
//!    must find its password after a controller restart), until a rotation is confirmed:
//!    the answer says to rotate again.
//!
//! The device's registry pull token is bound to its enrolment, not to the current password
//! (`store::grants`), so it keeps working.

use std::time::Duration;

use coracle_proto::command::ROTATED_PASSWORD_LABEL;
use coracle_proto::{Command, CommandOutcome, DeviceId};

use crate::broker::{password_sha256, AccessError};
use crate::commands::{CommandError, DeviceCommands};
use crate::device_seal::{seal_to_device, DeviceSealError};
use crate::fleet::Fleet;
use crate::secrets::random_token;
use crate::store::StoreError;

/// How long the agent has to reconnect with the new password and confirm (it gives up and
/// keeps the old one after 30 s).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(45);

/// Why a rotation did not happen (or is not known to have happened).
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("device {device} is offline: a rotation needs the device connected to confirm its new password; run it again when the device is online")]
    Offline { device: DeviceId },
    #[error("device {device} has not reported a sealing key (its agent predates sealed secrets or has not connected yet), so its new password cannot be sent sealed")]
    NoSealingKey { device: DeviceId },
    #[error(transparent)]
    Seal(#[from] DeviceSealError),
    #[error("broker account of device {device}")]
    Access {
        device: DeviceId,
        #[source]
        source: AccessError,
    },
    #[error("device {device} refused the new password and keeps the old one: {reason}")]
    Refused { device: DeviceId, reason: String },
    #[error("device {device} did not confirm its new password; both passwords stay valid until a rotation is confirmed: run it again")]
    Unconfirmed {
        device: DeviceId,
        #[source]
        source: CommandError,
    },
}

/// Rotates `device`'s broker password (the steps in the module note).
pub async fn rotate(
    fleet: &Fleet,
    commands: &DeviceCommands,
    device: &DeviceId,
) -> Result<(), RotationError> {
    // 1. Online, with a sealing key.
    let record = fleet.store.device(device)?;
    if !record.online {
        return Err(RotationError::Offline {
            device: device.clone(),
        });
    }
    let sealing_key = fleet
        .store
        .reported(device)?
        .map(|r| r.sealing_key)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| RotationError::NoSealingKey {
            device: device.clone(),
        })?;
    // 2. Seal a fresh password.
    let password = random_token();
    let mut plain = ROTATED_PASSWORD_LABEL.to_vec();
    plain.extend_from_slice(password.as_bytes());
    let boxed = seal_to_device(&sealing_key, device, &plain)?;
    // 3. Both passwords valid.
    let access = |source| RotationError::Access {
        device: device.clone(),
        source,
    };
    {
        let (id, password) = (device.clone(), password.clone());
        fleet
            .change_access(move |a| a.allow_next(&id, &password))
            .await
            .map_err(access)?;
    }
    fleet
        .store
        .set_next_password(device, Some(&password_sha256(&password)))?;
    // 4. The device switches and confirms.
    let command = Command::RotatePassword { sealed: boxed };
    let outcome = commands.run(device, command, CONFIRM_TIMEOUT).await;
    // 5. Commit, or undo.
    match outcome {
        Ok(CommandOutcome::Done) => {
            fleet
                .store
                .set_device_password(device, &password_sha256(&password))?;
            let id = device.clone();
            fleet
                .change_access(move |a| a.commit_next(&id))
                .await
                .map_err(access)?;
            tracing::info!(device = %device, "device password rotated; the old one is revoked");
            Ok(())
        }
        Ok(other) => {
            let id = device.clone();
            // The embedded broker's table cannot fail to forget.
            let _ = fleet
                .change_access(move |a| {
                    a.drop_next(&id);
                    Ok(())
                })
                .await;
            fleet.store.set_next_password(device, None)?;
            let reason = match other {
                CommandOutcome::Failed { reason } => reason,
                other => format!("unexpected answer {other:?}"),
            };
            Err(RotationError::Refused {
                device: device.clone(),
                reason,
            })
        }
        Err(source) => Err(RotationError::Unconfirmed {
            device: device.clone(),
            source,
        }),
    }
}
