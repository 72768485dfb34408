//! An in-memory `ContainerEngine` for supervisor tests, until the Linux runtime adapter is
//! wired in (the runtime's own tests cover real containers). Images whose digest is in
//! `crashing` exit with code 1 as soon as they start.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use coracle_agent::reconcile::{Fingerprint, Role};
use coracle_agent::supervisor::{
    ContainerEngine, ContainerStats, EngineContainer, EngineError, EngineStatus, ExecOutcome,
    LogTail, PullTick, StopRule,
};
use coracle_proto::{Digest, ImageRef, ServiceName, ServiceSpec};

#[derive(Debug, Default)]
pub struct FakeEngine {
    pub inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
pub struct Inner {
    pub images: BTreeSet<Digest>,
    pub containers: BTreeMap<ServiceName, EngineContainer>,
    /// `start-first` successors (`Role::Next`).
    pub successors: BTreeMap<ServiceName, EngineContainer>,
    /// Containers a promotion retired, until stopped and deleted.
    pub retired: BTreeMap<ServiceName, EngineContainer>,
    pub promotions: u32,
    pub crashing: BTreeSet<Digest>,
    pub failing_pulls: BTreeSet<Digest>,
    /// Conditions every created container reports (like a kernel without a controller).
    pub conditions: Vec<coracle_proto::Condition>,
    pub pull_attempts: u32,
    /// Per pull: the image's registry and the host of the `RegistryAccess` it was given.
    pub direct_pulls: Vec<(String, Option<String>)>,
    /// What `sealing_key` reports.
    pub sealing_key: String,
    /// What `preflight` answers (the device lacks something the state needs).
    pub preflight_error: Option<String>,
    pub starts: u32,
    /// Stops of running containers.
    pub stops: u32,
    pub stats_reads: u32,
}

fn missing(step: &'static str, service: &ServiceName) -> EngineError {
    EngineError {
        step,
        object: service.to_string(),
        reason: "no such container".into(),
    }
}

impl Inner {
    fn slot(&mut self, role: Role) -> &mut BTreeMap<ServiceName, EngineContainer> {
        match role {
            Role::Current => &mut self.containers,
            Role::Next => &mut self.successors,
            Role::Retired => &mut self.retired,
        }
    }
}

impl ContainerEngine for FakeEngine {
    fn pull(
        &self,
        image: &ImageRef,
        direct: Option<(&coracle_proto::DeviceId, &coracle_proto::RegistryAccess)>,
        progress: &mut dyn FnMut(PullTick),
    ) -> Result<(), EngineError> {
        // Two layers, like a real pull reports them: a full layer in three chunks, then a
        // delta in one, each followed by its end.
        let tick =
            |index: usize, done_bytes: u64, total_bytes: u64, delta: bool, stored: bool| PullTick {
                layer: coracle_images::Digest::of(&[index as u8]),
                index,
                count: 2,
                done_bytes,
                total_bytes,
                delta,
                stored,
            };
        if !self
            .inner
            .lock()
            .unwrap()
            .failing_pulls
            .contains(&image.digest)
        {
            for done in [1_000, 2_000, 3_000] {
                progress(tick(0, done, 3_000, false, false));
            }
            progress(tick(0, 3_000, 3_000, false, true));
            progress(tick(1, 500, 500, true, false));
            progress(tick(1, 500, 500, true, true));
        }
        let mut inner = self.inner.lock().unwrap();
        inner.pull_attempts += 1;
        inner
            .direct_pulls
            .push((image.registry.clone(), direct.map(|(_, a)| a.host.clone())));
        if inner.failing_pulls.contains(&image.digest) {
            return Err(EngineError {
                step: "pull",
                object: image.digest.to_string(),
                reason: "registry unreachable".into(),
            });
        }
        inner.images.insert(image.digest);
        Ok(())
    }
    fn sealing_key(&self) -> String {
        self.inner.lock().unwrap().sealing_key.clone()
    }
    fn preflight(&self, desired: &coracle_proto::DesiredState) -> Result<(), EngineError> {
        match &self.inner.lock().unwrap().preflight_error {
            None => Ok(()),
            Some(reason) => Err(EngineError {
                step: "preflight",
                object: desired.generation.to_string(),
                reason: reason.clone(),
            }),
        }
    }
    fn images(&self) -> Result<BTreeSet<Digest>, EngineError> {
        Ok(self.inner.lock().unwrap().images.clone())
    }
    fn remove_images(&self, images: &[Digest]) -> Result<(), EngineError> {
        let mut inner = self.inner.lock().unwrap();
        images.iter().for_each(|d| {
            inner.images.remove(d);
        });
        Ok(())
    }
    fn layers(&self) -> Result<Vec<Digest>, EngineError> {
        // One layer per image, named after it: enough to see layers flow into reports.
        Ok(self.inner.lock().unwrap().images.iter().copied().collect())
    }
    fn create(
        &self,
        spec: &ServiceSpec,
        fingerprint: Fingerprint,
        role: Role,
    ) -> Result<(), EngineError> {
        let mut inner = self.inner.lock().unwrap();
        assert!(
            inner.images.contains(&spec.image.digest),
            "create before pull"
        );
        let conditions = inner.conditions.clone();
        inner.slot(role).insert(
            spec.name.clone(),
            EngineContainer {
                service: spec.name.clone(),
                role,
                fingerprint,
                image: spec.image.digest,
                status: EngineStatus::Created,
                conditions,
            },
        );
        Ok(())
    }
    fn start(&self, service: &ServiceName, role: Role) -> Result<(), EngineError> {
        let mut inner = self.inner.lock().unwrap();
        inner.starts += 1;
        let crashing = inner.crashing.clone();
        let c = inner
            .slot(role)
            .get_mut(service)
            .ok_or_else(|| missing("start", service))?;
        c.status = if crashing.contains(&c.image) {
            EngineStatus::Stopped {
                exit_code: Some(1),
                oom_killed: false,
            }
        } else {
            EngineStatus::Running
        };
        Ok(())
    }
    fn stop(&self, service: &ServiceName, role: Role, _rule: StopRule) -> Result<(), EngineError> {
        let mut inner = self.inner.lock().unwrap();
        let Some(c) = inner.slot(role).get_mut(service) else {
            return Ok(());
        };
        if c.status == EngineStatus::Running {
            c.status = EngineStatus::Stopped {
                exit_code: Some(143),
                oom_killed: false,
            };
            inner.stops += 1;
        }
        Ok(())
    }
    fn delete(&self, service: &ServiceName, role: Role) -> Result<(), EngineError> {
        self.inner.lock().unwrap().slot(role).remove(service);
        Ok(())
    }
    fn promote(&self, service: &ServiceName) -> Result<(), EngineError> {
        let mut inner = self.inner.lock().unwrap();
        let Some(mut next) = inner.successors.remove(service) else {
            return Ok(());
        };
        if let Some(mut old) = inner.containers.remove(service) {
            old.role = Role::Retired;
            inner.retired.insert(service.clone(), old);
        }
        next.role = Role::Current;
        inner.containers.insert(service.clone(), next);
        inner.promotions += 1;
        Ok(())
    }
    fn list(&self) -> Result<Vec<EngineContainer>, EngineError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .containers
            .values()
            .chain(inner.successors.values())
            .chain(inner.retired.values())
            .cloned()
            .collect())
    }
    fn stats(&self) -> Result<Vec<ContainerStats>, EngineError> {
        let mut inner = self.inner.lock().unwrap();
        inner.stats_reads += 1;
        let tick = u64::from(inner.stats_reads);
        Ok(inner
            .containers
            .values()
            .filter(|c| c.status == EngineStatus::Running)
            .map(|c| ContainerStats {
                service: c.service.clone(),
                cpu_usage_usec: tick * 10_000,
                memory_bytes: 12 << 20,
                net_rx_bytes: tick * 4096,
                net_tx_bytes: tick * 1024,
            })
            .collect())
    }
    fn exec(
        &self,
        service: &ServiceName,
        role: Role,
        argv: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutcome, EngineError> {
        let mut inner = self.inner.lock().unwrap();
        let c = inner
            .slot(role)
            .get(service)
            .ok_or_else(|| missing("exec in", service))?;
        // `true` passes, anything else fails, as long as the container runs.
        let passes =
            c.status == EngineStatus::Running && argv.first().map(String::as_str) == Some("true");
        Ok(ExecOutcome {
            exit_code: if passes { 0 } else { 1 },
            output: String::new(),
            timed_out: false,
        })
    }
    fn logs_tail(
        &self,
        service: &ServiceName,
        lines: u32,
        _max: u32,
    ) -> Result<LogTail, EngineError> {
        let inner = self.inner.lock().unwrap();
        inner
            .containers
            .get(service)
            .ok_or_else(|| missing("read logs of", service))?;
        // The log grows by one line per container start anywhere on the fake device.
        let total = 2 + inner.starts;
        let first = total.saturating_sub(lines);
        Ok(LogTail {
            lines: (first..total)
                .map(|i| format!("{service} line {i}"))
                .collect(),
            truncated: first > 0,
        })
    }
}
