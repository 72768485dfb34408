//! `PullError`: every step of a pull names what it was doing and on which object.

use coracle_images::delta::DeltaError;
use coracle_images::oci::OciError;
use coracle_images::store::{PartialError, StoreError};
use coracle_images::Digest;
use std::path::PathBuf;

/// Bytes in MiB, rounded up (a need of 100 bytes is not "0 MiB").
fn mib_up(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// Why a pull failed. Network failures leave partial downloads in place for a resume.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("request {method} {url} failed")]
    Request {
        method: &'static str,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{method} {url} answered HTTP {status}: {detail}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("registry token request to {realm} failed: {detail}")]
    Token { realm: String, detail: String },
    #[error("read body of {url}")]
    ReadBody {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {url} is {actual}, but {expected} was asked for")]
    VerifyDigest {
        what: &'static str,
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("parse {what} of {image}")]
    Parse {
        what: &'static str,
        image: String,
        #[source]
        source: OciError,
    },
    #[error(
        "layer {digest} has media type {media_type:?}, which is not a layer this agent can unpack"
    )]
    LayerMediaType { digest: Digest, media_type: String },
    #[error("download blob {digest}")]
    Download {
        digest: Digest,
        #[source]
        source: PartialError,
    },
    #[error("apply delta for layer {diff_id}")]
    ApplyDelta {
        diff_id: Digest,
        #[source]
        source: Box<DeltaError>,
    },
    /// The whole image would not fit: checked before its first layer is fetched, so a pull
    /// that cannot finish costs no download and leaves nothing half done.
    #[error(
        "not enough disk for image {image}: need {} MiB plus a reserve of {} MiB, {} MiB free on {}",
        mib_up(*.needed), mib_up(*.reserve), .available >> 20, .path.display()
    )]
    NotEnoughDisk {
        image: String,
        needed: u64,
        reserve: u64,
        available: u64,
        path: PathBuf,
    },
    #[error("store")]
    Store(#[from] StoreError),
    #[error("registry CA certificate is not valid PEM")]
    CaCertificate(#[source] Box<ureq::Error>),
}
