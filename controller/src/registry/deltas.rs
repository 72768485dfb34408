//! The delta endpoint: `HEAD|GET /v2/<repo>/coracle/deltas/<target diff_id>?have=<diff_id>,...`.
//! Picks the best base among the layers the device holds (the same position in another image
//! of the repository, else any layer of the repository), takes the pair's verdict from
//! `delta_work` (usually encoded ahead by the background workers, else encoded off the
//! async runtime, once however many ask), waiting at most `[deltas] request_wait_s` for an
//! encode in progress, serves the delta as an ordinary blob (so it is fetched and resumed
//! like one). Answers 404 when no base fits, the delta would not be smaller than the full
//! layer, or its encode outlasted the wait: the agent then pulls the full layer.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::delta_work::DeltaOutcome;

use coracle_images::delta::{self, BaseLayer, EncodeOptions};
use coracle_images::oci::{ImageConfig, Manifest};
use coracle_images::unpack::{unpack_layer, UnpackLimits};
use coracle_images::Digest;

use super::{io, BlobDigest, Registry, RegistryError};

/// More held layers than any device stores; longer lists are refused, not truncated.
pub const MAX_HAVE: usize = 256;
/// A layer of an image in the repository: compressed blob and uncompressed diff_id.
#[derive(Debug, Clone)]
pub(super) struct LayerRef {
    pub blob: BlobDigest,
    pub diff_id: Digest,
}

/// Parses the `have` query parameter: comma-separated `sha256:` digests, at most `MAX_HAVE`.
pub fn parse_have(query: Option<&str>) -> Result<Vec<Digest>, RegistryError> {
    let invalid = |reason: String| RegistryError::DeltaRequestInvalid { reason };
    let raw = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("have="))
        .ok_or_else(|| invalid("missing have=<diff_id>,... parameter".into()))?;
    let raw = raw
        .replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%2C", ",");
    let items: Vec<&str> = raw.split(',').filter(|s| !s.is_empty()).collect();
    if items.is_empty() {
        return Err(invalid("have lists no layers".into()));
    }
    if items.len() > MAX_HAVE {
        return Err(invalid(format!(
            "have lists {} layers, at most {MAX_HAVE} are accepted",
            items.len()
        )));
    }
    items
        .iter()
        .map(|item| {
            item.parse::<Digest>()
                .map_err(|_| invalid(format!("have entry {item:?} is not a sha256 digest")))
        })
        .collect()
}

/// Unique scratch names for concurrent encodes.
static SCRATCH_SEQ: AtomicU64 = AtomicU64::new(0);

impl Registry {
    /// The delta blob (digest, size) that rebuilds `target` in repository `name` from a
    /// layer in `have`, encoding it on first request; `None` when no delta pays.
    pub async fn delta_for(
        &self,
        name: &str,
        target: &Digest,
        have: Vec<Digest>,
    ) -> Result<Option<(BlobDigest, u64)>, RegistryError> {
        let registry = self.clone();
        let name = name.to_string();
        let target = *target;
        tokio::task::spawn_blocking(move || registry.delta_blocking(&name, &target, &have))
            .await
            .map_err(|err| RegistryError::DeltaFailed {
                reason: format!("delta task ended: {err}"),
            })?
    }

    fn delta_blocking(
        &self,
        name: &str,
        target: &Digest,
        have: &[Digest],
    ) -> Result<Option<(BlobDigest, u64)>, RegistryError> {
        let images = self.image_layers(name)?;
        let Some((target_layer, base_layer)) = choose_base(&images, target, have) else {
            if images.iter().flatten().any(|l| &l.diff_id == target) {
                return Ok(None);
            }
            return Err(RegistryError::DeltaRequestInvalid {
                reason: format!("{target} is not a layer of repository {name}"),
            });
        };
        match self.delta_within(&target_layer, &base_layer, self.delta_wait)? {
            Some(DeltaOutcome::Delta { digest, bytes }) => Ok(Some((digest, bytes))),
            // No delta pays, or the encode outlasted the wait: the full layer.
            Some(DeltaOutcome::NotWorth { .. }) | None => Ok(None),
        }
    }

    /// Every image manifest of the repository as its list of layers.
    pub(super) fn image_layers(&self, name: &str) -> Result<Vec<Vec<LayerRef>>, RegistryError> {
        let dir = self.repos.join(name).join("manifests");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(_) => {
                return Err(RegistryError::DeltaRequestInvalid {
                    reason: format!("repository {name} has no images"),
                })
            }
        };
        let mut images = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("list manifests", &dir))?;
            let Some(hex) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(digest) = BlobDigest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            // Indexes and foreign documents are skipped: only image manifests have layers.
            if let Some(layers) = self.layers_of(&digest) {
                images.push(layers);
            }
        }
        Ok(images)
    }

    pub(super) fn layers_of(&self, manifest: &BlobDigest) -> Option<Vec<LayerRef>> {
        let bytes = std::fs::read(self.blobs.path(manifest)).ok()?;
        let manifest = Manifest::parse(&bytes).ok()?;
        let config_digest = BlobDigest::parse(&manifest.config.digest.to_string()).ok()?;
        let config =
            ImageConfig::parse(&std::fs::read(self.blobs.path(&config_digest)).ok()?).ok()?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return None;
        }
        manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(layer, diff_id)| {
                Some(LayerRef {
                    blob: BlobDigest::parse(&layer.digest.to_string()).ok()?,
                    diff_id: *diff_id,
                })
            })
            .collect()
    }

    /// Encodes target from base; keeps it only if smaller than the target's blob.
    pub(super) fn encode_delta(
        &self,
        target: &LayerRef,
        base: &LayerRef,
    ) -> Result<DeltaOutcome, RegistryError> {
        let started = std::time::Instant::now();
        let seq = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        let scratch = ScratchDir(
            self.deltas
                .join(format!(".work-{}-{seq}", std::process::id())),
        );
        std::fs::create_dir_all(&scratch.0).map_err(io("create delta scratch", &scratch.0))?;
        let failed = |step: &str, err: &dyn std::fmt::Display| RegistryError::DeltaFailed {
            reason: format!("{step} for {} from {}: {err}", target.diff_id, base.diff_id),
        };

        let new_tar = scratch.0.join("new.tar");
        let mut reader = self.decompressed(target)?;
        let mut out = File::create(&new_tar).map_err(io("create layer tar", &new_tar))?;
        std::io::copy(&mut reader, &mut out).map_err(|e| failed("decompress target", &e))?;

        let old_dir = scratch.0.join("old");
        let limits = UnpackLimits {
            max_bytes: u64::MAX,
            ..UnpackLimits::default()
        };
        let old = unpack_layer(self.decompressed(base)?, &old_dir, None, &limits)
            .map_err(|e| failed("unpack base", &e))?;
        let bases = [BaseLayer {
            diff_id: old.diff_id,
            dir: &old_dir,
            index: &old.index,
        }];
        let delta_path = scratch.0.join("delta");
        let out = File::create(&delta_path).map_err(io("create delta", &delta_path))?;
        let report = delta::encode(
            &new_tar,
            &bases,
            &scratch.0,
            BufWriter::new(out),
            &EncodeOptions::default(),
        )
        .map_err(|e| failed("encode delta", &e))?;
        let full = self.blobs.size(&target.blob).unwrap_or(0);
        tracing::info!(target = %target.diff_id, base = %base.diff_id,
            delta_bytes = report.delta_bytes, full_bytes = full,
            ms = started.elapsed().as_millis() as u64, "delta encoded");
        if report.delta_bytes >= full {
            return Ok(DeltaOutcome::NotWorth {
                delta_bytes: Some(report.delta_bytes),
            });
        }
        let digest = blob_digest_of_file(&delta_path)?;
        let dest = self.blobs.path(&digest);
        std::fs::rename(&delta_path, &dest).map_err(io("store delta blob", &dest))?;
        Ok(DeltaOutcome::Delta {
            digest,
            bytes: report.delta_bytes,
        })
    }

    fn decompressed(&self, layer: &LayerRef) -> Result<Box<dyn Read>, RegistryError> {
        let path = self.blobs.path(&layer.blob);
        let file = File::open(&path).map_err(io("open layer blob", &path))?;
        coracle_images::codec::decompress_sniffed(file).map_err(io("decompress layer", &path))
    }
}

/// The target layer and its best base: a held layer at the same position in another image
/// of the repository (the usual previous version), else any held layer of the repository.
pub(super) fn choose_base(
    images: &[Vec<LayerRef>],
    target: &Digest,
    have: &[Digest],
) -> Option<(LayerRef, LayerRef)> {
    let held = |l: &&LayerRef| have.contains(&l.diff_id) && &l.diff_id != target;
    let (position, target_layer) = images.iter().find_map(|layers| {
        layers
            .iter()
            .enumerate()
            .find(|(_, l)| &l.diff_id == target)
    })?;
    let same_position = images
        .iter()
        .filter_map(|layers| layers.get(position))
        .find(held);
    let any = || images.iter().flatten().find(held);
    let base = same_position.or_else(any)?;
    Some((target_layer.clone(), base.clone()))
}

fn blob_digest_of_file(path: &Path) -> Result<BlobDigest, RegistryError> {
    use sha2::{Digest as _, Sha256};
    let mut file = File::open(path).map_err(io("hash delta", path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io("hash delta", path))?;
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    BlobDigest::parse(&format!("sha256:{hex}"))
}

/// Removes an encode's scratch files whatever happened.
struct ScratchDir(PathBuf);
impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn have_lists_are_checked() {
        let ok = parse_have(Some(&format!("have={A},{B}"))).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(parse_have(None).is_err());
        assert!(parse_have(Some("have=")).is_err());
        assert!(parse_have(Some("have=sha256:zz")).is_err());
        let huge = vec![A; MAX_HAVE + 1].join(",");
        assert!(parse_have(Some(&format!("have={huge}"))).is_err());
    }

    fn layer(diff: &str) -> LayerRef {
        LayerRef {
            blob: BlobDigest::parse(A).unwrap(),
            diff_id: diff.parse().unwrap(),
        }
    }

    #[test]
    fn base_is_the_held_layer_at_the_same_position() {
        let c = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
        let v1 = vec![layer(A), layer(B)];
        let v2 = vec![layer(A), layer(c)];
        let target: Digest = c.parse().unwrap();
        let have: Vec<Digest> = vec![A.parse().unwrap(), B.parse().unwrap()];
        let (_, base) = choose_base(&[v1, v2], &target, &have).unwrap();
        assert_eq!(base.diff_id.to_string(), B);
        assert!(choose_base(&[vec![layer(c)]], &target, &have).is_none());
    }
}
