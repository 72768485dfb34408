//! Manifests and tags of repositories: a manifest is a blob plus a media-type file in its
//! repository; a tag is a file holding a manifest digest (replaced atomically).

use super::{check_tag, io, BlobDigest, Registry, RegistryError};

impl Registry {
    /// Stores a manifest under `reference` (a tag or its own digest). Image manifests must
    /// name blobs the registry holds, so a pull never finds a dangling reference.
    pub async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<BlobDigest, RegistryError> {
        let invalid = |reason: String| RegistryError::ManifestInvalid { reason };
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|err| invalid(format!("not JSON: {err}")))?;
        if json.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
            return Err(invalid("schemaVersion must be 2".into()));
        }
        let config = json.get("config").into_iter();
        let layers = json
            .get("layers")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten();
        for descriptor in config.chain(layers) {
            let digest = descriptor
                .get("digest")
                .and_then(|d| d.as_str())
                .ok_or_else(|| invalid("descriptor without digest".into()))?;
            let digest = BlobDigest::parse(digest)?;
            if self.blobs.size(&digest).is_none() {
                return Err(invalid(format!(
                    "references blob {} which is not pushed",
                    digest.as_str()
                )));
            }
        }
        let digest = BlobDigest::of(bytes);
        let is_digest = reference.starts_with("sha256:");
        if is_digest && reference != digest.as_str() {
            return Err(RegistryError::DigestMismatch {
                claimed: reference.into(),
                actual: digest.as_str().into(),
            });
        }
        if !is_digest {
            check_tag(reference)?;
        }
        self.blobs.put_bytes(bytes).await?;
        let repo = self.repos.join(name);
        let manifests = repo.join("manifests");
        let tags = repo.join("tags");
        for dir in [&manifests, &tags] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(io("create repository dir", dir))?;
        }
        crate::datadir::write_public(&manifests.join(digest.hex()), content_type.as_bytes())
            .map_err(|err| invalid(err.to_string()))?;
        if !is_digest {
            crate::datadir::write_public(&tags.join(reference), digest.as_str().as_bytes())
                .map_err(|err| invalid(err.to_string()))?;
            // A new tag: the background workers encode deltas to it from the tags before it.
            self.work.plan(name);
        }
        tracing::info!(
            repository = name,
            reference,
            digest = digest.as_str(),
            "manifest pushed"
        );
        Ok(digest)
    }

    /// A tag or digest → (manifest digest, media type).
    pub fn resolve(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<(BlobDigest, String), RegistryError> {
        let unknown = || RegistryError::ManifestUnknown {
            name: name.into(),
            reference: reference.into(),
        };
        let repo = self.repos.join(name);
        let digest = if reference.starts_with("sha256:") {
            BlobDigest::parse(reference)?
        } else {
            check_tag(reference)?;
            let text = std::fs::read_to_string(repo.join("tags").join(reference))
                .map_err(|_| unknown())?;
            BlobDigest::parse(text.trim())?
        };
        let content_type = std::fs::read_to_string(repo.join("manifests").join(digest.hex()))
            .map_err(|_| unknown())?;
        Ok((digest, content_type))
    }

    /// Tags of one repository, sorted.
    pub fn tags(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        let dir = self.repos.join(name).join("tags");
        let entries = std::fs::read_dir(&dir).map_err(|_| RegistryError::ManifestUnknown {
            name: name.into(),
            reference: "tags".into(),
        })?;
        let mut tags: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|t| check_tag(t).is_ok())
            .collect();
        tags.sort();
        Ok(tags)
    }

    /// Every repository holding at least one manifest, sorted.
    pub fn repositories(&self) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        let mut stack = vec![self.repos.clone()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(io("list repositories", &dir))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if !path.is_dir() {
                    continue;
                }
                if path.join("manifests").is_dir() {
                    if let Ok(rel) = path.strip_prefix(&self.repos) {
                        out.push(rel.to_string_lossy().to_string());
                    }
                }
                if entry.file_name() != "manifests" && entry.file_name() != "tags" {
                    stack.push(path);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Orders tags as versions: digit runs compare as numbers (`1.9` < `1.10`) and before
/// words (`2` < `latest`).
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Part {
        Number(u64),
        Text(String),
    }
    fn parts(s: &str) -> Vec<Part> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            let (head, tail) = if digits > 0 {
                rest.split_at(digits)
            } else {
                let n = rest.chars().take_while(|c| !c.is_ascii_digit()).count();
                rest.split_at(rest.char_indices().nth(n).map_or(rest.len(), |(i, _)| i))
            };
            out.push(match head.parse() {
                Ok(n) => Part::Number(n),
                Err(_) => Part::Text(head.to_string()),
            });
            rest = tail;
        }
        out
    }
    parts(a).cmp(&parts(b)).then_with(|| a.cmp(b))
}
