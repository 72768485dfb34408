//! Coracle end-to-end tests, the fleet simulator and benchmarks.
//!
//! The library holds the harness the end-to-end tests share:
//! - [`cgroups`]: removing a test's own cgroup parent from every hierarchy;
//! - [`fixtures`]: the shared image archives, found the same way locally and in CI;
//! - [`page_cache`]: device-like page-cache conditions for memory benchmarks;
//! - [`netns`]: test hosts in network namespaces on a private bridge (veth pairs), whose
//!   links a test can cut;
//! - [`process`]: child processes that are killed and reaped on drop, with waits on their
//!   output instead of sleeps;
//! - [`mosquitto`]: Debian's Mosquitto as a real external broker;
//! - [`registry`]: Debian's `docker-registry` as a real OCI registry, filled with `skopeo`;
//! - [`registry_auth`]: a private CA for a TLS registry, and a token service for its token auth;
//! - [`cut_proxy`]: a TCP proxy that cuts a transfer part way, counting what it forwards;
//! - [`sim`]: the fleet simulator behind the `coracle-sim` binary;
//! - [`e2e`]: the real controller and real agents in network namespaces, and test images.

pub mod cgroups;
pub mod cut_proxy;
pub mod e2e;
pub mod elf;
pub mod fixtures;
pub mod mosquitto;
pub mod netns;
pub mod page_cache;
pub mod postgres;
pub mod process;
pub mod radosgw;
pub mod registry;
pub mod registry_auth;
pub mod sim;
