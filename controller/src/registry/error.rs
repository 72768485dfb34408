//! `RegistryError` and its one mapping to OCI error bodies
//! (`{"errors":[{"code","message"}]}`) and statuses.

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// A registry failure.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("authentication required")]
    Unauthorized,
    #[error("device {device} may not read {repository}: its desired state names no image there")]
    Denied { device: String, repository: String },
    #[error("cannot look up the registry access of device {device}: {reason}")]
    GrantLookup { device: String, reason: String },
    #[error("API token {token} has scope {scope}; pushing and deleting need scope admin")]
    ScopeDenied {
        token: String,
        scope: crate::access::Scope,
    },
    #[error("cannot look up an API token: {reason}")]
    TokenLookup { reason: String },
    #[error("invalid digest {digest:?}")]
    DigestInvalid { digest: String },
    #[error("upload content has digest {actual}, not the claimed {claimed}")]
    DigestMismatch { claimed: String, actual: String },
    #[error("invalid repository name {name:?}")]
    NameInvalid { name: String },
    #[error("invalid tag {tag:?}")]
    TagInvalid { tag: String },
    #[error("blob {digest} not found")]
    BlobUnknown { digest: String },
    #[error("manifest {reference} not found in {name}")]
    ManifestUnknown { name: String, reference: String },
    #[error("repository {name} not found")]
    NameUnknown { name: String },
    #[error("manifest names {digest}, which is not in {name}")]
    ManifestBlobUnknown { name: String, digest: String },
    #[error("chunk of upload {id} starts at byte {start}, but the upload has {expected} bytes; send the chunk starting at {expected}")]
    ChunkOutOfOrder {
        id: String,
        expected: u64,
        start: u64,
    },
    #[error("query parameter {name}={value:?} is invalid")]
    QueryInvalid { name: &'static str, value: String },
    #[error("manifest is invalid: {reason}")]
    ManifestInvalid { reason: String },
    #[error("upload {id} not found")]
    UploadUnknown { id: String },
    #[error("range {range:?} cannot be served")]
    RangeInvalid { range: String },
    #[error("delta request is invalid: {reason}")]
    DeltaRequestInvalid { reason: String },
    #[error("delta could not be made: {step}")]
    DeltaFailed {
        step: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("delta encode ended without a verdict")]
    DeltaAbandoned,
    /// The failure of an encode another caller led, as every waiter on it sees it.
    #[error(transparent)]
    DeltaShared(SharedError),
    #[error("no such registry route")]
    RouteUnknown,
    #[error("{method} is not supported on {path}")]
    MethodUnsupported { method: String, path: String },
    #[error("cannot read the request body")]
    Body {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("registry disk is full: {step} {path}; free space on the controller's data disk and push again")]
    StorageFull { step: &'static str, path: PathBuf },
    /// The object store (`[blobs.s3]`) failed a step on a blob or repository entry.
    #[error("{step} {object} in the object store")]
    ObjectStore {
        step: &'static str,
        object: String,
        #[source]
        source: Box<crate::object_store::ObjectStoreError>,
    },
    #[error("registry storage failed: {step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use RegistryError::*;
        match self {
            Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Denied { .. } | ScopeDenied { .. } => (StatusCode::FORBIDDEN, "DENIED"),
            GrantLookup { .. } | TokenLookup { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN")
            }
            DigestInvalid { .. } | DigestMismatch { .. } => {
                (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
            }
            NameInvalid { .. } => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            TagInvalid { .. } => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            BlobUnknown { .. } => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            ManifestUnknown { .. } => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            ManifestInvalid { .. } => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            NameUnknown { .. } => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            ManifestBlobUnknown { .. } => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            ChunkOutOfOrder { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID"),
            QueryInvalid { .. } => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
            UploadUnknown { .. } => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            RangeInvalid { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID"),
            DeltaRequestInvalid { .. } => (StatusCode::BAD_REQUEST, "DELTA_INVALID"),
            DeltaFailed { .. } | DeltaAbandoned => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            DeltaShared(shared) => shared.status_and_code(),
            RouteUnknown => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            MethodUnsupported { .. } => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            Body { .. } => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            // 507 Insufficient Storage: the server's disk, not the request, is at fault.
            StorageFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN"),
            Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            // The registry is up but the store behind it is not: a gateway failure.
            ObjectStore { .. } => (StatusCode::BAD_GATEWAY, "UNKNOWN"),
        }
    }
}

impl RegistryError {
    /// A delta step that failed, keeping `source` as the cause.
    pub(super) fn delta(
        step: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        RegistryError::DeltaFailed {
            step: step.into(),
            source: source.into(),
        }
    }
}

/// One registry error shared by several callers (the waiters on one delta encode): the
/// same message and chain of causes for each of them.
#[derive(Debug, Clone)]
pub struct SharedError(Arc<RegistryError>);

impl SharedError {
    pub fn new(err: RegistryError) -> Self {
        Self(Arc::new(err))
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        self.0.status_and_code()
    }
}

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // The message carries the causes: a client sees why, not only what failed.
        let message = crate::api::error::error_chain(&self);
        if status.is_server_error() {
            tracing::error!(error = %message, "registry request failed");
        }
        let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"coracle\""),
            );
        }
        response
    }
}
