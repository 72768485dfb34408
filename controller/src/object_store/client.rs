//! `ObjectStore`: the few S3 calls the registry makes (PUT, GET, HEAD of an object, HEAD and
//! PUT of the bucket) and pre-signed GET URLs, over blocking `ureq` with path-style
//! addressing (`<endpoint>/<bucket>/<key>`), which every S3-compatible server accepts.
//! Blocking: async callers run these on a blocking thread.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ureq::http::Response;
use ureq::Body;

use super::config::S3Config;
use super::error::{error_code, ObjectStoreError};
use super::sigv4::{self, Request, Signer, EMPTY_PAYLOAD_SHA256};
use crate::config::ConfigError;

/// A bucket on an S3-compatible store.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    endpoint: String,
    /// `host[:port]` of the endpoint: the `Host` header every request signs.
    authority: String,
    bucket: String,
    signer: Signer,
    presign_expiry_s: u64,
    redirect: bool,
    agent: ureq::Agent,
}

impl ObjectStore {
    /// A client for `config` (reads the secret key file); no request is made yet.
    pub fn new(config: &S3Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let endpoint = config.endpoint.trim_end_matches('/').to_string();
        let authority = endpoint
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&endpoint)
            .to_string();
        if authority.is_empty() || authority.contains('/') {
            return Err(ConfigError::Invalid {
                field: "blobs.s3.endpoint".into(),
                reason: "must be scheme://host[:port] without a path".into(),
            });
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_per_read(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Ok(Self {
            endpoint,
            authority,
            bucket: config.bucket.clone(),
            signer: Signer {
                access_key: config.access_key.clone(),
                secret_key: config.secret()?,
                region: config.region.clone(),
                service: "s3".into(),
            },
            presign_expiry_s: config.presign_expiry_s,
            redirect: config.redirect,
            agent,
        })
    }

    /// Whether blob GETs are answered with a redirect to a pre-signed URL.
    pub fn redirects(&self) -> bool {
        self.redirect
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Checks that the bucket exists and the credentials are accepted (at startup).
    pub fn check_bucket(&self) -> Result<(), ObjectStoreError> {
        let step = "check bucket";
        // GET ?location rather than HEAD: its error body names the cause (a HEAD has none).
        let query = [("location".to_string(), String::new())];
        let resp = self.send("GET", step, None, &query, None)?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.refused(step, "", resp)),
        }
    }

    /// Creates the bucket (tests and first setups); an existing one of ours is fine.
    pub fn create_bucket(&self) -> Result<(), ObjectStoreError> {
        let step = "create bucket";
        let resp = self.send("PUT", step, None, &[], None)?;
        match resp.status().as_u16() {
            200..=299 | 409 => Ok(()),
            _ => Err(self.refused(step, "", resp)),
        }
    }

    /// Uploads the file at `path` as `key`; `sha256_hex` is its content's hash (a blob's own
    /// digest), which the store checks the received bytes against.
    pub fn put_file(
        &self,
        key: &str,
        path: &Path,
        sha256_hex: &str,
    ) -> Result<(), ObjectStoreError> {
        let step = "store object";
        let file = std::fs::File::open(path).map_err(|source| ObjectStoreError::LocalFile {
            step,
            key: key.into(),
            path: path.to_path_buf(),
            source,
        })?;
        let resp = self.send("PUT", step, Some(key), &[], Some((&file, sha256_hex)))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.refused(step, key, resp)),
        }
    }

    /// Uploads `bytes` as `key`.
    pub fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), ObjectStoreError> {
        let step = "store object";
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
        let headers = self.signed_headers("PUT", &self.path(Some(key)), &[], &hash);
        let mut req = self.agent.put(self.url(Some(key)));
        for (name, value) in &headers {
            req = req.header(name, value);
        }
        let resp = req
            .send(bytes)
            .map_err(|source| self.unreachable(step, key, source))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.refused(step, key, resp)),
        }
    }

    /// The size of `key`, or `None` when the bucket has no such object.
    pub fn head(&self, key: &str) -> Result<Option<u64>, ObjectStoreError> {
        let step = "look up object";
        let resp = self.send("HEAD", step, Some(key), &[], None)?;
        match resp.status().as_u16() {
            200..=299 => Ok(resp
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            404 => Ok(None),
            _ => Err(self.refused(step, key, resp)),
        }
    }

    /// Deletes `key` (absent keys included: S3 answers them the same).
    pub fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        let step = "delete object";
        let resp = self.send("DELETE", step, Some(key), &[], None)?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(self.refused(step, key, resp)),
        }
    }

    /// Copies `key` into `out`; `None` (nothing written) when there is no such object.
    pub fn get_into(
        &self,
        key: &str,
        out: &mut dyn Write,
    ) -> Result<Option<u64>, ObjectStoreError> {
        let step = "fetch object";
        let mut resp = self.send("GET", step, Some(key), &[], None)?;
        let status = resp.status().as_u16();
        if !(200..=299).contains(&status) {
            let body = body_text(&mut resp);
            if status == 404 && error_code(&body).0 != "NoSuchBucket" {
                return Ok(None);
            }
            return Err(self.refusal(step, key, status, &body));
        }
        let copied = std::io::copy(&mut resp.body_mut().as_reader(), out).map_err(|source| {
            ObjectStoreError::ReadAnswer {
                step,
                key: key.into(),
                source,
            }
        })?;
        Ok(Some(copied))
    }

    /// A GET URL for `key` anyone holding it may use until it expires.
    pub fn presigned_get(&self, key: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let path = self.path(Some(key));
        let query = self.signer.presigned_query(
            "GET",
            &self.authority,
            &path,
            &sigv4::amz_date(now),
            self.presign_expiry_s,
        );
        format!("{}{path}?{query}", self.endpoint)
    }

    fn path(&self, key: Option<&str>) -> String {
        match key {
            Some(key) => format!("/{}/{}", self.bucket, sigv4::uri_encode(key, false)),
            None => format!("/{}", self.bucket),
        }
    }

    fn url(&self, key: Option<&str>) -> String {
        format!("{}{}", self.endpoint, self.path(key))
    }

    /// The headers of a signed request: `host`, `x-amz-date`, `x-amz-content-sha256` and
    /// `authorization`.
    fn signed_headers(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        payload_sha256: &str,
    ) -> Vec<(String, String)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let date = sigv4::amz_date(now);
        let mut headers = vec![
            ("host".to_string(), self.authority.clone()),
            ("x-amz-date".to_string(), date.clone()),
            (
                "x-amz-content-sha256".to_string(),
                payload_sha256.to_string(),
            ),
        ];
        let authorization = self.signer.authorization(
            &Request {
                method,
                path,
                query,
                headers: &headers,
                payload_sha256,
            },
            &date,
        );
        headers.push(("authorization".to_string(), authorization));
        headers
    }

    /// Sends a signed request on the bucket (`key` None) or an object, with a file body.
    fn send(
        &self,
        method: &'static str,
        step: &'static str,
        key: Option<&str>,
        query: &[(String, String)],
        body: Option<(&std::fs::File, &str)>,
    ) -> Result<Response<Body>, ObjectStoreError> {
        let hash = body.map_or(EMPTY_PAYLOAD_SHA256, |(_, hash)| hash);
        let headers = self.signed_headers(method, &self.path(key), query, hash);
        let url = match query {
            [] => self.url(key),
            _ => format!("{}?{}", self.url(key), sigv4::canonical_query(query)),
        };
        let key_text = key.unwrap_or("");
        let result = match (method, body) {
            ("PUT", Some((file, _))) => {
                let mut req = self.agent.put(&url);
                for (name, value) in &headers {
                    req = req.header(name, value);
                }
                req.send(file)
            }
            ("PUT", None) => {
                let mut req = self.agent.put(&url);
                for (name, value) in &headers {
                    req = req.header(name, value);
                }
                req.send_empty()
            }
            _ => {
                let mut req = match method {
                    "HEAD" => self.agent.head(&url),
                    "DELETE" => self.agent.delete(&url),
                    _ => self.agent.get(&url),
                };
                for (name, value) in &headers {
                    req = req.header(name, value);
                }
                req.call()
            }
        };
        result.map_err(|source| self.unreachable(step, key_text, source))
    }

    fn unreachable(&self, step: &'static str, key: &str, source: ureq::Error) -> ObjectStoreError {
        ObjectStoreError::Unreachable {
            step,
            key: key.into(),
            endpoint: self.endpoint.clone(),
            source: Box::new(source),
        }
    }

    fn refused(&self, step: &'static str, key: &str, mut resp: Response<Body>) -> ObjectStoreError {
        let status = resp.status().as_u16();
        self.refusal(step, key, status, &body_text(&mut resp))
    }

    /// The error an unsuccessful answer stands for, named by its S3 error code (a HEAD
    /// answer has no body: its status alone decides).
    fn refusal(&self, step: &'static str, key: &str, status: u16, body: &str) -> ObjectStoreError {
        let (code, message) = error_code(body);
        let credentials = [
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
        ];
        match (status, code.as_str()) {
            (403, c) if c.is_empty() || credentials.contains(&c) => ObjectStoreError::Credentials {
                step,
                key: key.into(),
                access_key: self.signer.access_key.clone(),
                code: if c.is_empty() {
                    "HTTP 403".into()
                } else {
                    c.into()
                },
            },
            (404, "NoSuchBucket") | (404, "") if code == "NoSuchBucket" || key.is_empty() => {
                ObjectStoreError::BucketMissing {
                    step,
                    key: key.into(),
                    bucket: self.bucket.clone(),
                    endpoint: self.endpoint.clone(),
                }
            }
            _ => ObjectStoreError::Refused {
                step,
                key: key.into(),
                status,
                code,
                message,
            },
        }
    }
}

/// Up to 4 KiB of an error answer's body (S3 error documents are small).
fn body_text(resp: &mut Response<Body>) -> String {
    resp.body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default()
}
