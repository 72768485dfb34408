//! The referrers API (`GET /v2/<name>/referrers/<digest>`): the manifests of a repository
//! whose `subject` is the given digest, as the descriptors of an OCI image index. They are
//! found by reading the repository's manifests on each request: a controller's registry
//! holds tens of manifests per repository, and an index kept beside them could drift.

use serde_json::{json, Map, Value};

use super::{io, BlobDigest, Registry, RegistryError};

pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

impl Registry {
    /// Descriptors of the manifests in `name` referring to `subject`, sorted by digest,
    /// only those of `artifact_type` when given. An unknown repository or subject has none.
    pub fn referrers(
        &self,
        name: &str,
        subject: &BlobDigest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Value>, RegistryError> {
        let dir = self.repos.join(name).join("manifests");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io("list manifests", &dir)(err)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("list manifests", &dir))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|hex| BlobDigest::parse(&format!("sha256:{hex}")).ok())
            else {
                continue;
            };
            // A manifest deleted between the listing and the read is simply not listed.
            let Ok(bytes) = std::fs::read(self.blobs.path(&digest)) else {
                continue;
            };
            let media_type = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some(descriptor) = referrer(&bytes, &digest, &media_type, subject) {
                if artifact_type.is_none_or(|t| descriptor["artifactType"] == t) {
                    out.push(descriptor);
                }
            }
        }
        out.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        Ok(out)
    }
}

/// The descriptor of a manifest if its `subject` is `subject`: its media type, digest,
/// size, artifact type (its `artifactType`, else its config's media type) and annotations.
pub fn referrer(
    bytes: &[u8],
    digest: &BlobDigest,
    stored_media_type: &str,
    subject: &BlobDigest,
) -> Option<Value> {
    let manifest: Value = serde_json::from_slice(bytes).ok()?;
    if manifest["subject"]["digest"].as_str() != Some(subject.as_str()) {
        return None;
    }
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or(stored_media_type)
        .to_string();
    let mut descriptor = Map::new();
    descriptor.insert("mediaType".into(), json!(media_type));
    descriptor.insert("digest".into(), json!(digest.as_str()));
    descriptor.insert("size".into(), json!(bytes.len()));
    let artifact_type = manifest["artifactType"]
        .as_str()
        .or_else(|| manifest["config"]["mediaType"].as_str());
    if let Some(artifact_type) = artifact_type {
        descriptor.insert("artifactType".into(), json!(artifact_type));
    }
    if let Some(annotations) = manifest.get("annotations").filter(|a| a.is_object()) {
        descriptor.insert("annotations".into(), annotations.clone());
    }
    Some(Value::Object(descriptor))
}

/// The image index answering a referrers request.
pub fn referrers_index(descriptors: Vec<Value>) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": descriptors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_refers_to_its_subject_with_its_artifact_type() {
        let subject = BlobDigest::of(b"subject");
        let by_config = json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/x.sbom", "digest": "sha256:00", "size": 1},
            "layers": [],
            "subject": {"digest": subject.as_str(), "size": 7},
            "annotations": {"k": "v"},
        })
        .to_string();
        let digest = BlobDigest::of(by_config.as_bytes());
        let d = referrer(
            by_config.as_bytes(),
            &digest,
            "application/vnd.oci.image.manifest.v1+json",
            &subject,
        )
        .unwrap();
        assert_eq!(d["artifactType"], "application/x.sbom");
        assert_eq!(d["annotations"]["k"], "v");
        assert_eq!(d["size"], by_config.len());
        assert_eq!(d["mediaType"], "application/vnd.oci.image.manifest.v1+json");

        let explicit = json!({
            "schemaVersion": 2,
            "artifactType": "application/x.sig",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json"},
            "subject": {"digest": subject.as_str()},
        })
        .to_string();
        let d = referrer(explicit.as_bytes(), &digest, "", &subject).unwrap();
        assert_eq!(d["artifactType"], "application/x.sig");
        assert!(referrer(explicit.as_bytes(), &digest, "", &BlobDigest::of(b"other")).is_none());
        assert!(referrer(b"not json", &digest, "", &subject).is_none());
    }
}
