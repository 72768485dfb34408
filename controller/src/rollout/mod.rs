//! Rollouts. `decide` is the pure decision core (plain data in, a `Decision` out, no I/O,
//! no clock); `observe` turns a device's report into progress and `command` holds the
//! operator's allowed moves, both pure too. `driver` is the task that stores rollouts in
//! SQLite, evaluates them on a tick and on device reports, and deploys through `Fleet`
//! (`send`); `control` holds the operator's entry points (create, pause, resume, abort, rollback).
//! An agent rollout (`agent_rollout`, `agent_send`) sends an agent release instead of an app;
//! `observe` then watches the reported agent version. Several controllers share rollouts
//! through leases; `takeover` republishes what a new driver's devices still wait on.

pub mod agent_rollout;
pub mod agent_send;
pub mod command;
pub mod control;
pub mod decide;
pub mod driver;
pub mod error;
pub mod observe;
pub mod pace;
pub mod send;
pub mod takeover;

pub use agent_rollout::CreateAgentRollout;
pub use command::{transition, RolloutCommand, TransitionRefused};
pub use control::CreateRollout;
pub use decide::{
    decide, parse_waves, wave_ends, Decision, DeviceHealth, Phase, RolloutPlan, RolloutView,
    Threshold, WaveSize, WaveSpecError,
};
pub use driver::{LeaseHolder, Rollouts, DEFAULT_LEASE};
pub use error::RolloutError;
pub use pace::RolloutPace;
