//! The production `ContainerEngine`: the image store + pulls + the Linux runtime, and the
//! pure mapping from a service to a container spec.

pub mod container_spec;
pub mod linux;

pub use linux::{EngineConfig, LinuxEngine};
