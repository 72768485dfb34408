//! Coracle end-to-end tests, the fleet simulator and benchmarks.
//!
//! The library holds the harness the end-to-end tests share:
//! - [`fixtures`]: the shared image archives, found the same way locally and in CI;
//! - [`netns`]: test hosts in network namespaces on a private bridge (veth pairs), whose
//!   links a test can cut;
//! - [`process`]: child processes that are killed and reaped on drop, with waits on their
//!   output instead of sleeps;
//! - [`mosquitto`]: Debian's Mosquitto as a real external broker;
//! - [`sim`]: the fleet simulator behind the `coracle-sim` binary.

pub mod fixtures;
pub mod mosquitto;
pub mod netns;
pub mod process;
pub mod sim;
