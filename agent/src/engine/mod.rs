//! The container engine: `ContainerEngine`, what the supervisor needs from the image store
//! and the runtime (`api`), its production implementation (the image store + pulls + the
//! Linux runtime), and the pure mapping from a service to a container spec.

pub mod api;
pub mod container_spec;
pub mod linux;
pub mod tuning;

pub use api::{
    ContainerEngine, ContainerStats, EngineContainer, EngineError, EngineStatus, ExecOutcome,
    LogTail, PullTick, StopRule,
};
pub use linux::{EngineConfig, LinuxEngine};
