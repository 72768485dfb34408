//! Background delta encoding: after a push (or, for `coracle image import` run beside the
//! server, at the next rescan) the workers plan the (target, base) pairs a device updating
//! from one of the previous tags will ask for, and encode them before anyone asks.
//!
//! Steps of a worker thread: lower its own CPU priority (nice 19, this thread only) → take
//! the next repository to plan or pair to encode from `DeltaWork` → plan: read the
//! repository's images and queue the pairs of `plan_pairs` → encode: `delta_once`, the same
//! once-per-pair path a device's request takes, so the two never encode a pair twice → when
//! idle for `rescan`, plan every repository again (imports written by another process,
//! pairs left by a restart).

use std::collections::HashSet;
use std::time::Duration;

use super::delta_work::{pair_key, Caller, DeltaOutcome, Job};
use super::deltas::{choose_base, LayerRef};
use super::{Registry, RegistryError};

/// How the background encoder runs (`[deltas]` in the serve config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Encoding threads (each at nice 19).
    pub workers: usize,
    /// Newest tags encoded ahead, each from this many tags before it.
    pub history: usize,
    /// Idle time after which every repository is planned again.
    pub rescan: Duration,
}

/// The pairs to encode ahead: for each of the newest `history` tags (version order), every
/// layer a device holding one of the `history` tags before it lacks, with the base that
/// device's request would get (`choose_base` over all of the repository's images).
pub(super) fn plan_pairs(
    tagged: &[Vec<LayerRef>],
    images: &[Vec<LayerRef>],
    history: usize,
) -> Vec<(LayerRef, LayerRef)> {
    let mut seen = HashSet::new();
    let mut pairs = Vec::new();
    let first_target = tagged.len().saturating_sub(history).max(1);
    for i in first_target..tagged.len() {
        for held in &tagged[i.saturating_sub(history)..i] {
            let have: Vec<_> = held.iter().map(|l| l.diff_id).collect();
            for layer in tagged[i].iter().filter(|l| !have.contains(&l.diff_id)) {
                let Some((target, base)) = choose_base(images, &layer.diff_id, &have) else {
                    continue;
                };
                if seen.insert(pair_key(&target.diff_id, &base.diff_id)) {
                    pairs.push((target, base));
                }
            }
        }
    }
    pairs
}

impl Registry {
    /// Starts the background encoders (once, from `serve`) and plans every repository.
    pub fn start_delta_workers(&self, settings: WorkerSettings) -> Result<(), RegistryError> {
        self.remove_stale_scratch();
        for repository in self.repositories()? {
            self.work.plan(&repository);
        }
        for n in 0..settings.workers.max(1) {
            let registry = self.clone();
            std::thread::Builder::new()
                .name(format!("coracle-delta-{n}"))
                .spawn(move || registry.worker_loop(settings))
                .map_err(|source| RegistryError::Io {
                    step: "start delta worker",
                    path: self.deltas.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    fn worker_loop(&self, settings: WorkerSettings) {
        lower_thread_priority();
        loop {
            match self.work.next(settings.rescan) {
                None => match self.repositories() {
                    Ok(repositories) => repositories.iter().for_each(|r| self.work.plan(r)),
                    Err(err) => tracing::warn!(error = %err, "delta rescan failed"),
                },
                Some(Ok(repository)) => self.plan_repository(&repository, settings.history),
                Some(Err(job)) => self.run_job(&job),
            }
        }
    }

    fn plan_repository(&self, repository: &str, history: usize) {
        let tagged = match self.tagged_images(repository) {
            Ok(tagged) => tagged,
            Err(err) => {
                tracing::warn!(repository, error = %err, "delta planning failed");
                return;
            }
        };
        let images = self.image_layers(repository).unwrap_or_default();
        let mut queued = 0;
        for (target, base) in plan_pairs(&tagged, &images, history) {
            let key = pair_key(&target.diff_id, &base.diff_id);
            if self.read_record(&key).is_some() {
                continue;
            }
            let job = Job {
                repository: repository.to_string(),
                target,
                base,
            };
            queued += usize::from(self.work.enqueue(job));
        }
        if queued > 0 {
            tracing::info!(repository, queued, "delta jobs queued");
        }
    }

    /// The images of the repository's tags, in version order (tags that are not image
    /// manifests, e.g. indexes, are left out).
    fn tagged_images(&self, repository: &str) -> Result<Vec<Vec<LayerRef>>, RegistryError> {
        let mut tags = self.tags(repository)?;
        tags.sort_by(|a, b| super::version_order(a, b));
        Ok(tags
            .iter()
            .filter_map(|tag| {
                let (digest, _) = self.resolve(repository, tag).ok()?;
                self.layers_of(&digest)
            })
            .collect())
    }

    fn run_job(&self, job: &Job) {
        let started = std::time::Instant::now();
        match self.delta_once(&job.target, &job.base, Caller::Background) {
            // `encode_delta` logs the verdict (info); this adds the worker's view.
            Ok(DeltaOutcome::Delta { bytes, .. }) => tracing::debug!(
                repository = %job.repository, target = %job.target.diff_id,
                base = %job.base.diff_id, delta_bytes = bytes,
                ms = started.elapsed().as_millis() as u64, "background delta ready"),
            Ok(DeltaOutcome::NotWorth { .. }) => tracing::debug!(
                repository = %job.repository, target = %job.target.diff_id,
                base = %job.base.diff_id, "background delta does not pay"),
            Err(err) => tracing::warn!(
                repository = %job.repository, target = %job.target.diff_id,
                base = %job.base.diff_id, error = %err, "background delta failed"),
        }
    }

    /// Scratch dirs of encodes a killed controller left behind.
    fn remove_stale_scratch(&self) {
        let Ok(entries) = std::fs::read_dir(&self.deltas) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".work-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Nice 19 for the calling thread only (Linux applies `setpriority` to a thread id), so
/// encoding yields the CPU to the broker, the API and the devices' downloads.
fn lower_thread_priority() {
    // SAFETY: gettid has no preconditions; setpriority only reads its integer arguments.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "delta worker keeps its priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::BlobDigest;

    fn layer(n: u8) -> LayerRef {
        let hex = format!("{n:02x}").repeat(32);
        LayerRef {
            blob: BlobDigest::parse(&format!("sha256:{hex}")).unwrap(),
            diff_id: format!("sha256:{hex}").parse().unwrap(),
        }
    }

    fn keys(pairs: &[(LayerRef, LayerRef)]) -> Vec<(u8, u8)> {
        let n = |l: &LayerRef| u8::from_str_radix(&l.diff_id.hex()[..2], 16).unwrap();
        pairs.iter().map(|(t, b)| (n(t), n(b))).collect()
    }

    #[test]
    fn plan_encodes_new_layers_from_the_previous_tags_at_the_same_position() {
        // Shared base layer 1; the app layer changes 2 → 3 → 4.
        let v1 = vec![layer(1), layer(2)];
        let v2 = vec![layer(1), layer(3)];
        let v3 = vec![layer(1), layer(4)];
        let images = vec![v1.clone(), v2.clone(), v3.clone()];
        let tagged = vec![v1, v2, v3];
        assert_eq!(
            keys(&plan_pairs(&tagged, &images, 2)),
            [(3, 2), (4, 2), (4, 3)]
        );
        assert_eq!(keys(&plan_pairs(&tagged, &images, 1)), [(4, 3)]);
        assert!(plan_pairs(&tagged[..1], &images, 3).is_empty());
    }
}
