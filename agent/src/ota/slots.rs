//! Which agent build runs: the installed binary or one of two slot files (`agent-a`,
//! `agent-b` in `<state dir>/agent-slots/`), and the record of it (`slots.json`). The
//! record changes only through the pure moves below and is written atomically, so a power
//! cut leaves the old or the new record, never a mix.
//!
//! A new build lands in the slot that is not active and becomes a `trial`. The next start
//! gives it exactly one attempt (`started` is saved before it runs): it is confirmed once
//! it has connected, else abandoned, and an abandoned binary is never tried again.

use std::path::{Path, PathBuf};

use coracle_proto::Digest;
use serde::{Deserialize, Serialize};

/// The directory under the state dir.
pub const SLOTS_DIR: &str = "agent-slots";
const RECORD_FILE: &str = "slots.json";
/// Abandoned binaries remembered (the newest); older ones may be offered again.
const ABANDONED_KEPT: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    fn file_name(self) -> &'static str {
        match self {
            Slot::A => "agent-a",
            Slot::B => "agent-b",
        }
    }

    fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// A build in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotBinary {
    pub slot: Slot,
    pub version: String,
    /// SHA-256 of the file, checked when it was written.
    pub binary: Digest,
    /// The release image it came from: kept in the store as the next release's delta base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Digest>,
}

/// A build given its one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub target: SlotBinary,
    /// Set (and saved) before the attempt starts: a trial found started at the next start
    /// never confirmed, whatever happened to it.
    pub started: bool,
}

/// A build that was tried and gave up on, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abandoned {
    pub version: String,
    pub binary: Digest,
    pub reason: String,
}

/// Which file the installed binary was when last started (size, modification time, inode):
/// a different one means an operator installed a build by hand, which then wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFile {
    pub len: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotState {
    /// The confirmed build to run; `None`: the installed binary.
    pub active: Option<SlotBinary>,
    pub trial: Option<Trial>,
    /// Newest last.
    pub abandoned: Vec<Abandoned>,
    /// The newest `AgentUpdate::sequence` followed (replays below it are refused).
    pub sequence: u64,
    /// The installed binary as last started from (see [`InstalledFile`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<InstalledFile>,
}

/// How this process was started, told by the start before it (see `boot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Started by a service manager or by hand: select a build.
    Start,
    /// Executed into the active slot by a `Start`.
    Selected,
    /// The trial's one attempt, under its supervising parent.
    Trial,
}

/// What a start does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootPlan {
    /// Run the daemon in this process.
    RunHere,
    /// Replace this process with the active slot's build.
    ExecActive(SlotBinary),
    /// Start the trial as a child and watch it until it confirms or fails.
    Supervise(SlotBinary),
}

impl SlotState {
    /// The slot a new build goes to: never the active one.
    pub fn free_slot(&self) -> Slot {
        self.active.as_ref().map_or(Slot::A, |a| a.slot.other())
    }

    /// Release images to keep in the store (the active build's and the trial's).
    pub fn kept_images(&self) -> impl Iterator<Item = Digest> + '_ {
        let trial = self.trial.as_ref().map(|t| &t.target);
        self.active.iter().chain(trial).filter_map(|b| b.image)
    }

    /// Whether `binary` was tried before and abandoned.
    pub fn abandoned(&self, binary: &Digest) -> Option<&Abandoned> {
        self.abandoned.iter().rev().find(|a| &a.binary == binary)
    }

    /// `target` (already written to its slot) becomes the trial.
    pub fn begin_trial(mut self, target: SlotBinary, sequence: u64) -> Self {
        self.trial = Some(Trial {
            target,
            started: false,
        });
        self.sequence = self.sequence.max(sequence);
        self
    }

    /// The trial connected: its build becomes the active one.
    pub fn confirm(mut self) -> Self {
        if let Some(trial) = self.trial.take() {
            self.active = Some(trial.target);
        }
        self
    }

    /// Gives up on the trial (the active build stays), or records a build refused before it
    /// became one.
    pub fn abandon(mut self, version: &str, binary: Digest, reason: String) -> Self {
        if self
            .trial
            .as_ref()
            .is_some_and(|t| t.target.binary == binary)
        {
            self.trial = None;
        }
        self.abandoned.retain(|a| a.binary != binary);
        self.abandoned.push(Abandoned {
            version: version.to_string(),
            binary,
            reason,
        });
        let excess = self.abandoned.len().saturating_sub(ABANDONED_KEPT);
        self.abandoned.drain(..excess);
        self
    }

    /// A start from the installed binary, which is `file` now: when it changed since the
    /// last such start, an operator installed a build by hand and it runs instead of the
    /// slots (a trial of the build before is dropped too).
    pub fn started_installed(mut self, file: InstalledFile) -> Self {
        if self.installed.is_some_and(|before| before != file) {
            self.active = None;
            self.trial = None;
        }
        self.installed = Some(file);
        self
    }

    /// What a start in `role` does, and the record to save before doing it.
    pub fn boot(&self, role: Role) -> (BootPlan, SlotState) {
        if role != Role::Start {
            return (BootPlan::RunHere, self.clone());
        }
        let mut next = self.clone();
        if let Some(trial) = &self.trial {
            if !trial.started {
                next.trial = Some(Trial {
                    target: trial.target.clone(),
                    started: true,
                });
                return (BootPlan::Supervise(trial.target.clone()), next);
            }
            next = next.abandon(
                &trial.target.version,
                trial.target.binary,
                "it started but never connected (the agent started again before it did)".into(),
            );
        }
        let plan = match &next.active {
            Some(active) => BootPlan::ExecActive(active.clone()),
            None => BootPlan::RunHere,
        };
        (plan, next)
    }
}

/// Why the record or a slot file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("create agent slot dir {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read agent slot record {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("agent slot record {path} is damaged")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write agent slot record {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The slot directory on disk.
#[derive(Debug, Clone)]
pub struct SlotFiles {
    dir: PathBuf,
}

impl SlotFiles {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join(SLOTS_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, slot: Slot) -> PathBuf {
        self.dir.join(slot.file_name())
    }

    /// The record; a missing one is the default (the installed binary runs).
    pub fn load(&self) -> Result<SlotState, SlotError> {
        let path = self.dir.join(RECORD_FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SlotState::default())
            }
            Err(source) => return Err(SlotError::Read { path, source }),
        };
        serde_json::from_slice(&text).map_err(|source| SlotError::Parse { path, source })
    }

    pub fn save(&self, state: &SlotState) -> Result<(), SlotError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| SlotError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.dir.join(RECORD_FILE);
        let json = serde_json::to_vec_pretty(state).expect("a slot record always serializes");
        coracle_images::store::write_atomic(&path, &json)
            .map_err(|source| SlotError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(slot: Slot, version: &str) -> SlotBinary {
        SlotBinary {
            slot,
            version: version.into(),
            binary: Digest::of(version.as_bytes()),
            image: None,
        }
    }

    #[test]
    fn a_fresh_device_runs_the_installed_binary() {
        let (plan, next) = SlotState::default().boot(Role::Start);
        assert_eq!(plan, BootPlan::RunHere);
        assert_eq!(next, SlotState::default());
        assert_eq!(SlotState::default().free_slot(), Slot::A);
    }

    #[test]
    fn a_trial_gets_exactly_one_supervised_attempt() {
        let state = SlotState::default().begin_trial(build(Slot::A, "0.2.0"), 4);
        assert_eq!(state.sequence, 4);
        let (plan, started) = state.boot(Role::Start);
        assert_eq!(plan, BootPlan::Supervise(build(Slot::A, "0.2.0")));
        assert!(started.trial.as_ref().unwrap().started);
        // The agent died with its trial (power cut): the next start abandons it and runs
        // the installed binary again.
        let (plan, after) = started.boot(Role::Start);
        assert_eq!(plan, BootPlan::RunHere);
        assert_eq!(after.trial, None);
        assert_eq!(after.abandoned.len(), 1);
        assert!(after.abandoned(&Digest::of(b"0.2.0")).is_some());
    }

    #[test]
    fn a_confirmed_trial_becomes_active_and_the_next_build_takes_the_other_slot() {
        let state = SlotState::default()
            .begin_trial(build(Slot::A, "0.2.0"), 1)
            .boot(Role::Start)
            .1
            .confirm();
        assert_eq!(state.active, Some(build(Slot::A, "0.2.0")));
        assert_eq!(state.free_slot(), Slot::B);
        let (plan, _) = state.boot(Role::Start);
        assert_eq!(plan, BootPlan::ExecActive(build(Slot::A, "0.2.0")));
        // A failed trial of the next build keeps the active one.
        let failed = state.begin_trial(build(Slot::B, "0.3.0"), 2).abandon(
            "0.3.0",
            Digest::of(b"0.3.0"),
            "exited with 1".into(),
        );
        assert_eq!(failed.active, Some(build(Slot::A, "0.2.0")));
        assert_eq!(failed.trial, None);
        assert_eq!(
            failed.boot(Role::Start).0,
            BootPlan::ExecActive(build(Slot::A, "0.2.0"))
        );
    }

    #[test]
    fn a_binary_installed_by_hand_wins_over_the_slots() {
        let file = InstalledFile {
            len: 10,
            mtime_ns: 1,
            inode: 7,
        };
        let active = SlotState::default()
            .begin_trial(build(Slot::A, "0.2.0"), 1)
            .confirm()
            .started_installed(file);
        // The same installed file: the active slot still runs.
        let again = active.clone().started_installed(file);
        assert_eq!(
            again.boot(Role::Start).0,
            BootPlan::ExecActive(build(Slot::A, "0.2.0"))
        );
        // Replaced (install.sh): the installed binary runs, the slots are forgotten.
        let replaced = active.started_installed(InstalledFile { inode: 8, ..file });
        assert_eq!(replaced.boot(Role::Start).0, BootPlan::RunHere);
        assert_eq!(replaced.active, None);
    }

    #[test]
    fn selected_and_trial_processes_run_without_choosing_again() {
        let state = SlotState::default().begin_trial(build(Slot::A, "0.2.0"), 1);
        for role in [Role::Selected, Role::Trial] {
            let (plan, next) = state.boot(role);
            assert_eq!(plan, BootPlan::RunHere);
            assert_eq!(next, state);
        }
    }

    #[test]
    fn the_abandoned_list_is_bounded_and_keeps_the_newest() {
        let mut state = SlotState::default();
        for n in 0..20u8 {
            state = state.abandon("v", Digest::of(&[n]), format!("reason {n}"));
        }
        assert_eq!(state.abandoned.len(), ABANDONED_KEPT);
        assert_eq!(state.abandoned.last().unwrap().reason, "reason 19");
    }

    #[test]
    fn the_record_survives_a_round_trip_and_a_missing_one_is_default() {
        let dir = tempfile::tempdir().unwrap();
        let files = SlotFiles::new(dir.path());
        assert_eq!(files.load().unwrap(), SlotState::default());
        let state = SlotState::default().begin_trial(build(Slot::B, "0.2.0"), 9);
        files.save(&state).unwrap();
        assert_eq!(files.load().unwrap(), state);
        std::fs::write(files.dir().join(RECORD_FILE), b"{").unwrap();
        assert!(matches!(files.load(), Err(SlotError::Parse { .. })));
    }
}
