//! What the image listing shows per tag: for each layer a device holding the previous tag
//! lacks, the delta it would get (ready with its size, not worth it, computing, queued,
//! failed) against the full compressed layer.

use serde::Serialize;

use super::catalogue::choose_base;
use super::{DeltaOutcome, PairState};
use crate::registry::Registry;

/// One new layer of a tag and its delta from the previous tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerDelta {
    /// The layer's blob digest (as in the manifest).
    pub layer: String,
    /// Bytes of the full compressed layer blob.
    pub full_bytes: u64,
    /// `ready`, `not_worth_it`, `computing`, `queued`, `failed`, `not_planned`, `no_base`.
    pub state: &'static str,
    /// Bytes of the delta blob (`ready`), or of the delta that did not pay (`not_worth_it`).
    pub delta_bytes: Option<u64>,
    pub error: Option<String>,
}

impl Registry {
    /// The layers of `tag` that `previous` lacks, each with its delta's state.
    pub fn layer_deltas(&self, repository: &str, tag: &str, previous: &str) -> Vec<LayerDelta> {
        let deltas = &self.deltas;
        let layers = |t: &str| {
            let (digest, _) = self.resolve(repository, t).ok()?;
            deltas.layers_of(&digest.digest())
        };
        let (Some(current), Some(held)) = (layers(tag), layers(previous)) else {
            return Vec::new();
        };
        let images = deltas.catalogue(repository).unwrap_or_default();
        let have: Vec<_> = held.iter().map(|l| l.diff_id).collect();
        current
            .iter()
            .filter(|l| !have.contains(&l.diff_id))
            .map(|layer| {
                let mut out = LayerDelta {
                    layer: layer.blob.to_string(),
                    full_bytes: deltas.blobs.size_of(&layer.blob).unwrap_or(0),
                    state: "no_base",
                    delta_bytes: None,
                    error: None,
                };
                let Some((_, base)) = choose_base(&images, &layer.diff_id, &have) else {
                    return out;
                };
                out.state = match deltas.pair_state(&layer.diff_id, &base.diff_id) {
                    PairState::Done(DeltaOutcome::Delta { bytes, .. }) => {
                        out.delta_bytes = Some(bytes);
                        "ready"
                    }
                    PairState::Done(DeltaOutcome::NotWorth { delta_bytes }) => {
                        out.delta_bytes = delta_bytes;
                        "not_worth_it"
                    }
                    PairState::Computing => "computing",
                    PairState::Queued => "queued",
                    PairState::Failed(reason) => {
                        out.error = Some(reason);
                        "failed"
                    }
                    PairState::NotPlanned => "not_planned",
                };
                out
            })
            .collect()
    }
}
