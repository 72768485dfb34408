//! The production `ContainerEngine`: the image store + pulls + the Linux runtime, and the
//! pure mapping from a service to a container spec.

pub mod container_spec;
pub mod linux;
pub mod tuning;

pub use linux::{EngineConfig, LinuxEngine};
