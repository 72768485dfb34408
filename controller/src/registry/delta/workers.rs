//! Background delta encoding: after a push (or, for `coracle image import` run beside the
//! server, at the next rescan) the workers plan the (target, base) pairs a device updating
//! from one of the previous tags will ask for, and encode them before anyone asks.
//!
//! Steps of a worker thread: lower its own CPU priority (nice 19, this thread only) → take
//! the next repository to plan or pair to encode from the queue → plan: read the
//! repository's images and queue the pairs of `plan_pairs` → encode: `delta_once`, the same
//! once-per-pair path a device's request takes, so the two never encode a pair twice → when
//! idle for `rescan`, plan every repository again (imports written by another process,
//! pairs left by a restart). Workers hold a registry clone: planning reads its tags.

use std::time::Duration;

use super::catalogue::{plan_pairs, LayerRef};
use super::gate::Caller;
use super::queue::{Job, Work};
use super::{DeltaOutcome, RegistryError};
use crate::registry::Registry;

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

impl Registry {
    /// Starts the background encoders (once, from `serve`) and plans every repository.
    pub fn start_delta_workers(&self, settings: WorkerSettings) -> Result<(), RegistryError> {
        self.deltas.remove_stale_scratch();
        for repository in self.repositories()? {
            self.deltas.queue.plan(&repository);
        }
        for n in 0..settings.workers.max(1) {
            let registry = self.clone();
            std::thread::Builder::new()
                .name(format!("coracle-delta-{n}"))
                .spawn(move || registry.worker_loop(settings))
                .map_err(|source| RegistryError::Io {
                    step: "start delta worker",
                    path: self.deltas.records.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    fn worker_loop(&self, settings: WorkerSettings) {
        lower_thread_priority();
        loop {
            match self.deltas.queue.next(settings.rescan) {
                None => match self.repositories() {
                    Ok(repositories) => repositories.iter().for_each(|r| self.deltas.plan(r)),
                    Err(err) => tracing::warn!(error = %err, "delta rescan failed"),
                },
                Some(Work::Plan(repository)) => self.plan_repository(&repository, settings.history),
                Some(Work::Encode(job)) => self.run_job(&job),
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
        let images = self.deltas.catalogue(repository).unwrap_or_default();
        let mut queued = 0;
        for (target, base) in plan_pairs(&tagged, &images, history) {
            let job = Job {
                repository: repository.to_string(),
                target,
                base,
            };
            let key = job.key();
            if self.deltas.read_record(&key).is_some() || self.deltas.gate.busy_or_failed(&key) {
                continue;
            }
            queued += usize::from(self.deltas.queue.push(job));
        }
        if queued > 0 {
            tracing::info!(repository, queued, "delta jobs queued");
        }
    }

    /// The images of the repository's tags, in version order (tags that are not image
    /// manifests, e.g. indexes, are left out).
    fn tagged_images(&self, repository: &str) -> Result<Vec<Vec<LayerRef>>, RegistryError> {
        let mut tags = self.tags(repository)?;
        tags.sort_by(|a, b| crate::registry::version_order(a, b));
        Ok(tags
            .iter()
            .filter_map(|tag| {
                let (digest, _) = self.resolve(repository, tag).ok()?;
                self.deltas.layers_of(&digest.digest())
            })
            .collect())
    }

    fn run_job(&self, job: &Job) {
        let started = std::time::Instant::now();
        match self
            .deltas
            .delta_once(&job.target, &job.base, Caller::Background)
        {
            // `encode` logs the verdict (info); this adds the worker's view.
            Ok(DeltaOutcome::Delta { bytes, .. }) => tracing::debug!(
                repository = %job.repository, target = %job.target.diff_id,
                base = %job.base.diff_id, delta_bytes = bytes,
                ms = started.elapsed().as_millis() as u64, "background delta ready"),
            Ok(DeltaOutcome::NotWorth { .. }) => tracing::debug!(
                repository = %job.repository, target = %job.target.diff_id,
                base = %job.base.diff_id, "background delta does not pay"),
            Err(err) => tracing::warn!(
                repository = %job.repository, target = %job.target.diff_id,
                base = %job.base.diff_id, error = %crate::api::error::error_chain(&err), "background delta failed"),
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
