//! Reference counts and garbage collection under a disk budget.

use std::collections::BTreeMap;
use std::fs;
use std::time::SystemTime;

use tracing::info;

use super::{Store, StoreError};
use crate::digest::Digest;
use crate::layer_index::LayerIndex;

/// What a GC pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_layers: Vec<Digest>,
    pub freed_bytes: u64,
    /// Bytes held by layers after the pass.
    pub used_bytes: u64,
    /// True when the budget could not be met because referenced layers alone exceed it.
    pub over_budget: bool,
}

impl Store {
    /// How many image records use each held layer (0 for unreferenced layers).
    pub fn refcounts(&self) -> Result<BTreeMap<Digest, usize>, StoreError> {
        let mut counts: BTreeMap<Digest, usize> =
            self.layers()?.into_iter().map(|d| (d, 0)).collect();
        for record in self.images()? {
            for layer in record.layers {
                *counts.entry(layer).or_default() += 1;
            }
        }
        Ok(counts)
    }

    /// Diff_ids of every layer held.
    pub fn layers(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.root.join("layers");
        let read_err = |source| StoreError::ReadRecord {
            path: dir.clone(),
            source,
        };
        let mut layers = Vec::new();
        for item in fs::read_dir(&dir).map_err(read_err)? {
            let name = item.map_err(read_err)?.file_name();
            if let Ok(d) = Digest::from_hex(&name.to_string_lossy()) {
                layers.push(d);
            }
        }
        Ok(layers)
    }

    /// Remove unreferenced layers, least recently added first, until the layers fit in
    /// `budget_bytes`. Referenced layers are never removed.
    pub fn gc(&self, budget_bytes: u64) -> Result<GcReport, StoreError> {
        let counts = self.refcounts()?;
        let mut sizes = BTreeMap::new();
        for diff_id in counts.keys() {
            let size = LayerIndex::load(&self.index_path(&diff_id.hex()))
                .map(|i| i.total_size())
                .unwrap_or(0);
            sizes.insert(*diff_id, size);
        }
        let mut used: u64 = sizes.values().sum();
        let mut unreferenced: Vec<(SystemTime, Digest)> = counts
            .iter()
            .filter(|(_, &n)| n == 0)
            .map(|(d, _)| {
                let added = fs::metadata(self.layer_path(d))
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (added, *d)
            })
            .collect();
        unreferenced.sort();
        let mut report = GcReport::default();
        for (_, diff_id) in unreferenced {
            if used <= budget_bytes {
                break;
            }
            // Index first: a layer dir without index is repaired on open, the reverse is not.
            let index = self.index_path(&diff_id.hex());
            let dir = self.layer_path(&diff_id);
            let _ = fs::remove_file(&index);
            let _ = fs::remove_file(crate::skeleton::skeleton_path(&self.layer_path(&diff_id)));
            fs::remove_dir_all(&dir).map_err(|source| StoreError::Remove { path: dir, source })?;
            let size = sizes[&diff_id];
            used -= size;
            report.freed_bytes += size;
            report.removed_layers.push(diff_id);
            info!(layer = %diff_id, bytes = size, "layer collected");
        }
        report.used_bytes = used;
        report.over_budget = used > budget_bytes;
        Ok(report)
    }
}
