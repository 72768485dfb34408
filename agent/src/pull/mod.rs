//! Image pulls for the agent: a synchronous OCI distribution client (`client`, answering
//! bearer challenges parsed by `coracle_images::challenge`), the pull of one image into the
//! device store, delta first (`image`), and clients for registries a device reaches directly
//! with a sealed credential (`direct`). Runs on blocking threads (`spawn_blocking`) so the
//! event loop never waits on it.
//!
//! Delta contract with the controller: `HEAD /v2/<repo>/coracle/deltas/<target diff_id>?have=
//! <diff_id>,...` answers 404 (no delta: pull the full layer) or 200/307 with
//! `Docker-Content-Digest` naming a delta blob, fetched from `/v2/<repo>/blobs/<digest>`
//! like any blob (so it resumes with Range too). A blob GET may answer 307 to a pre-signed
//! object-store URL (`redirect.rs`: followed without the pull token).

pub mod client;
pub mod direct;
pub mod error;
pub mod image;
mod redirect;
pub mod token;

pub use client::{BasicCredentials, DeltaOffer, RegistryClient, RegistryEndpoint};
pub use direct::{direct_client, DirectError};
pub use error::PullError;
pub use image::{Progress, PullReport, Puller};
pub use token::{PullToken, PullTokenError, PULL_TOKEN_FILE};
