//! A small client of the controller's OCI registry for tests that speak the distribution
//! API by hand (status codes, headers, error codes), where skopeo would hide them.

use sha2::{Digest as _, Sha256};

use super::Controller;

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// An answer: status, headers we look at, body.
pub struct Answer {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        Some(self.headers.get(name)?.to_str().ok()?.to_string())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    /// The first OCI error code of the body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub struct RegistryClient {
    pub base: String,
    token: String,
    agent: ureq::Agent,
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl RegistryClient {
    pub fn new(controller: &Controller) -> Self {
        Self {
            base: format!("http://{}", controller.registry),
            token: format!("Bearer {}", controller.admin_token()),
            // A connection per request: a request that races the server closing an idle
            // keep-alive connection fails outright for PATCH/PUT (not retried), which a
            // loaded CI machine turned into a flaky failure unrelated to what is tested.
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_idle_connections(0)
                .build()
                .new_agent(),
        }
    }

    /// Sends `method path` (path from `/v2/`) with headers and a body.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Authorization", &self.token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = if body.is_empty() {
            self.agent.run(request.body(()).unwrap())
        } else {
            self.agent.run(request.body(body.to_vec()).unwrap())
        }
        .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.body_mut().read_to_vec().unwrap(),
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], b"")
    }

    /// Pushes a blob in one request; returns its digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        let answer = self.send(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        );
        assert_eq!(answer.status, 201, "push blob {digest}");
        digest
    }

    /// Pushes a manifest (JSON) under `reference`.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        manifest: &serde_json::Value,
    ) -> Answer {
        self.send(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            manifest.to_string().as_bytes(),
        )
    }

    /// Pushes a config blob and an image manifest naming it (no layers) under `reference`;
    /// returns the manifest's JSON and digest. `extra` fields are merged into the manifest.
    pub fn push_image(
        &self,
        repo: &str,
        reference: &str,
        config: &[u8],
        extra: serde_json::Value,
    ) -> (serde_json::Value, String) {
        let config_digest = self.push_blob(repo, config);
        let mut manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [],
        });
        if let (Some(m), Some(extra)) = (manifest.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        let answer = self.put_manifest(repo, reference, MANIFEST_TYPE, &manifest);
        assert_eq!(
            answer.status,
            201,
            "push manifest {repo}:{reference}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let digest = digest_of(manifest.to_string().as_bytes());
        (manifest, digest)
    }
}
