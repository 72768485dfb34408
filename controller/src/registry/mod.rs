//! The OCI distribution registry (push and pull): blobs (monolithic and chunked uploads,
//! HEAD, Range, DELETE), manifests by tag or digest (PUT, GET, DELETE), tag lists with
//! pagination, the referrers API and the catalog, as the OCI distribution-spec v1.1 asks
//! (its conformance suite passes: `.ci/conformance`). Clients
//! authenticate with HTTP basic auth (any user, the admin token as password) or a bearer
//! token. Paths are parsed by hand because repository names contain `/`.
//!
//! On disk: `blobs/sha256/<hex>` (manifests too), `repos/<name>/tags/<tag>` holding a
//! digest and `repos/<name>/manifests/<hex>` holding the manifest's media type. A nested
//! repository `<name>/tags/x` is a directory beside those files, so only files are tags.
//! Referrers are found by reading the repository's manifests, not kept in an index that
//! could drift from them.

mod auth;
mod blob_cache;
mod blobs;
mod bucket_backfill;
mod delta;
mod device_tokens;
mod downloads;
mod error;
mod gc;
mod manifests;
mod platforms;
mod referrers;
mod remote_blobs;
mod remote_entries;
mod routes;
mod tag_list;
mod uploads;

use std::path::PathBuf;
use std::sync::Arc;

use crate::net::throttle::SharedThrottle;

use crate::access::{AdminToken, TokenLookup};
pub use blobs::{BlobDigest, BlobStore};
pub use bucket_backfill::Backfill;
pub use delta::{
    DeltaMetrics, DeltaOutcome, Deltas, LayerDelta, PairState, WorkerSettings, DEFAULT_DELTA_WAIT,
};
pub use device_tokens::{DeviceGrant, DeviceGrants, PullTokens};
pub use error::{RegistryError, SharedError};
pub use gc::GcReport;
pub use manifests::version_order;
pub use remote_blobs::RemoteBlobs;
pub use routes::router;

/// Registry state shared by the handlers.
#[derive(Debug, Clone)]
pub struct Registry {
    pub blobs: BlobStore,
    repos: PathBuf,
    /// Delta layers: the endpoint, the once-per-pair gate, the background encoders.
    deltas: Deltas,
    /// The admin token (rotatable; empty for offline CLI use, which matches nothing).
    admin: AdminToken,
    /// Named API tokens: `read` and `deploy` pull, `admin` also pushes and deletes.
    api_tokens: Option<Arc<dyn TokenLookup>>,
    /// Each device's own pull token, checked against `grants`.
    pull_tokens: PullTokens,
    /// The pull key, which also derives the legacy shared pull token.
    pull_key: Arc<str>,
    /// The fleet's devices (none for offline CLI use: only the admin token works then).
    grants: Option<Arc<dyn DeviceGrants>>,
    /// Pushes and deletes are audited here (none for offline CLI use).
    audit: Option<Arc<dyn crate::access::AuditSink>>,
    /// Whether the shared pull token of older bootstraps still reads (logged when used).
    legacy_pull_token: bool,
    legacy_uses: Arc<SharedThrottle>,
}

impl Registry {
    /// The registry under `root`; only the admin token `admin` authenticates until
    /// [`Registry::with_devices`] adds devices and API tokens.
    pub fn open(root: PathBuf, blobs: BlobStore, admin: AdminToken) -> Result<Self, RegistryError> {
        let repos = root.join("repos");
        std::fs::create_dir_all(&repos).map_err(|source| RegistryError::Io {
            step: "create repos dir",
            path: repos.clone(),
            source,
        })?;
        let deltas = Deltas::open(blobs.clone(), repos.clone(), root.join("deltas"))?;
        Ok(Self {
            blobs,
            repos,
            deltas,
            admin,
            api_tokens: None,
            pull_tokens: PullTokens::new(Arc::from("")),
            pull_key: Arc::from(""),
            grants: None,
            audit: None,
            legacy_pull_token: false,
            legacy_uses: Arc::new(SharedThrottle::new(std::time::Duration::from_secs(300))),
        })
    }

    /// Devices authenticate with their own pull tokens (keyed by `pull_key`) against
    /// `grants`, API tokens by their scope through `api_tokens`; with `legacy_pull_token`
    /// the shared token of older bootstraps still reads too.
    pub fn with_devices(
        mut self,
        grants: Arc<dyn DeviceGrants>,
        api_tokens: Arc<dyn TokenLookup>,
        pull_key: Arc<str>,
        legacy_pull_token: bool,
    ) -> Self {
        self.grants = Some(grants);
        self.api_tokens = Some(api_tokens);
        self.pull_tokens = PullTokens::new(pull_key.clone());
        self.pull_key = pull_key;
        self.legacy_pull_token = legacy_pull_token;
        self
    }

    /// Pushes (manifest PUT) and deletes are recorded in `audit` with who made them.
    pub fn with_audit(mut self, audit: Arc<dyn crate::access::AuditSink>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// A device's delta request waits at most `wait` for its pair's encode, then the
    /// device is told to pull the full layer (`[deltas] request_wait_s`).
    pub fn with_delta_wait(mut self, wait: std::time::Duration) -> Self {
        self.deltas.set_wait(wait);
        self
    }

    /// The delta subsystem: `plan` after a change, `metrics`, `pair_state`.
    pub fn deltas(&self) -> &Deltas {
        &self.deltas
    }

    /// Issues device pull tokens (for bootstrap files).
    pub fn pull_tokens(&self) -> PullTokens {
        self.pull_tokens.clone()
    }

    /// The shared read-only token older bootstrap files carry: derived by a one-way hash
    /// from the pull key (which an upgraded controller took from its admin token of the
    /// time, when the token was derived from that). Accepted only with `legacy_pull_token`.
    pub fn pull_token(&self) -> String {
        use sha2::{Digest as _, Sha256};
        let hash = Sha256::digest(format!("coracle registry pull token\0{}", self.pull_key));
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Maps an I/O error of `step` on `path` into a `RegistryError`.
fn io<'a>(
    step: &'static str,
    path: &'a std::path::Path,
) -> impl Fn(std::io::Error) -> RegistryError + 'a {
    move |source| {
        if source.kind() == std::io::ErrorKind::StorageFull {
            return RegistryError::StorageFull {
                step,
                path: path.to_path_buf(),
            };
        }
        RegistryError::Io {
            step,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Checks an OCI repository name: `/`-separated components of `[a-z0-9._-]`, each
/// starting with a letter or digit.
pub fn check_repository(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            part.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(RegistryError::NameInvalid { name: name.into() })
    }
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), RegistryError> {
    let ok = tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::TagInvalid { tag: tag.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_and_tag_names() {
        for good in ["app", "library/busybox", "a.b-c_d/e1"] {
            check_repository(good).unwrap();
        }
        for bad in ["", "App", "a//b", "../etc", "a/.x", "a b"] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
        check_tag("1.0_rc-1").unwrap();
        assert!(check_tag(".hidden").is_err());
        assert!(check_tag("a/b").is_err());
    }
}
