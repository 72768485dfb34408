//! Coracle's wire contract: everything the agent and the controller say to each other.
//!
//! - Identities: [`DeviceId`], [`ServiceName`], [`Generation`], [`Digest`], [`ImageRef`] —
//!   validated once when parsed or decoded.
//! - Messages: [`DesiredState`] (controller → device, always inside [`Signed`]),
//!   [`ReportedState`], [`HealthSample`], [`Event`], [`CommandRequest`]/[`CommandReply`],
//!   [`Presence`], [`PullProgress`] (per-layer pull progress, on its own topic).
//! - [`topic`]: MQTT topic names, QoS and retain flags, in one place.
//! - [`codec`]: a one-byte protocol version, then postcard. Every decode failure is an error
//!   value, never a panic; bodies over [`codec::MAX_BODY_BYTES`] are refused unread.
//! - [`Signed`]: an ed25519 envelope; [`Signed::verify`] checks key, signature, device id and
//!   generation (replay), each with its own [`VerifyError`] variant.
//! - [`key_rollover`]: the deployment key's history ([`KeyChain`]), each new key signed by
//!   the one before, so devices follow a rotation on their own.
//! - [`AgentUpdate`]: a signed request to run another agent build, on its own topic.
//! - [`Bootstrap`]: the enrolment file `coracle device add` writes and the agent reads.
//! - [`sealed`]: secrets (direct-registry pull credentials) sealed to one device's X25519
//!   key inside its desired state, so the broker sees only ciphertext.
//! - [`DesiredState::validate`] and [`ServiceSpec::validate`]: every field the agent would
//!   otherwise only fail on when creating a container, checked by the controller at deploy
//!   time and by the agent before it touches anything; [`capability`] is the one table of
//!   Linux capability names both use.
//! - [`seccomp`]: a service's seccomp policy (the agent's allow-list, none, or an operator's
//!   Docker-format profile, parsed and validated, with syscall tables per architecture).
//! - [`lifecycle`]: a service's stop signal and grace, init, minimum uptime.
//! - [`tuning`]: a service's sysctls, ulimits, OOM score and host name, as a list of tagged
//!   entries that grows without new layouts; [`service_extras`] checks its tmpfs, shm,
//!   group, log rotation and health-pace entries.
//! - [`legacy`]: the desired-state layouts of older builds, still decoded.
//! - [`frame`]: a length-delimited frame codec over `embedded-io` for the control socket.
//!
//! `no_std` + `alloc` without the default `std` feature, so the contract also builds for
//! microcontroller-class devices.
#![cfg_attr(not(feature = "std"), no_std)]
extern crate alloc;

pub mod agent_update;
pub mod bootstrap;
pub mod capability;
pub mod codec;
pub mod command;
pub mod desired;
pub mod digest;
mod error_chain;
pub mod event;
pub mod frame;
pub mod health;
pub mod ids;
pub mod key_rollover;
pub mod legacy;
pub mod lifecycle;
pub mod network;
pub mod progress;
pub mod reported;
pub mod samples;
pub mod sealed;
pub mod seccomp;
pub mod service_extras;
mod service_rules;
pub mod session;
pub mod signed;
pub mod time;
pub mod topic;
pub mod tuning;
pub mod validate;

pub use agent_update::{
    find_version_stamp, AgentRelease, AgentUpdate, AgentUpdateError, AGENT_BINARY_FILE,
    AGENT_REPOSITORY, VERSION_STAMP_LEN, VERSION_STAMP_PREFIX,
};
pub use bootstrap::{Bootstrap, BrokerAuth};
pub use capability::{
    canonical_capability, capability_name, CapabilityName, CAPABILITIES, DEFAULT_CAPABILITIES,
};
pub use codec::{decode, encode, DecodeError, PROTOCOL_VERSION};
pub use command::{Command, CommandOutcome, CommandReply, CommandRequest, Presence};
pub use desired::{
    Dependency, DependencyCondition, DesiredState, DeviceMapping, HealthCheck, HealthProbe,
    NetworkMode, RegistryAccess, Resources, RestartPolicy, ServiceSpec, UpdateOrder,
    UpdateStrategy, VolumeMount, VolumeSource,
};
pub use digest::{Digest, ImageRef, RefError};
pub use error_chain::error_chain;
pub use event::{Event, EventKind, RejectReason};
pub use health::{ContainerSample, ContainerSampleV1, HealthSample, HealthSampleV1};
pub use ids::{DeviceId, Generation, IdError, ServiceName};
pub use key_rollover::{KeyChain, KeyLink};
pub use legacy::{
    DesiredStateV1, DesiredStateV2, DesiredStateV3, DesiredStateV4, ServiceSpecV1, ServiceSpecV2,
    ServiceSpecV3,
};
pub use lifecycle::{signal_number, Lifecycle};
pub use network::{NetworkAttachment, PortMapping, Protocol, DEFAULT_NETWORK};
pub use progress::PullProgress;
pub use reported::{
    Condition, ContainerState, Health, HeldCredentials, ReportedState, ReportedStateV2,
    ReportedStateV3, ServiceStatus, UpdateStatus,
};
pub use sealed::{SealError, Sealed};
pub use seccomp::{SeccompPolicy, SeccompProfile};
pub use service_extras::{LogRotation, TmpfsMount};
pub use session::{
    OutputStream, SessionEvent, SessionFailure, SessionInput, SessionKind, SessionOutput,
    SessionRequest, WindowSize,
};
pub use signed::{KeyId, Signed, SignedPayload, VerifyError};
pub use topic::TopicKind;
pub use tuning::Tuning;
pub use validate::InvalidDesired;

/// Re-exported so that users sign and verify with the same ed25519 implementation.
pub use ed25519_dalek::{SigningKey, VerifyingKey};
