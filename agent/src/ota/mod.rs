//! Over-the-air updates of the agent itself.
//!
//! - `version`: this build's version, a stamp in the binary.
//! - `slots`: the A/B slot files and their record (`SlotState`): active build, trial,
//!   abandoned builds; the pure moves and `SlotState::boot`.
//! - `boot`: the step every daemon start goes through: run here, exec the active slot, or
//!   supervise a trial (the watchdog: the old build is the trial's parent).
//! - `stage`: verify a downloaded build (digest, ELF architecture) and write it to the free
//!   slot; nothing is swapped unless every check passes.
//! - `follow`: what the running daemon does with a verified `AgentUpdate`.
//!
//! Flow: update admitted (signature, device) → `follow::decide` → pull the release image
//! (deltas as for any image) → `stage` → the daemon stops and executes itself again → boot
//! supervises the trial → the trial connects and confirms → the parent stops it and
//! executes the confirmed build in its place (one agent process); or the trial exits or
//! misses the deadline → abandoned, the old build runs the daemon in the same process and
//! reports `Condition::AgentUpdateAbandoned`.

pub mod boot;
pub mod follow;
pub mod slots;
pub mod stage;
pub mod version;

pub use version::agent_version;
