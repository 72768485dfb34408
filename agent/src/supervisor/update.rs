//! The intake of new generations and what the reported update status says about them: a
//! verified state begins (pending, persisted; earlier failures may be retried at once); a
//! genuine state the agent cannot run is remembered only to be reported failed, naming what
//! was wrong, while everything keeps running as it is; a failing step of the pending
//! generation (a pull refused for lack of disk, say) is reported with its reason while it is
//! retried with backoff.

use coracle_proto::{DesiredState, Generation, UpdateStatus};

use super::{report, Supervisor};
use crate::reconcile;
use crate::transport::admit::Refused;

impl Supervisor {
    /// The generation the agent is on its way to: the pending one, else the committed one.
    fn newest_generation(&self) -> Generation {
        let pending = self.state.pending.as_ref().map(|p| p.generation);
        pending.unwrap_or_else(|| self.state.committed_generation())
    }

    /// A verified, valid desired state arrived.
    pub(super) fn on_desired(&mut self, desired: DesiredState) {
        let generation = desired.generation;
        if self.state.was_rolled_back(generation) {
            tracing::debug!(%generation, "rolled-back generation redelivered; not retried");
            return;
        }
        let current = self
            .state
            .pending
            .as_ref()
            .or(self.state.committed.as_ref());
        if current.is_some_and(|c| c.generation >= generation) {
            return; // redelivered retained state
        }
        if let Err(err) = self.engine.preflight(&desired) {
            tracing::warn!(%generation, error = %err, "desired state refused: the device cannot run it; nothing changed");
            self.refused = Some(Refused {
                generation,
                reason: err.to_string(),
            });
            return;
        }
        tracing::info!(%generation, "applying desired state");
        self.state.begin(desired);
        self.tracker.gate_started_ms = None;
        // A new generation is a new attempt: whatever failed before is tried at once.
        self.retry = super::retry::Retry::default();
        self.refused = self.refused.take().filter(|r| r.generation > generation);
        self.save();
    }

    /// A genuine desired state the agent cannot run arrived (the transport refused it and
    /// sent the event): report it failed; nothing else changes.
    pub(super) fn on_refused(&mut self, refused: Refused) {
        let known = self.refused.as_ref().map(|r| r.generation);
        if refused.generation <= self.newest_generation() || known == Some(refused.generation) {
            return; // older than what runs, or redelivered
        }
        tracing::warn!(generation = %refused.generation, reason = %refused.reason,
            "desired state refused: invalid; nothing changed");
        self.refused = Some(refused);
    }

    /// The update status to report, when something failed; `None` leaves the status the
    /// state and observation give.
    pub(super) fn failed_update(&self) -> Option<UpdateStatus> {
        if let Some(refused) = self
            .refused
            .as_ref()
            .filter(|r| r.generation > self.newest_generation())
        {
            return Some(UpdateStatus::Failed {
                generation: refused.generation,
                reason: report::refused(&refused.reason),
            });
        }
        if reconcile::refusal(&self.state).is_some() {
            return None; // `report::reported` says why already
        }
        let pending = self.state.pending.as_ref()?;
        Some(UpdateStatus::Failed {
            generation: pending.generation,
            reason: self.retry.first_failure()?,
        })
    }
}
