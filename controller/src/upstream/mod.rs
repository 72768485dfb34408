//! Images from other registries. `coracle deploy` resolves an `image:` that the controller's
//! own registry does not hold (`nginx:1.27`, `ghcr.io/org/app:2`, `registry.lan:5000/x@sha256:…`)
//! by pulling it from its registry into the controller's, so devices keep pulling only from
//! the controller (deltas included) and never see upstream credentials.
//!
//! - [`reference`]: `UpstreamRef`, Docker's naming rules, the mirror's repository name. Pure.
//! - [`credentials`]: `Credentials` and `Logins` (`coracle registry login`, mode 0600).
//! - [`endpoint`]: the `[[registries]]` config section and `Endpoint` (URL, CA, credentials).
//! - [`client`]: `UpstreamClient`, blocking ureq client for one repository.
//! - [`direct`]: registries devices pull from themselves (`direct = true`): the digest is
//!   pinned, nothing is stored, and each device gets a `RegistryAccess` with the pull
//!   credential sealed to its reported key; `direct_platforms` reads what such an image
//!   runs on from its registry, for the deploy's platform check.
//! - [`mirror`]: `Mirror`, the async entry point: download on a blocking thread, store through
//!   the registry's push path, return the pinned `ImageRef`.
//!
//! Limits: schema-1 manifests and nested indexes are refused; a mirrored index keeps its
//! upstream bytes (so its digest is the upstream digest) and names platforms the fleet does
//! not run, whose manifests are not stored.

pub mod client;
pub mod credentials;
pub mod direct;
mod direct_platforms;
pub mod endpoint;
mod error;
pub mod mirror;
pub mod reference;

pub use credentials::{Credentials, Logins};
pub use direct::DirectError;
pub use endpoint::RegistrySection;
pub use error::UpstreamError;
pub use mirror::{Mirror, MirrorSettings};
pub use reference::UpstreamRef;
