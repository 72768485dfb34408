//! Manifests and tags of repositories: a manifest is a blob plus a media-type file in its
//! repository; a tag is a file holding a manifest digest (replaced atomically). Listing
//! tags and repositories is `tag_list.rs`.

use super::{check_tag, io, BlobDigest, Registry, RegistryError};

/// A manifest just stored: its digest, and the manifest it refers to (`subject`), which
/// the push response names in `OCI-Subject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    pub digest: BlobDigest,
    pub subject: Option<BlobDigest>,
}

impl Registry {
    /// Stores a manifest under `reference` (a tag or its own digest). Image manifests must
    /// name blobs the registry holds, and indexes manifests of this repository, so a pull
    /// never finds a dangling reference. A `subject` may be missing (spec: referrers are
    /// pushed before or after their subject).
    pub async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<StoredManifest, RegistryError> {
        self.store_manifest(name, reference, content_type, bytes, true)
            .await
    }

    /// Stores a manifest mirrored from another registry: as `put_manifest`, except that an
    /// index keeps its upstream bytes (and digest) while naming the manifests of platforms
    /// the fleet does not run, which were not mirrored.
    pub async fn put_mirrored_manifest(
        &self,
        name: &str,
        reference: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<StoredManifest, RegistryError> {
        self.store_manifest(name, reference, content_type, bytes, false)
            .await
    }

    async fn store_manifest(
        &self,
        name: &str,
        reference: &str,
        content_type: &str,
        bytes: &[u8],
        index_children_held: bool,
    ) -> Result<StoredManifest, RegistryError> {
        let invalid = |reason: String| RegistryError::ManifestInvalid { reason };
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|err| invalid(format!("not JSON: {err}")))?;
        if json.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
            return Err(invalid("schemaVersion must be 2".into()));
        }
        let repo = self.repos.join(name);
        let manifests = repo.join("manifests");
        let config = json.get("config").into_iter();
        for descriptor in config.chain(descriptors(&json, "layers")) {
            let digest = descriptor_digest(descriptor)?;
            if self.blobs.stat(&digest).await?.is_none() {
                return Err(RegistryError::ManifestBlobUnknown {
                    name: name.into(),
                    digest: digest.as_str().into(),
                });
            }
        }
        for descriptor in descriptors(&json, "manifests") {
            let digest = descriptor_digest(descriptor)?;
            if index_children_held && !manifests.join(digest.hex()).is_file() {
                return Err(RegistryError::ManifestBlobUnknown {
                    name: name.into(),
                    digest: digest.as_str().into(),
                });
            }
        }
        let subject = json.get("subject").map(descriptor_digest).transpose()?;
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
        let tags = repo.join("tags");
        for dir in [&manifests, &tags] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(io("create repository dir", dir))?;
        }
        self.write_entry_through(
            &manifests.join(digest.hex()),
            content_type.as_bytes(),
            "store manifest",
        )
        .await?;
        if !is_digest {
            self.write_entry_through(
                &tags.join(reference),
                digest.as_str().as_bytes(),
                "store tag",
            )
            .await?;
            // A new tag: the background workers encode deltas to it from the tags before it.
            self.deltas.plan(name);
        } else {
            self.deltas.forget(name);
        }
        tracing::info!(
            repository = name,
            reference,
            digest = digest.as_str(),
            "manifest pushed"
        );
        Ok(StoredManifest { digest, subject })
    }

    /// A tag or digest → (manifest digest, media type). A reference that cannot name a
    /// manifest (a malformed tag) is unknown, as the spec asks, not a bad request.
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
            check_tag(reference).map_err(|_| unknown())?;
            let text = std::fs::read_to_string(repo.join("tags").join(reference))
                .map_err(|_| unknown())?;
            BlobDigest::parse(text.trim())?
        };
        let content_type = std::fs::read_to_string(repo.join("manifests").join(digest.hex()))
            .map_err(|_| unknown())?;
        Ok((digest, content_type))
    }

    /// Deletes a tag, or a manifest by digest together with every tag naming it. The
    /// manifest's bytes stay in the blob store (another repository may hold the same
    /// manifest); the registry GC removes what nothing names.
    pub fn delete_manifest(&self, name: &str, reference: &str) -> Result<(), RegistryError> {
        let unknown = || RegistryError::ManifestUnknown {
            name: name.into(),
            reference: reference.into(),
        };
        let repo = self.repos.join(name);
        if !reference.starts_with("sha256:") {
            check_tag(reference).map_err(|_| unknown())?;
            let path = repo.join("tags").join(reference);
            return remove_existing(&path, "delete tag")?
                .then_some(())
                .ok_or_else(unknown);
        }
        let digest = BlobDigest::parse(reference)?;
        for tag in self.tags(name).unwrap_or_default() {
            if self.resolve(name, &tag).is_ok_and(|(d, _)| d == digest) {
                remove_existing(&repo.join("tags").join(&tag), "delete tag")?;
            }
        }
        let path = repo.join("manifests").join(digest.hex());
        let removed = remove_existing(&path, "delete manifest")?;
        self.deltas.forget(name);
        if removed {
            tracing::info!(
                repository = name,
                digest = digest.as_str(),
                "manifest deleted"
            );
        }
        removed.then_some(()).ok_or_else(unknown)
    }
}

/// The descriptors in the array `field` of a manifest (`layers`, `manifests`).
fn descriptors<'a>(
    json: &'a serde_json::Value,
    field: &str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    json.get(field)
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
}

fn descriptor_digest(descriptor: &serde_json::Value) -> Result<BlobDigest, RegistryError> {
    let digest = descriptor
        .get("digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| RegistryError::ManifestInvalid {
            reason: "descriptor without digest".into(),
        })?;
    BlobDigest::parse(digest)
}

/// Writes a repository entry (a manifest's media type, a tag's digest) atomically; a failure
/// is the server's storage (507 when the disk is full), never the client's manifest.
pub(super) fn write_entry(
    path: &std::path::Path,
    contents: &[u8],
    step: &'static str,
) -> Result<(), RegistryError> {
    coracle_images::store::write_atomic_with_mode(path, contents, 0o644).map_err(io(step, path))
}

/// Removes a file; `false` when it was not there.
fn remove_existing(path: &std::path::Path, step: &'static str) -> Result<bool, RegistryError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(io(step, path)(err)),
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
