//! Coracle agent: the device daemon. It receives signed desired state over MQTT, pulls
//! images, runs containers itself and reports health.
//!
//! Runtime design note ([`runtime`]): a synchronous `Runtime` trait (create, start, state,
//! kill, delete, list) with one Linux implementation, `LinuxRuntime`. Each container gets a
//! tiny shim process (this binary re-executed as `__shim`, single threaded, no tokio) that
//! sets the container up — cgroup (v1 or v2, limits from a pure function), namespaces,
//! overlayfs or bind rootfs, pivot_root, minimal /dev, masked /proc, read-only /sys,
//! capabilities, no_new_privs, seccomp, rlimits, user — and then supervises it: it records
//! the exit code and OOM kills atomically in `<state dir>/<id>/state.json` and writes the
//! output to size-capped rotating logs. The agent holds no container state in memory, so a
//! restarted agent adopts running containers by reading the state dir. Limits: no user
//! namespace yet; the v2 device allow-list (an eBPF program) is not written, so on v2 only
//! the minimal /dev guards devices. `unsafe` lives in `runtime/process.rs` only.
//!
//! The daemon (issue 6) grows beside it.

pub mod cli;
pub mod runtime;
