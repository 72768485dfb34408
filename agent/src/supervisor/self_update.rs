//! The supervisor's side of over-the-air agent updates (`crate::ota`): it holds the newest
//! admitted `AgentUpdate`, decides on it, runs the fetch as a blocking job and, once a build
//! is staged, ends the loop so the daemon can execute itself again. A failed pull is tried
//! again after a pause; a bad build is given up and reported as a condition.

use std::time::{Duration, Instant};

use coracle_proto::AgentUpdate;
use tokio::sync::mpsc;

use super::Supervisor;
use crate::ota::follow::{self, Decision, FetchError};
use crate::ota::slots::{SlotBinary, SlotFiles, SlotState};
use crate::ota::stage::DevicePlatform;

/// Pause after a failed pull of a build.
const RETRY_AFTER: Duration = Duration::from_secs(30);

pub(super) type FetchDone = Result<SlotBinary, FetchError>;

/// The self-update state the supervisor keeps.
pub(super) struct SelfUpdate {
    files: SlotFiles,
    device: DevicePlatform,
    /// The newest admitted update (the retained one).
    pub(super) latest: Option<AgentUpdate>,
    fetching: bool,
    retry_at: Option<Instant>,
    pub(super) done_tx: mpsc::UnboundedSender<FetchDone>,
    /// A build is staged: the loop ends and the daemon restarts into it.
    pub(super) restart: bool,
    /// The record as last read or written (reports read it on every change).
    known: SlotState,
}

impl SelfUpdate {
    pub(super) fn new(files: SlotFiles) -> (Self, mpsc::UnboundedReceiver<FetchDone>) {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let known = files.load().unwrap_or_default();
        let update = Self {
            files,
            device: DevicePlatform::this_device(),
            latest: None,
            fetching: false,
            retry_at: None,
            done_tx,
            restart: false,
            known,
        };
        (update, done_rx)
    }

    fn load(&mut self) -> Option<SlotState> {
        match self.files.load() {
            Ok(state) => {
                self.known = state.clone();
                Some(state)
            }
            Err(err) => {
                tracing::warn!(error = %super::error_chain(&err), "agent slot record unreadable; agent update waits");
                None
            }
        }
    }

    fn save(&mut self, state: &SlotState) {
        match self.files.save(state) {
            Ok(()) => self.known = state.clone(),
            Err(err) => {
                tracing::error!(error = %super::error_chain(&err), "agent slot record not saved")
            }
        }
    }

    /// Release images the store keeps: the newest update's (being fetched), the running
    /// build's and the trial's (delta bases for the next release).
    pub(super) fn kept_images(&self) -> Vec<coracle_proto::Digest> {
        let latest = self.latest.as_ref().map(|u| u.image.digest);
        latest.into_iter().chain(self.known.kept_images()).collect()
    }

    /// The condition to report for the newest update, if it was given up.
    pub(super) fn condition(&self) -> Option<coracle_proto::Condition> {
        follow::condition(self.latest.as_ref(), &self.known)
    }
}

impl Supervisor {
    pub(super) fn on_agent_update(&mut self, update: AgentUpdate) {
        if let Some(ota) = &mut self.self_update {
            ota.latest = Some(update);
            ota.retry_at = None;
        }
        self.consider_agent_update();
    }

    /// Starts the fetch of the newest update when it is due; called on arrival and on ticks.
    pub(super) fn consider_agent_update(&mut self) {
        let Some(ota) = &mut self.self_update else {
            return;
        };
        let Some(update) = ota.latest.clone() else {
            return;
        };
        if ota.fetching || ota.restart || ota.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let Some(state) = ota.load() else {
            return;
        };
        match follow::decide(&update, &state, &crate::ota::agent_version(), &ota.device) {
            Decision::Replay { seen } => {
                tracing::debug!(
                    sequence = update.sequence,
                    seen,
                    "agent update older than one followed; ignored"
                );
            }
            Decision::AlreadyRunning => {
                if state.sequence < update.sequence {
                    let mut next = state;
                    next.sequence = update.sequence;
                    ota.save(&next);
                }
            }
            Decision::Abandoned => {}
            Decision::Refuse(reason) => {
                tracing::warn!(version = %update.version, %reason, "agent update refused");
                ota.save(&state.abandon(&update.version, update.binary, reason));
                self.report_if_changed();
            }
            Decision::Fetch => {
                tracing::info!(version = %update.version, image = %update.image, "fetching agent build");
                ota.fetching = true;
                let engine = self.engine.clone();
                let files = ota.files.clone();
                let device = ota.device.clone();
                let done = ota.done_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = done.send(follow::fetch(&engine, &update, &device, &files));
                });
            }
        }
    }

    pub(super) fn on_agent_fetched(&mut self, done: FetchDone) {
        let Some(ota) = &mut self.self_update else {
            return;
        };
        ota.fetching = false;
        let Some(update) = ota.latest.clone() else {
            return;
        };
        match done {
            Ok(target) => {
                tracing::info!(version = %target.version, slot = ?target.slot, "agent build staged; restarting into it");
                ota.restart = true;
            }
            Err(err) if err.is_bad_build() => {
                let reason = super::error_chain(&err);
                tracing::warn!(version = %update.version, %reason, "agent build refused; nothing swapped");
                if let Some(state) = ota.load() {
                    ota.save(&state.abandon(&update.version, update.binary, reason));
                }
                self.report_if_changed();
            }
            Err(err) => {
                tracing::warn!(version = %update.version, error = %super::error_chain(&err), "agent build not fetched; trying again later");
                ota.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }
}
