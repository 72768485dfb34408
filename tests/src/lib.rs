//! Coracle end-to-end tests, the fleet simulator and benchmarks.
//!
//! The library holds the harness the end-to-end tests share:
//! - [`fixtures`]: the shared image archives, found the same way locally and in CI;
//! - [`netns`]: test hosts in network namespaces on a private bridge (veth pairs), whose
//!   links a test can cut;
//! - [`process`]: child processes that are killed and reaped on drop, with waits on their
//!   output instead of sleeps.

pub mod fixtures;
pub mod netns;
pub mod process;
