//! Pulling one image into the device store: manifest (through an index if need be) and config
//! verified by digest, then each missing layer — as a delta from layers the device holds when
//! the controller has one, else as the full layer, resuming partial downloads either way.
//! Before the first layer, the whole image's disk need is checked against the free space
//! (`PullError::NotEnoughDisk`), so a pull that cannot finish downloads nothing.
//! A layer only enters the store after its diff_id is verified by the unpack.

use std::fs::File;

use coracle_images::codec::decompress;
use coracle_images::delta::apply_to_store;
use coracle_images::media_type::{self, Compression};
use coracle_images::oci::{Descriptor, ImageConfig, Index, Manifest, Platform};
use coracle_images::store::{pull_space_needed, ImageRecord, Store, StoreError};
use coracle_images::Digest;
use tracing::{info, warn};

use super::client::RegistryClient;
use super::error::PullError;

/// How far a layer has come, for progress reports: called after each chunk received and
/// once more when the layer is verified and stored (`stored`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub layer: Digest,
    /// The layer's position in the image and the image's layer count.
    pub index: usize,
    pub count: usize,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub delta: bool,
    pub stored: bool,
}

/// Which layer of the image is being pulled, for [`Progress`].
#[derive(Debug, Clone, Copy)]
struct LayerPosition<'a> {
    diff_id: &'a Digest,
    index: usize,
    count: usize,
}

impl LayerPosition<'_> {
    fn progress(&self, done_bytes: u64, total_bytes: u64, delta: bool, stored: bool) -> Progress {
        Progress {
            layer: *self.diff_id,
            index: self.index,
            count: self.count,
            done_bytes,
            total_bytes,
            delta,
            stored,
        }
    }
}

/// What a pull cost on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    pub layers_from_delta: usize,
    pub layers_full: usize,
    pub layers_already_held: usize,
    /// Bytes of layer or delta blobs downloaded (documents not counted).
    pub blob_bytes: u64,
}

/// Pulls images from one registry into one store.
#[derive(Debug)]
pub struct Puller<'a> {
    pub client: &'a RegistryClient,
    pub store: &'a Store,
    /// The device's platform, for multi-arch indexes.
    pub platform: Platform,
    /// Memory budget for applying a delta.
    pub delta_budget: u64,
}

fn is_index(bytes: &[u8]) -> bool {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    doc.get("manifests").is_some()
        || matches!(
            doc.get("mediaType").and_then(|m| m.as_str()),
            Some(media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST)
        )
}

impl Puller<'_> {
    /// Pulls `repository@digest` and records it in the store under `digest`. Idempotent: an
    /// image already recorded costs nothing, and held layers are never fetched again.
    pub fn pull(
        &self,
        repository: &str,
        digest: &Digest,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(ImageRecord, PullReport), PullError> {
        let image = format!("{repository}@{digest}");
        if let Some(record) = self
            .store
            .images()?
            .into_iter()
            .find(|r| &r.manifest_digest == digest)
        {
            if record.layers.iter().all(|l| self.store.has_layer(l)) {
                return Ok((record, PullReport::default()));
            }
        }
        let parse = |what, source| PullError::Parse {
            what,
            image: image.clone(),
            source,
        };
        let mut manifest_bytes = self.client.manifest(repository, digest)?;
        let mut manifest_digest = *digest;
        if is_index(&manifest_bytes) {
            let index = Index::parse(&manifest_bytes).map_err(|e| parse("index", e))?;
            let chosen = index
                .select(&self.platform)
                .map_err(|e| parse("index", e))?
                .digest;
            self.store.put_blob(digest, &manifest_bytes)?;
            manifest_bytes = self.client.manifest(repository, &chosen)?;
            manifest_digest = chosen;
        }
        let manifest = Manifest::parse(&manifest_bytes).map_err(|e| parse("manifest", e))?;
        let config_bytes = self
            .client
            .small_blob(repository, &manifest.config.digest)?;
        let config = ImageConfig::parse(&config_bytes).map_err(|e| parse("config", e))?;
        config
            .check_layers(&manifest)
            .map_err(|e| parse("config", e))?;
        self.preflight(&image, &manifest, &config)?;
        self.store.put_blob(&manifest_digest, &manifest_bytes)?;
        self.store
            .put_blob(&manifest.config.digest, &config_bytes)?;

        let mut report = PullReport::default();
        let count = manifest.layers.len();
        for (index, (layer, diff_id)) in manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .enumerate()
        {
            let at = LayerPosition {
                diff_id,
                index,
                count,
            };
            if self.store.has_layer(diff_id) {
                report.layers_already_held += 1;
                continue;
            }
            // Room for the compressed blob and its unpacked tree (gzip ratios of 2-3x).
            self.store.preflight(layer.size.saturating_mul(4))?;
            let delta = if self.client.offers_deltas() {
                self.pull_delta(repository, at, progress)
            } else {
                Ok(None)
            };
            match delta {
                Ok(Some(bytes)) => {
                    report.layers_from_delta += 1;
                    report.blob_bytes += bytes;
                    progress(at.progress(bytes, bytes, true, true));
                    continue;
                }
                Ok(None) => {}
                Err(err) => {
                    warn!(%diff_id, error = %err, "delta pull failed; pulling the full layer")
                }
            }
            let bytes = self.pull_full(repository, layer, at, progress)?;
            report.blob_bytes += bytes;
            report.layers_full += 1;
            progress(at.progress(bytes, bytes, false, true));
        }
        let record = ImageRecord {
            manifest_digest: *digest,
            config_digest: manifest.config.digest,
            layers: config.rootfs.diff_ids.clone(),
        };
        self.store.add_image(&record)?;
        info!(image = %image, delta = report.layers_from_delta, full = report.layers_full,
              held = report.layers_already_held, bytes = report.blob_bytes, "image pulled");
        Ok((record, report))
    }

    /// Refuses the pull before any layer is fetched when the layers the store lacks would
    /// not fit beside the reserve (see `pull_space_needed`).
    fn preflight(
        &self,
        image: &str,
        manifest: &Manifest,
        config: &ImageConfig,
    ) -> Result<(), PullError> {
        let missing: Vec<(u64, Compression)> = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .filter(|(_, diff_id)| !self.store.has_layer(diff_id))
            .map(|(layer, _)| {
                let compression = Compression::of_layer_media_type(&layer.media_type);
                (layer.size, compression.unwrap_or(Compression::Gzip))
            })
            .collect();
        match self.store.preflight(pull_space_needed(&missing)) {
            Err(StoreError::InsufficientSpace {
                needed,
                reserve,
                available,
                ..
            }) => Err(PullError::NotEnoughDisk {
                image: image.to_string(),
                needed,
                reserve,
                available,
                path: self.store.root().to_path_buf(),
            }),
            other => Ok(other?),
        }
    }

    /// Fetches and applies a delta for `diff_id` when the controller offers one. Returns
    /// the delta's size, or `None` when there is no offer.
    fn pull_delta(
        &self,
        repository: &str,
        at: LayerPosition<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Option<u64>, PullError> {
        let diff_id = at.diff_id;
        let held = self.store.layers()?;
        let Some(offer) = self.client.delta_offer(repository, diff_id, &held)? else {
            return Ok(None);
        };
        let mut partial = self.store.partial(&offer.digest);
        self.client
            .download(repository, &mut partial, &offer.digest, &mut |done| {
                progress(at.progress(done, offer.size, true, false))
            })?;
        let path = self.store.commit_partial(partial)?;
        let opened = File::open(&path).map_err(|source| {
            PullError::Store(StoreError::ReadBlob {
                digest: offer.digest,
                path: path.clone(),
                source,
            })
        });
        let applied = opened.and_then(|file| {
            apply_to_store(self.store, file, diff_id, self.delta_budget).map_err(|source| {
                PullError::ApplyDelta {
                    diff_id: *diff_id,
                    source: Box::new(source),
                }
            })
        });
        // The delta blob has served its purpose whatever happened: flash space is scarce.
        let _ = std::fs::remove_file(&path);
        let rebuilt = applied?;
        if &rebuilt != diff_id {
            return Err(PullError::VerifyDigest {
                what: "delta result",
                url: format!("{repository}/coracle/deltas/{diff_id}"),
                expected: *diff_id,
                actual: rebuilt,
            });
        }
        Ok(Some(offer.size))
    }

    /// Downloads the full layer blob (resuming), verifies it, unpacks it as `diff_id`.
    fn pull_full(
        &self,
        repository: &str,
        layer: &Descriptor,
        at: LayerPosition<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<u64, PullError> {
        let diff_id = at.diff_id;
        let compression = Compression::of_layer_media_type(&layer.media_type).ok_or_else(|| {
            PullError::LayerMediaType {
                digest: layer.digest,
                media_type: layer.media_type.clone(),
            }
        })?;
        let mut partial = self.store.partial(&layer.digest);
        self.client
            .download(repository, &mut partial, &layer.digest, &mut |done| {
                progress(at.progress(done, layer.size, false, false))
            })?;
        let path = self.store.commit_partial(partial)?;
        let read_err = |source| {
            PullError::Store(StoreError::ReadBlob {
                digest: layer.digest,
                path: path.clone(),
                source,
            })
        };
        let unpacked = File::open(&path)
            .and_then(|file| decompress(file, compression))
            .map_err(read_err)
            .and_then(|tar| Ok(self.store.add_layer(tar, diff_id)?));
        let _ = std::fs::remove_file(&path);
        unpacked?;
        Ok(layer.size)
    }
}
