//! Jobs: the supervisor's long engine work runs on blocking threads while its loop goes on
//! answering status, commands, probes, health samples and SIGTERM (issue 15: a pull of
//! minutes used to hold all of them). A job is the planned actions of one subject — an
//! image's pull, a service's stop-remove-create-start chain, an image collection — run in
//! order; jobs of different subjects run side by side. The subjects in flight go to `plan`
//! as `Observed::busy`, and each job's end comes back to the loop as a [`JobDone`].

use std::collections::BTreeSet;

use coracle_proto::{DeviceId, Digest, ImageRef, RegistryAccess, ServiceName, ServiceSpec};
use tokio::sync::mpsc;

use super::progress::ProgressSink;
use crate::engine::{ContainerEngine, EngineError, StopRule};
use crate::reconcile::{Action, Busy, Fingerprint, Role};

/// What a job works on; at most one job per subject runs at a time, and a failure backs
/// off only its own subject (see `retry`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Image(Digest),
    Service(ServiceName),
    /// The container a promotion retired: its stop holds up nothing else of the service.
    Retired(ServiceName),
    Gc,
    /// The pending generation's gate moves: quick state changes, never a job.
    Update,
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Image(digest) => write!(f, "image {digest}"),
            Subject::Service(service) => write!(f, "service {service}"),
            Subject::Retired(service) => write!(f, "retired container of {service}"),
            Subject::Gc => f.write_str("gc"),
            Subject::Update => f.write_str("update"),
        }
    }
}

/// The subject of an action.
pub fn subject(action: &Action) -> Subject {
    match action {
        Action::Pull { image } => Subject::Image(image.digest),
        Action::StopRetired { service } | Action::RemoveRetired { service } => {
            Subject::Retired(service.clone())
        }
        Action::Gc { .. } => Subject::Gc,
        Action::StartGate { .. } | Action::Commit { .. } | Action::RollBack { .. } => {
            Subject::Update
        }
        Action::Create { .. }
        | Action::Start { .. }
        | Action::Restart { .. }
        | Action::Stop { .. }
        | Action::Remove { .. }
        | Action::CreateNext { .. }
        | Action::StartNext { .. }
        | Action::StopNext { .. }
        | Action::RemoveNext { .. }
        | Action::Promote { .. } => match action.service() {
            Some(service) => Subject::Service(service.clone()),
            None => Subject::Update,
        },
    }
}

/// A plan's actions grouped by subject, each group in plan order, groups in the order
/// their subject first appears.
pub fn by_subject(actions: Vec<Action>) -> Vec<(Subject, Vec<Action>)> {
    let mut groups: Vec<(Subject, Vec<Action>)> = Vec::new();
    for action in actions {
        let key = subject(&action);
        match groups.iter_mut().find(|(s, _)| *s == key) {
            Some((_, group)) => group.push(action),
            None => groups.push((key, vec![action])),
        }
    }
    groups
}

/// One engine call of a job, with what it needs taken from the supervisor beforehand.
#[derive(Debug)]
pub enum Step {
    Pull {
        image: ImageRef,
        access: Option<RegistryAccess>,
        /// Where the pull's progress goes (published from the pulling thread).
        sink: Box<ProgressSink>,
    },
    Create {
        spec: Box<ServiceSpec>,
        fingerprint: Fingerprint,
        role: Role,
    },
    Start(ServiceName, Role),
    Restart(ServiceName, StopRule),
    Stop(ServiceName, Role, StopRule),
    Remove(ServiceName, Role),
    Promote(ServiceName),
    Gc(Vec<Digest>),
}

impl Step {
    fn run(self, engine: &dyn ContainerEngine, device: &DeviceId) -> Result<(), EngineError> {
        match self {
            Step::Pull {
                image,
                access,
                mut sink,
            } => engine.pull(
                &image,
                access.as_ref().map(|access| (device, access)),
                &mut |tick| sink.tick(tick),
            ),
            Step::Create {
                spec,
                fingerprint,
                role,
            } => engine.create(&spec, fingerprint, role),
            Step::Start(service, role) => engine.start(&service, role),
            Step::Restart(service, rule) => {
                engine.stop(&service, Role::Current, rule)?;
                engine.start(&service, Role::Current)
            }
            Step::Stop(service, role, rule) => engine.stop(&service, role, rule),
            Step::Remove(service, role) => engine.delete(&service, role),
            Step::Promote(service) => engine.promote(&service),
            Step::Gc(images) => engine.remove_images(&images),
        }
    }
}

/// Runs `steps` in order, stopping at the first failure.
pub fn run_steps(
    engine: &dyn ContainerEngine,
    device: &DeviceId,
    steps: Vec<Step>,
) -> Result<(), EngineError> {
    steps
        .into_iter()
        .try_for_each(|step| step.run(engine, device))
}

/// A finished job, back in the supervisor loop.
#[derive(Debug)]
pub struct JobDone {
    pub subject: Subject,
    pub result: Result<(), EngineError>,
    /// Restarts counted when the job began, announced once it worked.
    pub restarts: Vec<(ServiceName, u32)>,
    /// The image a pull job fetched: a failure is published as `PullFailed`.
    pub pulled: Option<Digest>,
    /// Services the job starts: a failed start keeps the init's error for the gate.
    pub starting: Vec<ServiceName>,
    /// The service whose successor took over in this job.
    pub promoted: Option<ServiceName>,
    /// The controller command that asked for the job, answered when it ends.
    pub reply_to: Option<u32>,
}

/// The jobs in flight and the channel their ends come back on.
#[derive(Debug)]
pub struct Jobs {
    in_flight: BTreeSet<Subject>,
    done_tx: mpsc::UnboundedSender<JobDone>,
}

impl Jobs {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<JobDone>) {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let jobs = Self {
            in_flight: BTreeSet::new(),
            done_tx,
        };
        (jobs, done_rx)
    }

    pub fn is_busy(&self, subject: &Subject) -> bool {
        self.in_flight.contains(subject)
    }

    pub fn begin(&mut self, subject: Subject) -> mpsc::UnboundedSender<JobDone> {
        self.in_flight.insert(subject);
        self.done_tx.clone()
    }

    pub fn end(&mut self, subject: &Subject) {
        self.in_flight.remove(subject);
    }

    /// The subjects in flight, as the planner reads them.
    pub fn busy(&self) -> Busy {
        let mut busy = Busy::default();
        for subject in &self.in_flight {
            match subject {
                Subject::Image(digest) => {
                    busy.images.insert(*digest);
                }
                Subject::Service(service) => {
                    busy.services.insert(service.clone());
                }
                Subject::Retired(service) => {
                    busy.retiring.insert(service.clone());
                }
                Subject::Gc => busy.gc = true,
                Subject::Update => {}
            }
        }
        busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> ServiceName {
        name.parse().unwrap()
    }

    #[test]
    fn actions_group_by_subject_in_plan_order() {
        let image = ImageRef {
            registry: String::new(),
            repository: "app".into(),
            digest: Digest::from_bytes([1; 32]),
        };
        let actions = vec![
            Action::Stop {
                service: service("web"),
            },
            Action::Pull {
                image: image.clone(),
            },
            Action::Remove {
                service: service("web"),
            },
            Action::Start {
                service: service("db"),
            },
        ];
        let groups = by_subject(actions);
        let names: Vec<String> = groups.iter().map(|(s, _)| s.to_string()).collect();
        assert_eq!(
            names,
            [
                "service web",
                &format!("image {}", image.digest),
                "service db"
            ]
        );
        assert_eq!(
            groups[0].1,
            [
                Action::Stop {
                    service: service("web")
                },
                Action::Remove {
                    service: service("web")
                }
            ]
        );
    }

    #[test]
    fn busy_lists_the_subjects_in_flight() {
        let (mut jobs, _rx) = Jobs::new();
        let digest = Digest::from_bytes([2; 32]);
        jobs.begin(Subject::Image(digest));
        jobs.begin(Subject::Service(service("web")));
        jobs.begin(Subject::Gc);
        let busy = jobs.busy();
        assert!(busy.images.contains(&digest) && busy.gc && busy.pulling());
        assert!(busy.services.contains(&service("web")));
        jobs.end(&Subject::Gc);
        assert!(!jobs.busy().gc && jobs.is_busy(&Subject::Image(digest)));
    }
}
