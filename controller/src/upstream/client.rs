//! `UpstreamClient`: a small synchronous distribution-API client (ureq + rustls) for one
//! repository of one upstream registry: manifests and blobs, answering the registry's 401
//! challenge once — a bearer token from the realm it names (Docker Hub, GHCR, distribution's
//! token auth), with the credentials as basic auth when there are any, or basic auth itself.
//! Blocking: it runs on `spawn_blocking` threads, never on the runtime's workers.

use std::time::Duration;

use base64::Engine as _;
use ureq::http::Response;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::endpoint::Endpoint;
use super::error::answer_excerpt;
use super::reference::Reference;
use super::UpstreamError;
use crate::registry::BlobDigest;
use coracle_images::challenge::{self, Challenge};

/// Media types a manifest request accepts: images and indexes, OCI and Docker.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";
const DEFAULT_MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Manifests, indexes and token answers are small JSON documents.
const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

/// A stalled upstream is given up after this long without a byte, so a deploy fails with a
/// reason instead of hanging.
const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A manifest or index as the registry sent it, verified against its digest.
#[derive(Debug, Clone)]
pub struct Document {
    pub digest: BlobDigest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// A client for one repository of one registry.
pub struct UpstreamClient {
    endpoint: Endpoint,
    repository: String,
    agent: Agent,
    /// The `Authorization` value that answered the last challenge, reused for the next calls.
    authorization: Option<String>,
}

/// Without the cached `Authorization` value: a token or basic credentials never reach a log.
impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("endpoint", &self.endpoint)
            .field("repository", &self.repository)
            .field("authorized", &self.authorization.is_some())
            .finish()
    }
}

impl UpstreamClient {
    pub fn new(endpoint: Endpoint, repository: &str) -> Result<Self, UpstreamError> {
        let tls = match &endpoint.ca {
            Some((path, pem)) => {
                let cert = Certificate::from_pem(pem.as_bytes()).map_err(|source| {
                    UpstreamError::ParseCa {
                        host: endpoint.host.clone(),
                        path: path.clone(),
                        source: Box::new(source),
                    }
                })?;
                TlsConfig::builder()
                    .root_certs(RootCerts::new_with_certs(&[cert]))
                    .build()
            }
            None => TlsConfig::default(),
        };
        // Redirects (blob storage on another host) are followed without the Authorization
        // header: ureq's default, which keeps registry credentials away from CDN hosts.
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_per_read(Some(READ_IDLE_TIMEOUT))
            .user_agent(concat!("coracle/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Self {
            endpoint,
            repository: repository.to_string(),
            agent,
            authorization: None,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.endpoint.base_url, self.repository)
    }

    /// Fetches a manifest or index and checks its bytes against the digest it was asked by.
    pub fn manifest(&mut self, reference: &Reference) -> Result<Document, UpstreamError> {
        let reference_text = reference.to_string();
        let url = self.url(&format!("manifests/{reference_text}"));
        let mut resp = self.get("manifest", &reference_text, &url, Some(MANIFEST_ACCEPT))?;
        let header_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_to_vec()
            .map_err(|source| self.read_error("manifest", &reference_text, source))?;
        let digest = BlobDigest::of(&bytes);
        if let Reference::Digest(expected) = reference {
            if *expected != digest {
                return Err(UpstreamError::DigestMismatch {
                    host: self.endpoint.host.clone(),
                    repository: self.repository.clone(),
                    what: "manifest",
                    expected: expected.as_str().to_string(),
                    actual: digest.as_str().to_string(),
                });
            }
        }
        // The document's own mediaType is authoritative; registries' headers vary.
        let own_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string));
        let media_type = own_type
            .or(header_type)
            .unwrap_or_else(|| DEFAULT_MANIFEST_TYPE.to_string());
        Ok(Document {
            digest,
            media_type,
            bytes,
        })
    }

    /// Opens a blob for streaming; the caller verifies what it reads against `digest`.
    pub fn blob(&mut self, digest: &BlobDigest) -> Result<Body, UpstreamError> {
        let url = self.url(&format!("blobs/{}", digest.as_str()));
        Ok(self.get("blob", digest.as_str(), &url, None)?.into_body())
    }

    /// Reads a small blob (an image config) whole, refusing more than `limit` bytes; the
    /// caller parses it, so an unverified body only ever fails a parse.
    pub fn small_blob(
        &mut self,
        what: &'static str,
        digest: &BlobDigest,
        limit: u64,
    ) -> Result<Vec<u8>, UpstreamError> {
        self.blob(digest)?
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|source| self.read_error(what, digest.as_str(), source))
    }

    /// GET with the cached authorization; on a 401 answers its challenge once and retries.
    /// Any other non-2xx is an error carrying the registry's answer.
    fn get(
        &mut self,
        what: &'static str,
        reference: &str,
        url: &str,
        accept: Option<&str>,
    ) -> Result<Response<Body>, UpstreamError> {
        let mut resp = self.call(url, accept)?;
        if resp.status() == 401 {
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(challenge::parse);
            if let Some(authorization) = challenge.and_then(|c| self.answer(c).transpose()) {
                self.authorization = Some(authorization?);
                resp = self.call(url, accept)?;
            }
        }
        if resp.status().is_success() {
            return Ok(resp);
        }
        let separator = if reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        Err(UpstreamError::Status {
            host: self.endpoint.host.clone(),
            what,
            object: format!("{}{separator}{reference}", self.repository),
            status: resp.status().as_u16(),
            answer: read_answer(resp),
        })
    }

    fn call(&self, url: &str, accept: Option<&str>) -> Result<Response<Body>, UpstreamError> {
        let mut req = self.agent.get(url);
        if let Some(accept) = accept {
            req = req.header("Accept", accept);
        }
        if let Some(authorization) = &self.authorization {
            req = req.header("Authorization", authorization);
        }
        req.call().map_err(|source| UpstreamError::Request {
            host: self.endpoint.host.clone(),
            method: "GET",
            url: url.to_string(),
            source: Box::new(source),
        })
    }

    fn basic(&self) -> Option<String> {
        let creds = self.endpoint.credentials.as_ref()?;
        let pair = format!("{}:{}", creds.username, creds.password);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    }

    /// The Authorization value answering `challenge`: `None` when there is nothing to answer
    /// with (basic auth and no credentials), so the 401 is reported as the registry sent it.
    fn answer(&self, challenge: Challenge) -> Result<Option<String>, UpstreamError> {
        let (realm, service, scope) = match challenge {
            Challenge::Basic => return Ok(self.basic()),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => (realm, service, scope),
        };
        let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let mut req = self.agent.get(&realm).query("scope", &scope);
        if let Some(service) = &service {
            req = req.query("service", service);
        }
        // Anonymous tokens (public images) are asked for without credentials.
        if let Some(basic) = self.basic() {
            req = req.header("Authorization", basic);
        }
        let mut resp = req.call().map_err(|source| UpstreamError::Request {
            host: self.endpoint.host.clone(),
            method: "GET",
            url: realm.clone(),
            source: Box::new(source),
        })?;
        if !resp.status().is_success() {
            return Err(UpstreamError::TokenStatus {
                host: self.endpoint.host.clone(),
                realm,
                repository: self.repository.clone(),
                status: resp.status().as_u16(),
                answer: read_answer(resp),
            });
        }
        let missing = || UpstreamError::TokenMissing {
            host: self.endpoint.host.clone(),
            realm: realm.clone(),
            repository: self.repository.clone(),
        };
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_to_vec()
            .map_err(|_| missing())?;
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|_| missing())?;
        let token = json
            .get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(missing)?;
        Ok(Some(format!("Bearer {token}")))
    }

    fn read_error(
        &self,
        what: &'static str,
        reference: &str,
        source: ureq::Error,
    ) -> UpstreamError {
        UpstreamError::ReadBody {
            host: self.endpoint.host.clone(),
            repository: self.repository.clone(),
            what,
            reference: reference.to_string(),
            source: Box::new(source),
        }
    }
}

/// The registry's error body, shortened to one line.
fn read_answer(mut resp: Response<Body>) -> String {
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    answer_excerpt(&body)
}
