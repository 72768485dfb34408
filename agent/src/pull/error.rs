//! `PullError`: every step of a pull names what it was doing and on which object.

use coracle_images::delta::DeltaError;
use coracle_images::oci::OciError;
use coracle_images::store::{PartialError, StoreError};
use coracle_images::Digest;

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
    #[error("store")]
    Store(#[from] StoreError),
    #[error("registry CA certificate is not valid PEM")]
    CaCertificate(#[source] Box<ureq::Error>),
}
