//! `UpstreamError`: every way pulling an image from another registry can fail. Each variant
//! names the step and the registry host, repository and reference or digest it failed on,
//! and carries the registry's own answer (status and body) where there was one.

use std::path::PathBuf;

use crate::registry::RegistryError;

/// Longest part of a registry's error body kept in an error message.
pub const MAX_ANSWER_CHARS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot read the CA file {path} of registry {host}")]
    ReadCa {
        host: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {path} of registry {host} holds no PEM certificate")]
    ParseCa {
        host: String,
        path: PathBuf,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("cannot read the credentials file {path} for registry {host}")]
    ReadCredentials {
        host: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the credentials file {path} is not TOML with username and password")]
    ParseCredentials {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{host:?} is not a registry host[:port]")]
    HostInvalid { host: String },
    #[error("cannot remove the login for registry {host} at {path}")]
    RemoveLogin {
        host: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot store the login for registry {host} in {path}")]
    SaveLogin {
        host: String,
        path: PathBuf,
        #[source]
        source: crate::datadir::DataDirError,
    },
    #[error("{method} {url} (registry {host}) failed")]
    Request {
        host: String,
        method: &'static str,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// `object` is `repository:tag` or `repository@digest`.
    #[error("registry {host} answered {status} to GET {what} {object}: {answer}")]
    Status {
        host: String,
        what: &'static str,
        object: String,
        status: u16,
        answer: String,
    },
    #[error(
        "token service {realm} of registry {host} answered {status} for {repository}: {answer}"
    )]
    TokenStatus {
        host: String,
        realm: String,
        repository: String,
        status: u16,
        answer: String,
    },
    #[error("token service {realm} of registry {host} sent no usable token for {repository}")]
    TokenMissing {
        host: String,
        realm: String,
        repository: String,
    },
    #[error("cannot read the {what} {reference} of {host}/{repository}")]
    ReadBody {
        host: String,
        repository: String,
        what: &'static str,
        reference: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{what} {expected} of {host}/{repository} arrived with digest {actual}")]
    DigestMismatch {
        host: String,
        repository: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("manifest {reference} of {host}/{repository} is not an image manifest or index")]
    ManifestInvalid {
        host: String,
        repository: String,
        reference: String,
        #[source]
        source: coracle_images::oci::OciError,
    },
    #[error(
        "image {image} has no manifest for the fleet's platforms {wanted:?}; it offers {offered:?}"
    )]
    NoPlatform {
        image: String,
        wanted: Vec<String>,
        offered: Vec<String>,
    },
    #[error("cannot store blob {digest} of {image} in the controller's registry")]
    StoreBlob {
        image: String,
        digest: String,
        #[source]
        source: RegistryError,
    },
    #[error("cannot store manifest {digest} of {image} in the controller's registry")]
    StoreManifest {
        image: String,
        digest: String,
        #[source]
        source: RegistryError,
    },
    #[error("the download task for {image} ended abnormally")]
    Task {
        image: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// The start of a registry's answer, on one line: enough to read its error code and message.
pub fn answer_excerpt(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_ANSWER_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None if one_line.is_empty() => "(empty body)".to_string(),
        None => one_line,
    }
}
