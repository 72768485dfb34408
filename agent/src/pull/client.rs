//! A small synchronous OCI distribution client (ureq + rustls): manifests, blobs with HTTP
//! Range resume, Coracle's delta endpoint, and the registry token dance. Runs on a blocking
//! thread; nothing here touches the agent's event loop.

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use coracle_images::store::{PartialDownload, RangeReply, ResumeAction};
use coracle_images::Digest;
use tracing::{debug, info};
use ureq::http::{Response, StatusCode};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::error::PullError;
use super::token::PullToken;
use coracle_images::challenge::{parse_bearer, BearerChallenge};

/// Media types a manifest request accepts (single-platform first, then indexes).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest or config accepted: they are small JSON documents.
const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

/// A stalled link is given up after this long without a byte, so a cut link is noticed and
/// the download resumes later instead of hanging.
const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to find one registry and how to log in.
#[derive(Debug, Clone)]
pub struct RegistryEndpoint {
    /// `https://host:port` or `http://host:port` (no trailing slash).
    pub base_url: String,
    /// PEM of a private CA (the controller's); public roots are used when absent.
    pub ca_pem: Option<String>,
    /// The bearer token of the controller's registry (the device's, rotated on schedule).
    pub token: PullToken,
}

/// A pull credential for a registry the device reaches directly, unsealed from its desired
/// state. `Debug` never shows the password.
#[derive(Clone)]
pub struct BasicCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl BasicCredentials {
    /// The `Authorization` header value.
    fn header(&self) -> String {
        use base64::Engine as _;
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// A client for one registry.
#[derive(Debug)]
pub struct RegistryClient {
    endpoint: RegistryEndpoint,
    /// Basic credentials of a direct registry: sent as they are, and to its token service.
    basic: Option<BasicCredentials>,
    /// Whether the registry is the controller's, which offers layer deltas.
    deltas: bool,
    agent: Agent,
    /// Token obtained from a bearer challenge, reused until the registry refuses it.
    challenge_token: Mutex<Option<String>>,
}

/// What the delta endpoint offers for a target layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaOffer {
    pub digest: Digest,
    pub size: u64,
}

fn header<'a>(resp: &'a Response<Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

impl RegistryClient {
    /// A client for `endpoint`.
    pub fn new(endpoint: RegistryEndpoint) -> Result<Self, PullError> {
        let tls = match &endpoint.ca_pem {
            Some(pem) => {
                let cert = Certificate::from_pem(pem.as_bytes())
                    .map_err(|e| PullError::CaCertificate(Box::new(e)))?;
                TlsConfig::builder()
                    .root_certs(RootCerts::new_with_certs(&[cert]))
                    .build()
            }
            None => TlsConfig::default(),
        };
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_per_read(Some(READ_IDLE_TIMEOUT))
            .user_agent(concat!("coracle-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Self {
            endpoint,
            basic: None,
            deltas: true,
            agent,
            challenge_token: Mutex::new(None),
        })
    }

    /// A client for a registry the device pulls from directly (not the controller's): basic
    /// credentials when given, answering bearer challenges with them, and no delta requests
    /// (a foreign registry has no delta endpoint: layers come whole).
    pub fn direct(
        endpoint: RegistryEndpoint,
        basic: Option<BasicCredentials>,
    ) -> Result<Self, PullError> {
        let mut client = Self::new(endpoint)?;
        client.basic = basic;
        client.deltas = false;
        Ok(client)
    }

    /// Whether to ask this registry for layer deltas.
    pub fn offers_deltas(&self) -> bool {
        self.deltas
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.endpoint.base_url.trim_end_matches('/'))
    }

    /// The `Authorization` header: a token from a challenge, else the static token, else
    /// basic credentials.
    fn authorization(&self) -> Option<String> {
        let cached = self.challenge_token.lock().ok().and_then(|t| t.clone());
        cached
            .or_else(|| self.endpoint.token.current())
            .map(|token| format!("Bearer {token}"))
            .or_else(|| self.basic.as_ref().map(BasicCredentials::header))
    }

    /// Sends a request, answering one bearer challenge if the registry asks for a token,
    /// and follows a redirect without the registry's credentials (`redirect.rs`).
    fn send(
        &self,
        method: &'static str,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<Body>, PullError> {
        let resp = self.send_authorized(method, url, headers)?;
        super::redirect::follow(&self.agent, method, url, resp, headers)
    }

    /// One request to the registry itself, with its credentials.
    fn send_authorized(
        &self,
        method: &'static str,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<Body>, PullError> {
        let call = |authorization: Option<String>| {
            let mut req = match method {
                "HEAD" => self.agent.head(url),
                _ => self.agent.get(url),
            };
            for (name, value) in headers {
                req = req.header(*name, value);
            }
            if let Some(value) = authorization {
                req = req.header("Authorization", value);
            }
            req.call().map_err(|source| PullError::Request {
                method,
                url: url.to_string(),
                source: Box::new(source),
            })
        };
        let resp = call(self.authorization())?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(challenge) = header(&resp, "www-authenticate").and_then(parse_bearer) else {
            return Ok(resp);
        };
        let token = self.fetch_token(&challenge)?;
        if let Ok(mut cached) = self.challenge_token.lock() {
            *cached = Some(token.clone());
        }
        call(Some(format!("Bearer {token}")))
    }

    fn fetch_token(&self, challenge: &BearerChallenge) -> Result<String, PullError> {
        let mut req = self.agent.get(&challenge.realm);
        if let Some(service) = &challenge.service {
            req = req.query("service", service);
        }
        if let Some(scope) = &challenge.scope {
            req = req.query("scope", scope);
        }
        if let Some(token) = self.endpoint.token.current() {
            req = req.header("Authorization", format!("Bearer {token}"));
        } else if let Some(basic) = &self.basic {
            req = req.header("Authorization", basic.header());
        }
        let failed = |detail: String| PullError::Token {
            realm: challenge.realm.clone(),
            detail,
        };
        let mut resp = req.call().map_err(|e| failed(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(failed(format!("HTTP {}", resp.status().as_u16())));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_to_vec()
            .map_err(|e| failed(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| failed(e.to_string()))?;
        json.get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| failed("no token in the answer".to_string()))
    }

    fn status_error(method: &'static str, url: &str, mut resp: Response<Body>) -> PullError {
        let status = resp.status().as_u16();
        let detail = resp
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        PullError::Status {
            method,
            url: url.to_string(),
            status,
            detail: detail.trim().chars().take(300).collect(),
        }
    }

    /// Fetches a manifest (or index) by digest and verifies its bytes against the digest.
    pub fn manifest(&self, repository: &str, digest: &Digest) -> Result<Vec<u8>, PullError> {
        let url = self.url(&format!("{repository}/manifests/{digest}"));
        let resp = self.send("GET", &url, &[("Accept", MANIFEST_ACCEPT.to_string())])?;
        self.document(resp, "manifest", &url, digest)
    }

    /// Fetches a small blob (an image config) whole, verified.
    pub fn small_blob(&self, repository: &str, digest: &Digest) -> Result<Vec<u8>, PullError> {
        let url = self.url(&format!("{repository}/blobs/{digest}"));
        let resp = self.send("GET", &url, &[])?;
        self.document(resp, "blob", &url, digest)
    }

    fn document(
        &self,
        mut resp: Response<Body>,
        what: &'static str,
        url: &str,
        digest: &Digest,
    ) -> Result<Vec<u8>, PullError> {
        if !resp.status().is_success() {
            return Err(Self::status_error("GET", url, resp));
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_to_vec()
            .map_err(|e| PullError::ReadBody {
                url: url.to_string(),
                source: e.into_io(),
            })?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(PullError::VerifyDigest {
                what,
                url: url.to_string(),
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Downloads a blob into `partial`, resuming from the bytes it already holds. On a cut
    /// link the bytes received so far are flushed to disk before the error is returned.
    /// `progress` is called with the bytes held after each chunk.
    pub fn download(
        &self,
        repository: &str,
        partial: &mut PartialDownload,
        digest: &Digest,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), PullError> {
        let url = self.url(&format!("{repository}/blobs/{digest}"));
        let range: Vec<(&str, String)> = partial
            .range_header()
            .map(|r| vec![("Range", r)])
            .unwrap_or_default();
        let mut resp = self.send("GET", &url, &range)?;
        let reply = match resp.status().as_u16() {
            200 => RangeReply::Full,
            206 => RangeReply::Partial {
                start: header(&resp, "content-range")
                    .and_then(content_range_start)
                    .unwrap_or(u64::MAX),
            },
            416 => RangeReply::NotSatisfiable,
            _ => return Err(Self::status_error("GET", &url, resp)),
        };
        let download_err = |source| PullError::Download {
            digest: *digest,
            source,
        };
        if let RangeReply::Partial { start } = reply {
            info!(%digest, from_byte = start, "blob download resumed");
        }
        let action = partial.begin(reply).map_err(download_err)?;
        debug!(%digest, ?action, have = partial.have(), "blob download");
        if action == ResumeAction::Verify {
            return Ok(());
        }
        let mut body = resp.body_mut().as_reader();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(source) => {
                    partial.persist().map_err(download_err)?;
                    return Err(PullError::ReadBody { url, source });
                }
            };
            partial.write(&buf[..n]).map_err(download_err)?;
            progress(partial.have());
        }
        partial.persist().map_err(download_err)
    }

    /// Asks the controller for a delta that rebuilds layer `target` from layers in `have`.
    /// `None` when it has none (404: not computed yet, or a delta would not pay).
    pub fn delta_offer(
        &self,
        repository: &str,
        target: &Digest,
        have: &[Digest],
    ) -> Result<Option<DeltaOffer>, PullError> {
        if have.is_empty() {
            return Ok(None);
        }
        let have: Vec<String> = have.iter().map(Digest::to_string).collect();
        let url = format!(
            "{}?have={}",
            self.url(&format!("{repository}/coracle/deltas/{target}")),
            have.join(",")
        );
        let resp = self.send("HEAD", &url, &[])?;
        match resp.status().as_u16() {
            404 => Ok(None),
            200 | 307 => {
                let digest =
                    header(&resp, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
                let size = header(&resp, "content-length").and_then(|s| s.parse().ok());
                Ok(digest.map(|digest| DeltaOffer {
                    digest,
                    size: size.unwrap_or(0),
                }))
            }
            _ => Err(Self::status_error("HEAD", &url, resp)),
        }
    }
}

/// The start offset of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start_is_parsed() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/1"), Some(0));
        assert_eq!(content_range_start("items 1-2/3"), None);
        assert_eq!(content_range_start("bytes */200"), None);
    }
}
