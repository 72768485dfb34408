//! What the running agent does with a verified `AgentUpdate`: the pure decision, and the
//! fetch-and-stage work it starts (a blocking job: the pull through the engine, deltas
//! included, then `stage`). After a staged build the daemon restarts itself, and the boot
//! step gives the build its trial.

use std::sync::Arc;

use coracle_proto::{AgentUpdate, Condition, AGENT_BINARY_FILE};

use super::slots::{SlotBinary, SlotFiles, SlotState};
use super::stage::{check_platform, stage, DevicePlatform, StageError};
use crate::engine::{ContainerEngine, EngineError};

/// What to do with an update.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Older than one already followed: a replay, ignored.
    Replay { seen: u64 },
    /// This build already is that version.
    AlreadyRunning,
    /// That binary was tried and given up on; it is not tried again.
    Abandoned,
    /// The update cannot be for this device; give it up without downloading.
    Refuse(String),
    /// Download, verify and stage it.
    Fetch,
}

/// Decides on `update` given the slot record and this build.
pub fn decide(
    update: &AgentUpdate,
    state: &SlotState,
    own_version: &str,
    device: &DevicePlatform,
) -> Decision {
    if update.sequence < state.sequence {
        return Decision::Replay {
            seen: state.sequence,
        };
    }
    if update.version == own_version {
        return Decision::AlreadyRunning;
    }
    if state.abandoned(&update.binary).is_some() {
        return Decision::Abandoned;
    }
    if let Err(err) = check_platform(update, device) {
        return Decision::Refuse(err.to_string());
    }
    Decision::Fetch
}

/// The condition reported while the newest update is one this device gave up on.
pub fn condition(update: Option<&AgentUpdate>, state: &SlotState) -> Option<Condition> {
    let update = update?;
    let abandoned = state.abandoned(&update.binary)?;
    Some(Condition::AgentUpdateAbandoned {
        version: abandoned.version.clone(),
        reason: abandoned.reason.clone(),
    })
}

/// Why fetching a build failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The pull failed (network, disk): tried again later.
    #[error("pull agent build {version}")]
    Pull {
        version: String,
        #[source]
        source: EngineError,
    },
    #[error("stage agent build")]
    Stage(#[from] StageError),
}

impl FetchError {
    /// Whether the build itself is bad (give it up) rather than the attempt.
    pub fn is_bad_build(&self) -> bool {
        matches!(self, Self::Stage(err) if err.is_bad_build())
    }
}

/// Pulls the release image and stages its binary (blocking: run on a blocking thread).
pub fn fetch(
    engine: &Arc<dyn ContainerEngine>,
    update: &AgentUpdate,
    device: &DevicePlatform,
    files: &SlotFiles,
) -> Result<SlotBinary, FetchError> {
    let pull = |source| FetchError::Pull {
        version: update.version.clone(),
        source,
    };
    engine
        .pull(&update.image, None, &mut |_| {})
        .map_err(pull)?;
    let path = engine
        .image_file(&update.image, AGENT_BINARY_FILE)
        .map_err(pull)?;
    Ok(stage(&path, update, device, files)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::Digest;

    fn update(version: &str, sequence: u64) -> AgentUpdate {
        AgentUpdate {
            device: "pi-1".parse().unwrap(),
            sequence,
            version: version.into(),
            platform: DevicePlatform::this_device().oci,
            image: format!("coracle-agent@{}", Digest::of(b"index"))
                .parse()
                .unwrap(),
            binary: Digest::of(version.as_bytes()),
        }
    }

    #[test]
    fn decisions_table() {
        let device = DevicePlatform::this_device();
        let seen = SlotState {
            sequence: 5,
            ..Default::default()
        };
        let gave_up = SlotState::default().abandon("0.3.0", Digest::of(b"0.3.0"), "crashed".into());
        let mut riscv = update("0.2.0", 1);
        riscv.platform = "linux/riscv64".into();
        let table = [
            (update("0.2.0", 4), &seen, Decision::Replay { seen: 5 }),
            (update("0.1.0", 5), &seen, Decision::AlreadyRunning),
            (update("0.2.0", 5), &seen, Decision::Fetch),
            (update("0.3.0", 1), &gave_up, Decision::Abandoned),
        ];
        for (update, state, want) in table {
            assert_eq!(decide(&update, state, "0.1.0", &device), want, "{update:?}");
        }
        assert!(matches!(
            decide(&riscv, &SlotState::default(), "0.1.0", &device),
            Decision::Refuse(reason) if reason.contains("linux/riscv64")
        ));
    }

    #[test]
    fn the_abandon_condition_follows_the_newest_update_only() {
        let gave_up = SlotState::default().abandon("0.3.0", Digest::of(b"0.3.0"), "crashed".into());
        assert_eq!(
            condition(Some(&update("0.3.0", 1)), &gave_up),
            Some(Condition::AgentUpdateAbandoned {
                version: "0.3.0".into(),
                reason: "crashed".into()
            })
        );
        assert_eq!(condition(Some(&update("0.4.0", 2)), &gave_up), None);
        assert_eq!(condition(None, &gave_up), None);
    }
}
