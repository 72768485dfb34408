//! Pull progress per device, kept in memory only: it is transient (a device reports it at
//! most once a second while it pulls) and worthless after a restart, so it never touches
//! SQLite. A progress report older than what the device has already settled (a reported
//! state that is no longer `Applying` that generation) is dropped, since QoS 0 progress and
//! QoS 1 reported states may arrive out of order.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use coracle_proto::{DeviceId, Generation, PullProgress, ReportedState, UpdateStatus};
use serde::{Deserialize, Serialize};

/// The latest progress of one device, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestProgress {
    #[serde(flatten)]
    pub progress: PullProgress,
    /// Whole percent of the current layer.
    pub percent: u8,
    pub received_unix: i64,
}

#[derive(Debug, Default)]
struct Entry {
    latest: Option<LatestProgress>,
    /// Generations up to this one are no longer being pulled (from reported states).
    settled_through: Generation,
}

/// Every device's latest pull progress.
#[derive(Debug, Default)]
pub struct ProgressBoard {
    devices: Mutex<HashMap<DeviceId, Entry>>,
}

impl ProgressBoard {
    fn lock(&self) -> MutexGuard<'_, HashMap<DeviceId, Entry>> {
        // Every update is a single insert or field write: a poisoned map is still whole.
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a progress report; false when it is stale (its generation already settled).
    pub fn record(&self, device: &DeviceId, progress: PullProgress, now_unix: i64) -> bool {
        let mut devices = self.lock();
        let entry = devices.entry(device.clone()).or_default();
        if progress.generation <= entry.settled_through {
            return false;
        }
        entry.latest = Some(LatestProgress {
            percent: progress.percent(),
            progress,
            received_unix: now_unix,
        });
        true
    }

    /// Takes a reported state in: unless the device is still applying the generation its
    /// progress is about, that progress is over and forgotten.
    pub fn settle(&self, reported: &ReportedState) {
        let settled = match &reported.update {
            UpdateStatus::Applying { generation } => Generation(generation.0.saturating_sub(1)),
            UpdateStatus::Verifying { generation }
            | UpdateStatus::RolledBack { generation, .. }
            | UpdateStatus::Failed { generation, .. } => *generation,
            UpdateStatus::Idle => Generation(0),
        }
        .max(reported.applied);
        let mut devices = self.lock();
        let entry = devices.entry(reported.device.clone()).or_default();
        entry.settled_through = entry.settled_through.max(settled);
        if entry
            .latest
            .as_ref()
            .is_some_and(|l| l.progress.generation <= entry.settled_through)
        {
            entry.latest = None;
        }
    }

    /// The device's latest progress while it pulls.
    pub fn latest(&self, device: &DeviceId) -> Option<LatestProgress> {
        self.lock().get(device).and_then(|e| e.latest.clone())
    }

    /// Forgets a removed device.
    pub fn forget(&self, device: &DeviceId) {
        self.lock().remove(device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::samples;

    fn progress(generation: u64) -> PullProgress {
        PullProgress {
            generation: Generation(generation),
            ..samples::pull_progress()
        }
    }

    fn reported(applied: u64, update: UpdateStatus) -> ReportedState {
        ReportedState {
            applied: Generation(applied),
            update,
            ..samples::reported_state(1)
        }
    }

    #[test]
    fn progress_lasts_while_the_generation_is_applied() {
        let board = ProgressBoard::default();
        let device = samples::device();
        assert!(board.record(&device, progress(43), 10));
        assert_eq!(board.latest(&device).unwrap().percent, 95);
        board.settle(&reported(
            42,
            UpdateStatus::Applying {
                generation: Generation(43),
            },
        ));
        assert!(board.latest(&device).is_some(), "still pulling 43");
        board.settle(&reported(
            42,
            UpdateStatus::Verifying {
                generation: Generation(43),
            },
        ));
        assert_eq!(board.latest(&device), None, "43 is pulled and started");
        // A late QoS 0 report of 43 does not come back; 44's does.
        assert!(!board.record(&device, progress(43), 11));
        assert_eq!(board.latest(&device), None);
        assert!(board.record(&device, progress(44), 12));
        board.settle(&reported(
            42,
            UpdateStatus::Failed {
                generation: Generation(44),
                reason: "no disk".into(),
            },
        ));
        assert_eq!(board.latest(&device), None);
        assert!(board.record(&device, progress(45), 13));
        board.forget(&device);
        assert_eq!(board.latest(&device), None);
    }
}
