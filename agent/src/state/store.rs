//! `AgentState` and `StateStore`: load (with repair) and save of the one state file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coracle_proto::{DesiredState, Generation};
use serde::{Deserialize, Serialize};

use super::file::{self, StateFileError};

/// Rolled-back generations remembered; older ones are below the replay floor anyway.
const MAX_ROLLED_BACK: usize = 16;

/// What the agent must remember across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The state that passed its health gate. While `pending` is set it is also the
    /// rollback target, so its images and config are kept until `pending` commits.
    pub committed: Option<DesiredState>,
    /// A newer verified state being applied or verified; it replaces `committed` on commit.
    pub pending: Option<DesiredState>,
    /// Generations that failed their health gate, with the reason; never retried.
    pub rolled_back: BTreeMap<Generation, String>,
}

impl AgentState {
    /// The generation of the committed state (0 before the first commit).
    pub fn committed_generation(&self) -> Generation {
        self.committed
            .as_ref()
            .map(|d| d.generation)
            .unwrap_or_default()
    }

    /// The lowest generation the agent may still accept: anything older is a replay. The
    /// generation of the newest state it has seen (committed, pending or rolled back) is
    /// itself accepted, because retained messages are redelivered on every reconnect.
    pub fn replay_floor(&self) -> Generation {
        let pending = self.pending.as_ref().map(|d| d.generation);
        let rolled = self.rolled_back.keys().next_back().copied();
        [Some(self.committed_generation()), pending, rolled]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_default()
    }

    /// True when `generation` was rolled back and must not be tried again.
    pub fn was_rolled_back(&self, generation: Generation) -> bool {
        self.rolled_back.contains_key(&generation)
    }

    /// Starts applying a newer verified state; a pending one that is superseded is dropped
    /// (the committed state stays the rollback target).
    pub fn begin(&mut self, desired: DesiredState) {
        self.pending = Some(desired);
    }

    /// The pending state passed its gate: it becomes the committed state.
    pub fn commit(&mut self) -> Option<Generation> {
        let pending = self.pending.take()?;
        let generation = pending.generation;
        self.committed = Some(pending);
        Some(generation)
    }

    /// The pending state failed: forget it, remember why, keep the committed state.
    pub fn roll_back(&mut self, reason: String) -> Option<Generation> {
        let pending = self.pending.take()?;
        self.rolled_back.insert(pending.generation, reason);
        while self.rolled_back.len() > MAX_ROLLED_BACK {
            self.rolled_back.pop_first();
        }
        Some(pending.generation)
    }
}

/// How the last load went, for one log line and the reported conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadReport {
    /// No state file: first start.
    Fresh,
    Loaded,
    /// The state file was damaged; the previous copy was used and the damaged file kept.
    RecoveredPrevious {
        damaged: PathBuf,
    },
    /// Both copies were damaged; started empty (running containers are adopted from the
    /// runtime and the controller's retained desired state is redelivered on connect).
    StartedEmpty {
        damaged: PathBuf,
    },
}

/// Why state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot store agent state")]
    File(#[from] StateFileError),
    #[error("agent state in {path} does not decode")]
    Decode {
        path: PathBuf,
        #[source]
        source: postcard::Error,
    },
    #[error("cannot encode agent state")]
    Encode(#[source] postcard::Error),
}

/// The state file's layouts of older builds: [`AgentStateV4`] before
/// `ServiceSpec::tuning`, [`AgentStateV3`] before `ServiceSpec::lifecycle` too,
/// [`AgentStateV2`] before `ServiceSpec::seccomp` too, [`AgentStateV1`] before
/// `DesiredState::registries` too (see `coracle_proto::legacy`).
#[derive(Deserialize)]
struct AgentStateV4 {
    committed: Option<coracle_proto::DesiredStateV4>,
    pending: Option<coracle_proto::DesiredStateV4>,
    rolled_back: BTreeMap<Generation, String>,
}

#[derive(Deserialize)]
struct AgentStateV3 {
    committed: Option<coracle_proto::DesiredStateV3>,
    pending: Option<coracle_proto::DesiredStateV3>,
    rolled_back: BTreeMap<Generation, String>,
}

#[derive(Deserialize)]
struct AgentStateV2 {
    committed: Option<coracle_proto::DesiredStateV2>,
    pending: Option<coracle_proto::DesiredStateV2>,
    rolled_back: BTreeMap<Generation, String>,
}

#[derive(Deserialize)]
struct AgentStateV1 {
    committed: Option<coracle_proto::DesiredStateV1>,
    pending: Option<coracle_proto::DesiredStateV1>,
    rolled_back: BTreeMap<Generation, String>,
}

impl From<AgentStateV4> for AgentState {
    fn from(old: AgentStateV4) -> Self {
        Self {
            committed: old.committed.map(DesiredState::from),
            pending: old.pending.map(DesiredState::from),
            rolled_back: old.rolled_back,
        }
    }
}

impl From<AgentStateV3> for AgentState {
    fn from(old: AgentStateV3) -> Self {
        Self {
            committed: old.committed.map(DesiredState::from),
            pending: old.pending.map(DesiredState::from),
            rolled_back: old.rolled_back,
        }
    }
}

impl From<AgentStateV2> for AgentState {
    fn from(old: AgentStateV2) -> Self {
        Self {
            committed: old.committed.map(DesiredState::from),
            pending: old.pending.map(DesiredState::from),
            rolled_back: old.rolled_back,
        }
    }
}

impl From<AgentStateV1> for AgentState {
    fn from(old: AgentStateV1) -> Self {
        Self {
            committed: old.committed.map(DesiredState::from),
            pending: old.pending.map(DesiredState::from),
            rolled_back: old.rolled_back,
        }
    }
}

/// Decodes `body` as one `T` that uses every byte.
fn exact<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, postcard::Error> {
    match postcard::take_from_bytes(body)? {
        (value, []) => Ok(value),
        _ => Err(postcard::Error::DeserializeBadEncoding),
    }
}

/// The one state file under the agent's state dir.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("agent-state.bin"),
        }
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state, repairing what a kill or a bad card left behind: a stale temp file
    /// is removed, a damaged file is moved aside and the previous copy used.
    pub fn load(&self) -> Result<(AgentState, LoadReport), StateError> {
        file::remove_stale_temp(&self.path)?;
        match Self::decode_file(&self.path) {
            Ok(Some(state)) => return Ok((state, LoadReport::Loaded)),
            Ok(None) => return Ok((AgentState::default(), LoadReport::Fresh)),
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "agent state damaged")
            }
        }
        let damaged = file::quarantine(&self.path)?;
        match Self::decode_file(&file::previous_path(&self.path)) {
            Ok(Some(state)) => Ok((state, LoadReport::RecoveredPrevious { damaged })),
            Ok(None) | Err(_) => Ok((AgentState::default(), LoadReport::StartedEmpty { damaged })),
        }
    }

    /// Reads the state without repairing anything, for a process that is not the agent
    /// (the agent may be mid-write); `None` when there is no state yet.
    pub fn peek(&self) -> Result<Option<AgentState>, StateError> {
        Self::decode_file(&self.path)
    }

    fn decode_file(path: &Path) -> Result<Option<AgentState>, StateError> {
        let Some(body) = file::read_checked(path)? else {
            return Ok(None);
        };
        let source = match exact::<AgentState>(&body) {
            Ok(state) => return Ok(Some(state)),
            Err(source) => source,
        };
        // A file written by an older build (see `AgentStateV4`). Each layout must use every
        // byte: postcard alone ignores what is left over, and an older file could then pass
        // for a newer layout with garbage in it.
        if let Ok(old) = exact::<AgentStateV4>(&body) {
            return Ok(Some(old.into()));
        }
        if let Ok(old) = exact::<AgentStateV3>(&body) {
            return Ok(Some(old.into()));
        }
        if let Ok(old) = exact::<AgentStateV2>(&body) {
            return Ok(Some(old.into()));
        }
        exact::<AgentStateV1>(&body)
            .map(|old| Some(old.into()))
            .map_err(|_| StateError::Decode {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Saves the state atomically.
    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        let body = postcard::to_stdvec(state).map_err(StateError::Encode)?;
        file::write_atomic(&self.path, &body)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::samples;

    fn desired(generation: u64) -> DesiredState {
        let mut d = samples::desired_with_services(2);
        d.generation = Generation(generation);
        d
    }

    #[test]
    fn lifecycle_commit_and_rollback_move_the_right_slots() {
        let mut state = AgentState::default();
        assert_eq!(state.replay_floor(), Generation(0));
        state.begin(desired(3));
        assert_eq!(state.replay_floor(), Generation(3));
        assert_eq!(state.commit(), Some(Generation(3)));
        assert_eq!(state.committed_generation(), Generation(3));
        state.begin(desired(4));
        assert_eq!(state.roll_back("unhealthy".into()), Some(Generation(4)));
        assert_eq!(state.committed_generation(), Generation(3));
        assert!(state.pending.is_none());
        assert!(state.was_rolled_back(Generation(4)));
        // The rolled-back generation stays the replay floor: 4 is ignored, 3 is a replay.
        assert_eq!(state.replay_floor(), Generation(4));
        assert_eq!(state.commit(), None);
    }

    #[test]
    fn rolled_back_history_is_bounded() {
        let mut state = AgentState::default();
        for g in 1..=40 {
            state.begin(desired(g));
            state.roll_back(format!("gen {g}"));
        }
        assert_eq!(state.rolled_back.len(), MAX_ROLLED_BACK);
        assert!(state.was_rolled_back(Generation(40)));
        assert!(!state.was_rolled_back(Generation(1)));
    }

    #[test]
    fn a_state_file_from_before_direct_registries_still_loads() {
        #[derive(Serialize)]
        struct Old {
            committed: Option<coracle_proto::DesiredStateV1>,
            pending: Option<coracle_proto::DesiredStateV1>,
            rolled_back: BTreeMap<Generation, String>,
        }
        let v1 = |d: DesiredState| coracle_proto::DesiredStateV1 {
            device: d.device,
            generation: d.generation,
            services: d
                .services
                .iter()
                .filter_map(|s| s.legacy_layout())
                .collect(),
        };
        let mut rolled_back = BTreeMap::new();
        rolled_back.insert(Generation(6), "unhealthy".to_string());
        let old = Old {
            committed: Some(v1(desired(7))),
            pending: Some(v1(desired(8))),
            rolled_back: rolled_back.clone(),
        };
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        file::write_atomic(store.path(), &postcard::to_stdvec(&old).unwrap()).unwrap();
        let expected = AgentState {
            committed: Some(desired(7)),
            pending: Some(desired(8)),
            rolled_back,
        };
        assert_eq!(store.load().unwrap(), (expected, LoadReport::Loaded));
    }

    #[test]
    fn a_state_file_from_before_seccomp_policies_still_loads() {
        #[derive(Serialize)]
        struct Old {
            committed: Option<coracle_proto::DesiredStateV2>,
            pending: Option<coracle_proto::DesiredStateV2>,
            rolled_back: BTreeMap<Generation, String>,
        }
        let v2 = |d: DesiredState| coracle_proto::DesiredStateV2 {
            device: d.device,
            generation: d.generation,
            services: d
                .services
                .iter()
                .filter_map(|s| s.legacy_layout())
                .collect(),
            registries: d.registries,
        };
        let old = Old {
            committed: Some(v2(desired(7))),
            pending: None,
            rolled_back: BTreeMap::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        file::write_atomic(store.path(), &postcard::to_stdvec(&old).unwrap()).unwrap();
        let expected = AgentState {
            committed: Some(desired(7)),
            ..AgentState::default()
        };
        assert_eq!(store.load().unwrap(), (expected, LoadReport::Loaded));
    }

    #[test]
    fn a_state_file_from_before_lifecycles_still_loads() {
        #[derive(Serialize)]
        struct Old {
            committed: Option<coracle_proto::DesiredStateV3>,
            pending: Option<coracle_proto::DesiredStateV3>,
            rolled_back: BTreeMap<Generation, String>,
        }
        let v3 = |d: DesiredState| coracle_proto::DesiredStateV3 {
            device: d.device,
            generation: d.generation,
            services: d.services.iter().filter_map(|s| s.layout_v2()).collect(),
            registries: d.registries,
        };
        let old = Old {
            committed: Some(v3(desired(7))),
            pending: Some(v3(desired(8))),
            rolled_back: BTreeMap::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        file::write_atomic(store.path(), &postcard::to_stdvec(&old).unwrap()).unwrap();
        let expected = AgentState {
            committed: Some(desired(7)),
            pending: Some(desired(8)),
            ..AgentState::default()
        };
        assert_eq!(store.load().unwrap(), (expected, LoadReport::Loaded));
    }

    #[test]
    fn a_state_file_from_before_tuning_still_loads() {
        #[derive(Serialize)]
        struct Old {
            committed: Option<coracle_proto::DesiredStateV4>,
            pending: Option<coracle_proto::DesiredStateV4>,
            rolled_back: BTreeMap<Generation, String>,
        }
        let with_init = |generation| {
            let mut d = desired(generation);
            d.services[0].lifecycle.init = true;
            d
        };
        let v4 = |d: DesiredState| coracle_proto::DesiredStateV4 {
            device: d.device,
            generation: d.generation,
            services: d.services.iter().filter_map(|s| s.layout_v3()).collect(),
            registries: d.registries,
        };
        let old = Old {
            committed: Some(v4(with_init(7))),
            pending: Some(v4(with_init(8))),
            rolled_back: BTreeMap::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        file::write_atomic(store.path(), &postcard::to_stdvec(&old).unwrap()).unwrap();
        let expected = AgentState {
            committed: Some(with_init(7)),
            pending: Some(with_init(8)),
            ..AgentState::default()
        };
        assert_eq!(store.load().unwrap(), (expected, LoadReport::Loaded));
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        assert_eq!(
            store.load().unwrap(),
            (AgentState::default(), LoadReport::Fresh)
        );
        let mut state = AgentState::default();
        state.begin(desired(7));
        state.commit();
        state.begin(desired(8));
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), (state, LoadReport::Loaded));
    }

    #[test]
    fn damaged_state_falls_back_to_previous_copy_and_keeps_the_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let mut first = AgentState::default();
        first.begin(desired(1));
        store.save(&first).unwrap();
        let mut second = first.clone();
        second.commit();
        store.save(&second).unwrap();
        std::fs::write(store.path(), b"CRST garbage").unwrap();
        let (state, report) = store.load().unwrap();
        assert_eq!(state, first);
        let LoadReport::RecoveredPrevious { damaged } = report else {
            panic!("expected recovery, got {report:?}");
        };
        assert!(damaged.exists());
    }

    #[test]
    fn both_copies_damaged_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        store.save(&AgentState::default()).unwrap();
        store.save(&AgentState::default()).unwrap();
        std::fs::write(store.path(), b"x").unwrap();
        std::fs::write(file::previous_path(store.path()), b"y").unwrap();
        let (state, report) = store.load().unwrap();
        assert_eq!(state, AgentState::default());
        assert!(matches!(report, LoadReport::StartedEmpty { .. }));
    }
}
