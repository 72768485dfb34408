//! Coracle controller (`coracle`): keeps the fleet's state, runs or uses an MQTT broker,
//! enrols devices and drives their desired state.
//!
//! - [`server::serve`] starts everything from a [`config::ServeConfig`] as numbered steps.
//! - [`store::Store`]: SQLite (WAL) with migrations; the source of truth. Desired states are
//!   republished from it at every start, because broker-retained messages may be lost.
//! - [`broker`]: per-device credentials ([`broker::Credentials`]), the pure topic ACL
//!   ([`broker::acl`]), the embedded `mqtt5` broker and the controller's own client; the
//!   [`broker::DeviceAccess`] trait is the seam for an external broker
//!   ([`broker::MosquittoAccounts`] for a Mosquitto on the same host).
//! - [`fleet::Fleet`]: enrolment (bootstrap bundles), removal (revoke + evict), tags.
//! - [`ingest`]: decodes reported/health/events/online into the store; malformed bodies are
//!   logged rate-limited and dropped.
//! - [`rollout`]: staged rollouts — a pure engine plus the driver task that deploys wave by
//!   wave, pauses on failures and rolls back, all state in the store.
//! - [`policy`]: the deploy policy (host paths, capabilities, devices, host network,
//!   privileged; per tag or device) checked before a deploy or rollout reaches devices.
//! - [`upstream`]: images from other registries (Docker Hub, GHCR, LAN registries) pulled
//!   into the controller's registry at deploy time ([`upstream::Mirror`]).
//! - [`api`]: axum JSON API under `/api/v1`; [`access`]: who calls it (admin token, scoped
//!   API tokens, dashboard sessions) and which scope each request needs; the audit log is in
//!   the store; [`cli`]: the operator CLI.
//! - [`deployment_keys`]: the deployment signing key and its rollover chain; a rotation
//!   signs the stored desired states again and devices follow the chain on their own.
//! - [`device_rotation`]: a device's new broker password, sealed, confirmed, then the old
//!   one revoked.
//! - [`agent_release`]: agent builds as images in the registry (`coracle agent release`);
//!   [`agent_update`]: a device's signed `AgentUpdate`, stored and published; agent
//!   rollouts are rollouts whose release is an agent version.
//! - [`dashboard`]: the web dashboard on the API listener (embedded assets, cookie sessions);
//!   [`commands`]: logs/restart commands to devices, awaiting their replies.
//!
//! Limits: one SQLite connection behind a mutex (fine for thousands of devices, not for
//! write-heavy fleets of 100k); device auth is password over TLS (client certificates are
//! in the bootstrap format but not issued yet).

pub mod access;
pub mod agent_release;
pub mod agent_update;
pub mod api;
pub mod app_platforms;
pub mod backup;
pub mod broker;
pub mod cli;
pub mod commands;
pub mod compose;
pub mod config;
pub mod dashboard;
pub mod datadir;
pub mod deploy;
pub mod deployment_keys;
pub mod device_metrics;
pub mod device_rotation;
pub mod device_seal;
pub mod event_relay;
pub mod fd_limit;
pub mod fleet;
pub mod fleet_events;
pub mod ingest;
pub mod log_limit;
pub mod metrics;
pub mod net;
pub mod object_store;
pub mod policy;
pub mod presence;
pub mod pull_token_rotation;
pub mod registry;
pub mod rollout;
pub mod secrets;
pub mod server;
pub mod sessions;
pub mod store;
pub mod upstream;
