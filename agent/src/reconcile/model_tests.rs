//! Model-based property test of the pure core (issue 15): random interleavings of new
//! desired states, planning rounds, jobs ending (or failing half way), container crashes,
//! failing health, agent restarts and passing time, on a simulated device that runs the
//! plan's actions as the supervisor does (one job per subject, side by side). While the
//! chaos goes on, every job the plan starts must be a chain the lifecycle table allows and
//! must not touch a subject already in flight; a collection must never drop an image a
//! desired state names. Once it stops, the device must converge: no pending generation, the
//! committed services running from their current specs, nothing else, the plan empty — and
//! a last empty desired state must remove every container the agent ever created. Services
//! may update `start-first`: their successors crash, turn unhealthy and are cut short by
//! agent restarts like any container, and must never be left behind.

use std::collections::BTreeSet;

use coracle_proto::{
    Dependency, DependencyCondition, DesiredState, Digest, Generation, Health, HealthCheck,
    HealthProbe, ImageRef, RestartPolicy, ServiceName, ServiceSpec, UpdateOrder,
};
use proptest::prelude::*;

use super::lifecycle::{transition, PhaseKind};
use super::{
    fingerprint, plan, Action, Busy, Observed, ObservedContainer, Phase, Role, BACKOFF_MAX_MS,
};
use crate::state::AgentState;

const NAMES: [&str; 3] = ["db", "api", "web"];

/// One service of a random desired state: which name, which image, checked or not, and
/// whether it depends on the service listed before it.
#[derive(Debug, Clone)]
struct ServiceChoice {
    name: usize,
    image: u8,
    health_checked: bool,
    depends: Option<DependencyCondition>,
    gate_ms: Option<u32>,
    start_first: bool,
}

#[derive(Debug, Clone)]
enum Event {
    Deploy(Vec<ServiceChoice>),
    Plan,
    /// The job at this index (modulo the jobs in flight) ends; a failure after `done`
    /// steps leaves those steps' effects.
    Finish {
        job: usize,
        fail_after: Option<usize>,
    },
    Crash {
        name: usize,
        code: i32,
        role: Role,
    },
    Unhealthy {
        name: usize,
        role: Role,
    },
    /// The agent restarts: jobs in flight die after `done` of their steps, the tracker's
    /// memory (gate clock, stopped on purpose) is gone, the persisted state stays.
    AgentRestart {
        done: usize,
    },
    Wait {
        ms: u64,
    },
}

/// A job in flight: its subject and the actions it still has to run.
#[derive(Debug, Clone)]
struct Job {
    subject: String,
    actions: Vec<Action>,
}

#[derive(Debug)]
struct Sim {
    state: AgentState,
    obs: Observed,
    jobs: Vec<Job>,
    now: u64,
    generation: u64,
}

fn image(seed: u8) -> ImageRef {
    ImageRef {
        registry: String::new(),
        repository: "app".into(),
        digest: Digest::from_bytes([seed; 32]),
    }
}

fn name(index: usize) -> ServiceName {
    NAMES[index % NAMES.len()].parse().expect("valid name")
}

fn subject(action: &Action) -> String {
    match action {
        Action::Pull { image } => format!("image {}", image.digest),
        Action::Gc { .. } => "gc".into(),
        Action::StartGate { .. } | Action::Commit { .. } | Action::RollBack { .. } => {
            "update".into()
        }
        other => {
            let service = other.service().expect("a container verb");
            match other.role() {
                Role::Retired => format!("retired {service}"),
                _ => format!("service {service}"),
            }
        }
    }
}

impl Sim {
    fn new() -> Self {
        Self {
            state: AgentState::default(),
            obs: Observed::default(),
            jobs: Vec::new(),
            now: 0,
            generation: 0,
        }
    }

    fn desired(&mut self, choices: &[ServiceChoice]) -> DesiredState {
        self.generation += 1;
        let mut services: Vec<ServiceSpec> = Vec::new();
        for choice in choices {
            let service = name(choice.name);
            if services.iter().any(|s| s.name == service) {
                continue;
            }
            let mut spec = ServiceSpec::new(service, image(choice.image));
            spec.restart = RestartPolicy::Always;
            if choice.health_checked {
                spec.health = Some(HealthCheck {
                    probe: HealthProbe::Tcp { port: 80 },
                    interval_ms: 1_000,
                    timeout_ms: 500,
                    retries: 1,
                    start_period_ms: 0,
                });
            }
            spec.update.health_gate_ms = choice.gate_ms;
            if choice.start_first {
                spec.update.order = UpdateOrder::StartFirst;
            }
            if let (Some(condition), Some(before)) = (choice.depends, services.last()) {
                spec.depends_on = vec![Dependency {
                    service: before.name.clone(),
                    condition,
                }];
            }
            services.push(spec);
        }
        DesiredState {
            device: "pi".parse().expect("valid device"),
            generation: Generation(self.generation),
            services,
            registries: Vec::new(),
        }
    }

    /// What the supervisor's `on_desired` does with a new verified state.
    fn deploy(&mut self, desired: DesiredState) {
        assert!(desired.validate().is_ok(), "{desired:?}");
        self.state.begin(desired);
        self.obs.gate_started_ms = None;
    }

    fn busy(&self) -> Busy {
        let mut busy = Busy::default();
        for job in &self.jobs {
            match job.actions.first() {
                Some(Action::Pull { image }) => {
                    busy.images.insert(image.digest);
                }
                Some(Action::Gc { .. }) => busy.gc = true,
                Some(action) => {
                    if let Some(service) = action.service() {
                        if action.role() == Role::Retired {
                            busy.retiring.insert(service.clone());
                        } else {
                            busy.services.insert(service.clone());
                        }
                    }
                }
                None => {}
            }
        }
        busy
    }

    /// One planning round, run as the supervisor runs it.
    fn plan_round(&mut self) -> usize {
        self.obs.busy = self.busy();
        let actions = plan(&self.state, &self.obs, self.now);
        let count = actions.len();
        let mut groups: Vec<(String, Vec<Action>)> = Vec::new();
        for action in actions {
            let key = subject(&action);
            match groups.iter_mut().find(|(s, _)| *s == key) {
                Some((_, group)) => group.push(action),
                None => groups.push((key, vec![action])),
            }
        }
        for (key, group) in groups {
            assert!(
                self.jobs.iter().all(|job| job.subject != key),
                "planned {group:?} for {key}, which has a job in flight"
            );
            if key == "update" {
                group.iter().for_each(|action| self.gate_move(action));
                continue;
            }
            self.check_chain(&group);
            let collecting = |job: &Job| matches!(job.actions.first(), Some(Action::Gc { .. }));
            let creates = |actions: &[Action]| {
                actions
                    .iter()
                    .any(|a| matches!(a, Action::Create { .. } | Action::Pull { .. }))
            };
            if self.jobs.iter().any(collecting) {
                assert!(!creates(&group), "{group:?} planned during a collection");
            }
            if key == "gc" {
                assert!(
                    self.jobs.is_empty(),
                    "a collection planned beside {:?}",
                    self.jobs
                );
                let referenced: BTreeSet<Digest> = [&self.state.committed, &self.state.pending]
                    .into_iter()
                    .flatten()
                    .flat_map(|d| d.services.iter().map(|s| s.image.digest))
                    .collect();
                let Some(Action::Gc { images }) = group.first() else {
                    panic!("{group:?}")
                };
                assert!(images.iter().all(|d| !referenced.contains(d)), "{group:?}");
            }
            self.jobs.push(Job {
                subject: key,
                actions: group,
            });
        }
        count
    }

    /// The lifecycle table allows every move of the chain, from the observed phase.
    /// A promotion needs a successor that is up, and comes last in its chain.
    fn check_chain(&self, chain: &[Action]) {
        let mut phases = std::collections::BTreeMap::new();
        for (i, action) in chain.iter().enumerate() {
            if let Action::Promote { service } = action {
                assert_eq!(i + 1, chain.len(), "a promotion inside {chain:?}");
                let next = self.obs.successors.get(service);
                assert!(
                    next.is_none_or(|n| matches!(
                        n.phase,
                        Phase::Running { .. } | Phase::Exited { code: 0, .. }
                    )),
                    "promoted a successor that is not up: {next:?}"
                );
                continue;
            }
            let (Some(service), Some(verb)) = (action.service(), action.verb()) else {
                continue;
            };
            let role = action.role();
            let observed = self.obs.of(role);
            let from = *phases
                .entry(role)
                .or_insert_with(|| PhaseKind::from(observed.get(service).map(|c| &c.phase)));
            match transition(from, verb) {
                Ok(to) => {
                    phases.insert(role, to);
                }
                Err(err) => panic!("plan started a refused chain {chain:?}: {err}"),
            }
        }
    }

    fn gate_move(&mut self, action: &Action) {
        match action {
            Action::StartGate { .. } => self.obs.gate_started_ms = Some(self.now),
            Action::Commit { .. } => {
                self.state.commit();
                self.obs.gate_started_ms = None;
            }
            Action::RollBack { reason, .. } => {
                self.state.roll_back(reason.clone());
                self.obs.gate_started_ms = None;
            }
            other => panic!("not a gate move: {other:?}"),
        }
    }

    fn spec_of(&self, service: &ServiceName) -> Option<&ServiceSpec> {
        [&self.state.pending, &self.state.committed]
            .into_iter()
            .flatten()
            .flat_map(|d| &d.services)
            .find(|s| &s.name == service)
    }

    fn slot(
        &mut self,
        role: Role,
    ) -> &mut std::collections::BTreeMap<ServiceName, ObservedContainer> {
        self.obs.of_mut(role)
    }

    /// Runs one engine step as the Linux engine would (idempotent where the target holds);
    /// false when the engine refuses it.
    fn engine_step(&mut self, action: &Action) -> bool {
        let now = self.now;
        let role = action.role();
        match action {
            Action::Pull { image } => {
                self.obs.images.insert(image.digest);
            }
            Action::Gc { images } => {
                // A desired state that arrived meanwhile may name one again: it is pulled
                // again (checked at convergence); no create ran meanwhile (checked in
                // `plan_round`).
                for digest in images {
                    self.obs.images.remove(digest);
                }
            }
            Action::Create { spec } | Action::CreateNext { spec } => {
                if self.slot(role).contains_key(&spec.name) {
                    return false;
                }
                let container = ObservedContainer {
                    fingerprint: fingerprint(spec),
                    phase: Phase::Created,
                    health: Health::None,
                    restarts: 0,
                    last_failed_check: None,
                    exit_detail: None,
                };
                self.slot(role).insert(spec.name.clone(), container);
            }
            Action::Start { service }
            | Action::Restart { service }
            | Action::StartNext { service } => {
                let Some(c) = self.slot(role).get_mut(service) else {
                    return false;
                };
                c.phase = Phase::Running { since_ms: now };
                c.health = Health::Healthy;
            }
            Action::Stop { service }
            | Action::StopNext { service }
            | Action::StopRetired { service } => {
                let Some(c) = self.slot(role).get_mut(service) else {
                    return true;
                };
                if matches!(c.phase, Phase::Running { .. }) {
                    c.phase = Phase::Stopped;
                }
            }
            Action::Remove { service }
            | Action::RemoveNext { service }
            | Action::RemoveRetired { service } => {
                if self
                    .slot(role)
                    .get(service)
                    .is_some_and(|c| matches!(c.phase, Phase::Running { .. }))
                {
                    return false; // the engine refuses to delete a running container
                }
                self.slot(role).remove(service);
            }
            Action::Promote { service } => {
                // As `LinuxEngine::promote`: the successor takes the old one's place and
                // the old one is retired; with no successor left, it was done before.
                let Some(next) = self.obs.successors.remove(service) else {
                    return self.obs.containers.contains_key(service);
                };
                if let Some(old) = self.obs.containers.insert(service.clone(), next) {
                    self.obs.retired.insert(service.clone(), old);
                }
            }
            Action::StartGate { .. } | Action::Commit { .. } | Action::RollBack { .. } => {
                panic!("a gate move in a job")
            }
        }
        true
    }

    /// Runs a job's steps, at most `limit` of them; false when one failed.
    fn run_job(&mut self, job: &Job, limit: usize) -> bool {
        job.actions
            .iter()
            .take(limit)
            .all(|action| self.engine_step(action))
    }

    fn finish(&mut self, index: usize, fail_after: Option<usize>) {
        if self.jobs.is_empty() {
            return;
        }
        let job = self.jobs.remove(index % self.jobs.len());
        self.run_job(&job, fail_after.unwrap_or(usize::MAX));
    }

    fn crash(&mut self, service: &ServiceName, code: i32, role: Role) {
        let now = self.now;
        if let Some(c) = self.slot(role).get_mut(service) {
            if matches!(c.phase, Phase::Running { .. }) {
                c.phase = Phase::Exited {
                    code,
                    at_ms: now,
                    oom: false,
                };
            }
        }
    }

    fn restart_agent(&mut self, done: usize) {
        for job in std::mem::take(&mut self.jobs) {
            self.run_job(&job, done);
        }
        self.obs.gate_started_ms = None;
        // Without the tracker's memory a container the agent stopped reads as exited.
        let all = self.obs.containers.values_mut();
        for c in all.chain(self.obs.successors.values_mut()) {
            if c.phase == Phase::Stopped {
                c.phase = Phase::Exited {
                    code: 137,
                    at_ms: self.now,
                    oom: false,
                };
            }
        }
    }

    fn event(&mut self, event: &Event) {
        match event {
            Event::Deploy(choices) => {
                let desired = self.desired(choices);
                self.deploy(desired);
            }
            Event::Plan => {
                self.plan_round();
            }
            Event::Finish { job, fail_after } => self.finish(*job, *fail_after),
            Event::Crash {
                name: n,
                code,
                role,
            } => self.crash(&name(*n), *code, *role),
            Event::Unhealthy { name: n, role } => {
                let checked = self.spec_of(&name(*n)).is_some_and(|s| s.health.is_some());
                if let Some(c) = self.slot(*role).get_mut(&name(*n)) {
                    if checked && matches!(c.phase, Phase::Running { .. }) {
                        c.health = Health::Unhealthy;
                    }
                }
            }
            Event::AgentRestart { done } => self.restart_agent(*done),
            Event::Wait { ms } => self.now += ms,
        }
    }

    /// Plans and runs every job to its end, round after round, until nothing is left to
    /// do; panics if that never happens.
    /// A quiet round may only be waiting on time (a restart's backoff), so quiet counts
    /// once it holds across a jump past the longest backoff.
    fn settle(&mut self) {
        let mut waited_out = false;
        for _ in 0..400 {
            let planned = self.plan_round();
            let ran = !self.jobs.is_empty();
            while !self.jobs.is_empty() {
                self.finish(0, None);
            }
            let quiet = planned == 0 && !ran && self.state.pending.is_none();
            if quiet && waited_out {
                return;
            }
            waited_out = quiet;
            self.now += if quiet { BACKOFF_MAX_MS + 1 } else { 2_000 };
        }
        panic!("did not converge: {self:#?}");
    }

    /// The device runs exactly the committed services, from their current specs.
    fn assert_converged(&self) {
        let wanted: Vec<&ServiceSpec> = self
            .state
            .committed
            .iter()
            .flat_map(|d| &d.services)
            .collect();
        assert_eq!(
            self.obs.containers.len(),
            wanted.len(),
            "containers {:?} for {wanted:?}",
            self.obs.containers
        );
        assert!(self.obs.successors.is_empty(), "{:?}", self.obs.successors);
        assert!(self.obs.retired.is_empty(), "{:?}", self.obs.retired);
        for spec in wanted {
            let c = &self.obs.containers[&spec.name];
            assert_eq!(c.fingerprint, fingerprint(spec), "{} is stale", spec.name);
            assert!(matches!(c.phase, Phase::Running { .. }), "{c:?}");
            assert!(self.obs.images.contains(&spec.image.digest));
        }
        assert_eq!(plan(&self.state, &self.obs, self.now), []);
    }
}

fn service_choice() -> impl Strategy<Value = ServiceChoice> {
    let depends = prop_oneof![
        Just(None),
        Just(Some(DependencyCondition::Started)),
        Just(Some(DependencyCondition::Healthy)),
    ];
    (
        0..NAMES.len(),
        1u8..=4,
        any::<bool>(),
        depends,
        prop::option::of(0u32..3_000),
        any::<bool>(),
    )
        .prop_map(
            |(name, image, health_checked, depends, gate_ms, start_first)| ServiceChoice {
                name,
                image,
                health_checked,
                depends,
                gate_ms,
                start_first,
            },
        )
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Current), Just(Role::Next)]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => prop::collection::vec(service_choice(), 0..=3).prop_map(Event::Deploy),
        6 => Just(Event::Plan),
        6 => (0usize..4, prop::option::of(0usize..4))
            .prop_map(|(job, fail_after)| Event::Finish { job, fail_after }),
        1 => (0..NAMES.len(), prop_oneof![Just(0), Just(1), Just(137)], role())
            .prop_map(|(name, code, role)| Event::Crash { name, code, role }),
        1 => (0..NAMES.len(), role()).prop_map(|(name, role)| Event::Unhealthy { name, role }),
        1 => (0usize..4).prop_map(|done| Event::AgentRestart { done }),
        2 => (0u64..5_000).prop_map(|ms| Event::Wait { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_converges_and_every_container_can_be_removed(
        events in prop::collection::vec(event(), 1..80)
    ) {
        let mut sim = Sim::new();
        for event in &events {
            sim.event(event);
        }
        sim.settle();
        sim.assert_converged();
        // Every container the agent created can be deleted: an empty state removes all.
        let empty = sim.desired(&[]);
        sim.deploy(empty);
        sim.settle();
        prop_assert!(sim.obs.containers.is_empty(), "{:?}", sim.obs.containers);
        prop_assert!(sim.obs.successors.is_empty(), "{:?}", sim.obs.successors);
        prop_assert!(sim.obs.retired.is_empty(), "{:?}", sim.obs.retired);
        prop_assert!(sim.obs.images.is_empty(), "{:?}", sim.obs.images);
    }
}
