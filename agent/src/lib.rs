//! Coracle agent: the device daemon. It receives signed desired state over MQTT, pulls
//! images, runs containers itself and reports health.
//!
//! Runtime design note ([`runtime`]): a synchronous `Runtime` trait (create, start, state,
//! kill, delete, list, exec) with one Linux implementation, `LinuxRuntime`. Each container gets a
//! tiny shim process (this binary re-executed as `__shim`, single threaded, no tokio) that
//! sets the container up — cgroup (v1 or v2, limits from a pure function), namespaces,
//! overlayfs or bind rootfs, pivot_root, minimal /dev, masked /proc, read-only /sys,
//! capabilities, no_new_privs, seccomp, rlimits, user — and then supervises it: it records
//! the exit code and OOM kills atomically in `<state dir>/<id>/state.json` and writes the
//! output to size-capped rotating logs. The agent holds no container state in memory, so a
//! restarted agent adopts running containers by reading the state dir. `exec` re-executes
//! the binary as `__exec`, which enters a running container's cgroups, namespaces and root
//! and runs a command with the container's user, capabilities and seccomp filter (health
//! checks, `coracle-agent exec`). Optional user
//! namespace (container root = an unprivileged host id; idmapped lower dirs). On cgroup v2
//! the device allow-list is an eBPF program built in `runtime::cgroups::device_bpf`.
//! `unsafe` lives in the runtime's syscall wrappers only: `process`, `mount_api`,
//! `cgroups::bpf`, and the fd received in `userns`.
//!
//! Daemon modules (issue 6):
//! - `config`: `AgentConfig` from `/etc/coracle/agent.toml`, validated with named errors.
//! - `state`: `AgentState` (committed and pending desired state, rolled-back generations),
//!   persisted atomically by `StateStore` and repaired after kill -9 or a damaged file.
//! - `reconcile`: the pure `plan(&AgentState, &Observed, now_ms) -> Vec<Action>`, restart
//!   policies with backoff, the health gate, and the container lifecycle table.
//! - `transport`: MQTT over TLS (rumqttc + rustls/ring) as a `TransportHandle` plus a
//!   `TransportDriver`; every inbound desired state is verified and validated there.
//! - `supervisor`: the one `select!` loop that owns the state and drives a
//!   `ContainerEngine` (synchronous, through `spawn_blocking`): reconcile ticks, health
//!   checks, reports on change, health samples, commands.
//! - `health`: device vitals from `/proc`, `/sys/class/thermal`, `statvfs`; health-check
//!   rules and TCP/HTTP probes (exec probes run through the engine).
//! - `control`: the local Unix socket behind `coracle-agent status|ps|logs`.
//! - `engine`: `LinuxEngine`, the production `ContainerEngine` (store + pulls + runtime).
//! - `pull`: the OCI registry client and the delta-first image pull into the store.
//! - `sealing_key`: the device's X25519 key (0600 in the state dir) that opens the pull
//!   credentials of direct registries and rotated broker passwords; its public half is
//!   reported.
//! - `credential_rotation`: `coracle device rotate` on the device (open the sealed password,
//!   rewrite the bootstrap file, reconnect with it, then acknowledge).
//! - `delta_cli`: `coracle-agent apply-delta`, the pull's delta apply as a command.
//! - `ota`: over-the-air updates of the agent itself: A/B slot files, the boot step that
//!   gives a new build one supervised trial, verification and staging of a build.
//! - `oci`: the OCI runtime command line (`coracle-agent oci …`, or a `coracle-runc`
//!   link) over the same runtime code: create/start/state/kill/delete/run/list/features,
//!   an exec fifo between create and start, hooks with the state JSON on stdin.
//! - `daemon`: assembles all of the above on a current_thread runtime.
//!
//! Limits: the reconcile core does no I/O; nothing blocks the MQTT event loop; no rumqttc
//! type leaves `transport`.

pub mod cli;
pub mod config;
pub mod control;
pub mod credential_rotation;
pub mod daemon;
pub mod delta_cli;
pub mod engine;
pub mod health;
pub mod network;
pub mod oci;
pub mod ota;
pub mod platform;
pub mod private_dir;
pub mod pull;
pub mod reconcile;
pub mod runtime;
pub mod sealing_key;
pub mod sessions;
pub mod state;
pub mod supervisor;
pub mod transport;
