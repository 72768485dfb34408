//! Reconcile: desired state vs observed containers → a list of idempotent actions.
//!
//! Everything here is pure (no I/O, no clock reads): [`plan`] takes the persisted
//! [`AgentState`](crate::state::AgentState), what the supervisor observed, and the current
//! monotonic time in milliseconds. The supervisor applies the actions and calls `plan` again;
//! an action whose target already holds (starting a running container) is a no-op, so
//! re-planning after a crash or a failed action never does harm.

mod action;
mod gate;
mod lifecycle;
mod observed;
mod plan;
mod restart;

pub use action::Action;
pub use lifecycle::{transition, LifecycleError, PhaseKind, Verb};
pub use observed::{fingerprint, Busy, Fingerprint, Observed, ObservedContainer, Phase, Role};
pub use plan::{plan, refusal, target};
pub use restart::{backoff_ms, should_restart, BACKOFF_MAX_MS, BACKOFF_MIN_MS};

#[cfg(test)]
mod model_tests;
