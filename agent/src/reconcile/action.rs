//! `Action`: one idempotent step the planner asks the supervisor to take.

use coracle_proto::{Digest, Generation, ImageRef, ServiceName, ServiceSpec};

use super::lifecycle::Verb;
use super::observed::Role;

/// One idempotent step for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch an image into the store (no-op if present).
    Pull {
        image: ImageRef,
    },
    /// Create the service's container from this spec (it does not exist yet).
    Create {
        spec: Box<ServiceSpec>,
    },
    Start {
        service: ServiceName,
    },
    /// Stop and start again (an unhealthy container, or a restart command).
    Restart {
        service: ServiceName,
    },
    Stop {
        service: ServiceName,
    },
    Remove {
        service: ServiceName,
    },
    /// `start-first`: create the service's successor beside its serving container.
    CreateNext {
        spec: Box<ServiceSpec>,
    },
    StartNext {
        service: ServiceName,
    },
    StopNext {
        service: ServiceName,
    },
    RemoveNext {
        service: ServiceName,
    },
    /// The container a promotion retired: stopped and removed in a job of its own.
    StopRetired {
        service: ServiceName,
    },
    RemoveRetired {
        service: ServiceName,
    },
    /// The successor is up: give it the service's names and published ports; it is the
    /// service's container from then on, and the old one is retired.
    Promote {
        service: ServiceName,
    },
    /// Remove images no desired state references any more.
    Gc {
        images: Vec<Digest>,
    },
    /// Every container of the pending generation runs: start its health gate clock.
    StartGate {
        generation: Generation,
    },
    /// The pending generation passed its gate: make it the committed one.
    Commit {
        generation: Generation,
    },
    /// The pending generation failed: drop it, never retry it, return to the committed one.
    RollBack {
        generation: Generation,
        service: ServiceName,
        reason: String,
    },
}

impl Action {
    /// The lifecycle verb of a container action (`None` for pulls, collection, gate moves).
    pub fn verb(&self) -> Option<Verb> {
        match self {
            Action::Create { .. } | Action::CreateNext { .. } => Some(Verb::Create),
            Action::Start { .. } | Action::StartNext { .. } => Some(Verb::Start),
            Action::Restart { .. } => Some(Verb::Restart),
            Action::Stop { .. } | Action::StopNext { .. } | Action::StopRetired { .. } => {
                Some(Verb::Stop)
            }
            Action::Remove { .. } | Action::RemoveNext { .. } | Action::RemoveRetired { .. } => {
                Some(Verb::Remove)
            }
            _ => None,
        }
    }

    /// The service whose container this action moves, if it moves one.
    pub fn service(&self) -> Option<&ServiceName> {
        match self {
            Action::Create { spec } | Action::CreateNext { spec } => Some(&spec.name),
            Action::Start { service }
            | Action::Restart { service }
            | Action::Stop { service }
            | Action::Remove { service }
            | Action::StartNext { service }
            | Action::StopNext { service }
            | Action::RemoveNext { service }
            | Action::StopRetired { service }
            | Action::RemoveRetired { service }
            | Action::Promote { service } => Some(service),
            Action::Pull { .. }
            | Action::Gc { .. }
            | Action::StartGate { .. }
            | Action::Commit { .. }
            | Action::RollBack { .. } => None,
        }
    }

    /// Which of the service's containers a container action moves.
    pub fn role(&self) -> Role {
        match self {
            Action::CreateNext { .. }
            | Action::StartNext { .. }
            | Action::StopNext { .. }
            | Action::RemoveNext { .. } => Role::Next,
            Action::StopRetired { .. } | Action::RemoveRetired { .. } => Role::Retired,
            _ => Role::Current,
        }
    }
}
