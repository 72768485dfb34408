//! Table tests of `plan`, plus a convergence test that applies plans to a simulated device.

use super::*;
use crate::reconcile::lifecycle::{transition, PhaseKind, Verb};
use crate::reconcile::Busy;
use coracle_proto::{
    Dependency, HealthCheck, HealthProbe, ImageRef, RestartPolicy, UpdateStrategy,
};

fn name(s: &str) -> ServiceName {
    s.parse().unwrap()
}

fn image(seed: u8) -> ImageRef {
    ImageRef {
        registry: "controller.local".into(),
        repository: "app".into(),
        digest: Digest::from_bytes([seed; 32]),
    }
}

fn svc(n: &str, seed: u8) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name(n), image(seed));
    spec.restart = RestartPolicy::Always;
    spec
}

fn healthchecked(mut spec: ServiceSpec, gate_ms: Option<u32>) -> ServiceSpec {
    spec.health = Some(HealthCheck {
        probe: HealthProbe::Tcp { port: 80 },
        interval_ms: 1000,
        timeout_ms: 500,
        retries: 3,
        start_period_ms: 0,
    });
    spec.update = UpdateStrategy {
        health_gate_ms: gate_ms,
        ..UpdateStrategy::default()
    };
    spec
}

fn desired(generation: u64, services: Vec<ServiceSpec>) -> DesiredState {
    DesiredState {
        registries: Vec::new(),
        device: "pi".parse().unwrap(),
        generation: Generation(generation),
        services,
    }
}

fn committed(services: Vec<ServiceSpec>) -> AgentState {
    AgentState {
        committed: Some(desired(1, services)),
        ..AgentState::default()
    }
}

fn container(spec: &ServiceSpec, phase: Phase, health: Health) -> ObservedContainer {
    ObservedContainer {
        fingerprint: fingerprint(spec),
        phase,
        health,
        restarts: 0,
        last_failed_check: None,
        exit_detail: None,
    }
}

fn running(spec: &ServiceSpec) -> ObservedContainer {
    container(spec, Phase::Running { since_ms: 0 }, Health::None)
}

fn observed(
    images: &[&ServiceSpec],
    containers: Vec<(&ServiceSpec, ObservedContainer)>,
) -> Observed {
    Observed {
        containers: containers
            .into_iter()
            .map(|(s, c)| (s.name.clone(), c))
            .collect(),
        images: images.iter().map(|s| s.image.digest).collect(),
        ..Observed::default()
    }
}

fn start(n: &str) -> Action {
    Action::Start { service: name(n) }
}
fn stop(n: &str) -> Action {
    Action::Stop { service: name(n) }
}
fn remove(n: &str) -> Action {
    Action::Remove { service: name(n) }
}
fn create(spec: &ServiceSpec) -> Action {
    Action::Create {
        spec: Box::new(spec.clone()),
    }
}
fn pull(spec: &ServiceSpec) -> Action {
    Action::Pull {
        image: spec.image.clone(),
    }
}

#[test]
fn plan_pulls_missing_images_first() {
    let db = svc("db", 1);
    assert_eq!(
        plan(&committed(vec![db.clone()]), &Observed::default(), 0),
        [pull(&db)]
    );
}

#[test]
fn plan_creates_and_starts_a_missing_container() {
    let db = svc("db", 1);
    let got = plan(&committed(vec![db.clone()]), &observed(&[&db], vec![]), 0);
    assert_eq!(got, [create(&db), start("db")]);
}

#[test]
fn plan_waits_for_healthy_dependency_before_starting() {
    let db = healthchecked(svc("db", 1), None);
    let mut app = svc("app", 2);
    app.depends_on = vec![Dependency {
        service: name("db"),
        condition: DependencyCondition::Healthy,
    }];
    let state = committed(vec![app.clone(), db.clone()]);
    let starting = container(&db, Phase::Running { since_ms: 0 }, Health::Starting);
    let got = plan(&state, &observed(&[&db, &app], vec![(&db, starting)]), 0);
    assert_eq!(got, [create(&app)], "app is created but waits for db");
    let healthy = container(&db, Phase::Running { since_ms: 0 }, Health::Healthy);
    let created = container(&app, Phase::Created, Health::None);
    let got = plan(
        &state,
        &observed(&[&db, &app], vec![(&db, healthy), (&app, created)]),
        0,
    );
    assert_eq!(got, [start("app")]);
}

#[test]
fn plan_removes_containers_no_longer_wanted() {
    let db = svc("db", 1);
    let old = svc("old", 9);
    let got = plan(
        &committed(vec![db.clone()]),
        &observed(&[&db], vec![(&db, running(&db)), (&old, running(&old))]),
        0,
    );
    assert_eq!(got, [stop("old"), remove("old")]);
}

#[test]
fn plan_replaces_a_container_whose_spec_changed() {
    let v1 = svc("db", 1);
    let mut v2 = v1.clone();
    v2.command = vec!["--new-flag".into()];
    let got = plan(
        &committed(vec![v2.clone()]),
        &observed(&[&v2], vec![(&v1, running(&v1))]),
        0,
    );
    assert_eq!(got, [stop("db"), remove("db"), create(&v2), start("db")]);
}

#[test]
fn plan_restarts_exited_containers_per_policy_after_backoff() {
    let exited = |spec: &ServiceSpec, code, restarts| ObservedContainer {
        restarts,
        ..container(
            spec,
            Phase::Exited {
                code,
                at_ms: 1_000,
                oom: false,
            },
            Health::None,
        )
    };
    let with = |policy| {
        let mut s = svc("db", 1);
        s.restart = policy;
        s
    };
    // (policy, exit code, restarts, now, restarted?)
    let table = [
        (RestartPolicy::Always, 0, 0, 1_999, false),
        (RestartPolicy::Always, 0, 0, 2_000, true),
        (RestartPolicy::Always, 1, 2, 4_999, false),
        (RestartPolicy::Always, 1, 2, 5_000, true),
        (RestartPolicy::No, 1, 0, 99_000, false),
        (
            RestartPolicy::OnFailure { max_retries: 2 },
            1,
            1,
            99_000,
            true,
        ),
        (
            RestartPolicy::OnFailure { max_retries: 2 },
            1,
            2,
            99_000,
            false,
        ),
        (
            RestartPolicy::OnFailure { max_retries: 2 },
            0,
            0,
            99_000,
            false,
        ),
        (RestartPolicy::UnlessStopped, 0, 0, 99_000, true),
    ];
    for (policy, code, restarts, now, want) in table {
        let spec = with(policy);
        let obs = observed(&[&spec], vec![(&spec, exited(&spec, code, restarts))]);
        let got = plan(&committed(vec![spec.clone()]), &obs, now);
        let expect = if want { vec![start("db")] } else { vec![] };
        assert_eq!(
            got, expect,
            "{policy:?} code={code} restarts={restarts} now={now}"
        );
    }
}

#[test]
fn plan_stopped_container_stays_stopped_unless_always() {
    for (policy, want) in [
        (RestartPolicy::UnlessStopped, vec![]),
        (RestartPolicy::Always, vec![start("db")]),
    ] {
        let mut spec = svc("db", 1);
        spec.restart = policy;
        let obs = observed(
            &[&spec],
            vec![(&spec, container(&spec, Phase::Stopped, Health::None))],
        );
        assert_eq!(
            plan(&committed(vec![spec.clone()]), &obs, 0),
            want,
            "{policy:?}"
        );
    }
}

#[test]
fn plan_restarts_an_unhealthy_container() {
    let spec = healthchecked(svc("db", 1), None);
    let sick = container(&spec, Phase::Running { since_ms: 0 }, Health::Unhealthy);
    let got = plan(
        &committed(vec![spec.clone()]),
        &observed(&[&spec], vec![(&spec, sick)]),
        1_000,
    );
    let restart = [Action::Restart {
        service: name("db"),
    }];
    assert_eq!(got, restart);
    // Paced by the restart backoff from the container's start: 4 s after 2 restarts.
    let mut again = container(
        &spec,
        Phase::Running { since_ms: 10_000 },
        Health::Unhealthy,
    );
    again.restarts = 2;
    let obs = observed(&[&spec], vec![(&spec, again)]);
    assert_eq!(plan(&committed(vec![spec.clone()]), &obs, 13_999), []);
    assert_eq!(plan(&committed(vec![spec.clone()]), &obs, 14_000), restart);
}

fn update(old: Vec<ServiceSpec>, new: Vec<ServiceSpec>) -> AgentState {
    AgentState {
        committed: Some(desired(1, old)),
        pending: Some(desired(2, new)),
        ..AgentState::default()
    }
}

#[test]
fn download_then_switch_keeps_the_old_container_during_the_pull() {
    let v1 = svc("db", 1);
    let v2 = svc("db", 2);
    let got = plan(
        &update(vec![v1.clone()], vec![v2.clone()]),
        &observed(&[&v1], vec![(&v1, running(&v1))]),
        0,
    );
    assert_eq!(got, [pull(&v2)]);
}

#[test]
fn stop_then_download_frees_the_old_container_first() {
    let v1 = svc("db", 1);
    let mut v2 = svc("db", 2);
    v2.update.order = UpdateOrder::StopThenDownload;
    let got = plan(
        &update(vec![v1.clone()], vec![v2.clone()]),
        &observed(&[&v1], vec![(&v1, running(&v1))]),
        0,
    );
    assert_eq!(
        got,
        [stop("db"), remove("db")],
        "the pull waits for the removal"
    );
    let got = plan(
        &update(vec![v1.clone()], vec![v2.clone()]),
        &observed(&[&v1], vec![]),
        0,
    );
    assert_eq!(got, [pull(&v2)]);
}

#[test]
fn health_gate_starts_waits_commits() {
    let v1 = svc("db", 1);
    let v2 = healthchecked(svc("db", 2), Some(10_000));
    let state = update(vec![v1.clone()], vec![v2.clone()]);
    let healthy = container(&v2, Phase::Running { since_ms: 0 }, Health::Healthy);
    let mut obs = observed(&[&v1, &v2], vec![(&v2, healthy)]);
    assert_eq!(
        plan(&state, &obs, 0),
        [Action::StartGate {
            generation: Generation(2)
        }]
    );
    obs.gate_started_ms = Some(1_000);
    assert_eq!(plan(&state, &obs, 10_999), []);
    assert_eq!(
        plan(&state, &obs, 11_000),
        [Action::Commit {
            generation: Generation(2)
        }]
    );
}

#[test]
fn health_gate_rollback_says_what_the_last_failed_check_said() {
    let v1 = svc("db", 1);
    let v2 = healthchecked(svc("db", 2), Some(10_000));
    let state = update(vec![v1.clone()], vec![v2.clone()]);
    let said = format!("exit 1: pg_isready: no response{}", "!".repeat(300));
    // Unhealthy (retries used up) before commit, or still starting when the gate closes.
    for (health, at, prefix) in [
        (Health::Unhealthy, 1_000, "unhealthy before commit"),
        (
            Health::Starting,
            10_000,
            "not healthy within the 10000 ms health gate",
        ),
    ] {
        let mut c = container(&v2, Phase::Running { since_ms: 0 }, health);
        c.last_failed_check = Some(said.clone());
        let mut obs = observed(&[&v1, &v2], vec![(&v2, c)]);
        obs.gate_started_ms = Some(0);
        let got = plan(&state, &obs, at);
        let [Action::RollBack { reason, .. }] = &got[..] else {
            panic!("{got:?}");
        };
        let want = format!("{prefix}; last check: exit 1: pg_isready: no response!");
        assert!(reason.starts_with(&want), "{reason}");
        // The output is clipped: the reason travels in reports and events.
        assert!(
            reason.ends_with('…') && reason.chars().count() < 300,
            "{reason}"
        );
    }
}

#[test]
fn health_gate_rolls_back_when_not_healthy_in_time() {
    let v1 = svc("db", 1);
    let v2 = healthchecked(svc("db", 2), Some(10_000));
    let state = update(vec![v1.clone()], vec![v2.clone()]);
    let starting = container(&v2, Phase::Running { since_ms: 0 }, Health::Starting);
    let mut obs = observed(&[&v1, &v2], vec![(&v2, starting)]);
    obs.gate_started_ms = Some(0);
    assert_eq!(plan(&state, &obs, 9_999), []);
    let got = plan(&state, &obs, 10_000);
    assert!(
        matches!(&got[..], [Action::RollBack { generation: Generation(2), reason, .. }] if reason.contains("health gate")),
        "{got:?}"
    );
}

#[test]
fn pending_container_that_crashes_or_turns_unhealthy_rolls_back_at_once() {
    let v1 = svc("db", 1);
    let v2 = healthchecked(svc("db", 2), Some(60_000));
    let state = update(vec![v1.clone()], vec![v2.clone()]);
    let cases = [
        (
            Phase::Exited {
                code: 3,
                at_ms: 0,
                oom: false,
            },
            Health::Starting,
            "code 3",
        ),
        (
            Phase::Exited {
                code: 137,
                at_ms: 0,
                oom: true,
            },
            Health::Starting,
            "memory limit",
        ),
        (
            Phase::Running { since_ms: 0 },
            Health::Unhealthy,
            "unhealthy",
        ),
    ];
    for (phase, health, why) in cases {
        let obs = observed(&[&v1, &v2], vec![(&v2, container(&v2, phase, health))]);
        let got = plan(&state, &obs, 0);
        assert!(
            matches!(&got[..], [Action::RollBack { generation: Generation(2), service, reason }] if service.as_str() == "db" && reason.contains(why)),
            "{phase:?}: {got:?}"
        );
    }
}

#[test]
fn after_rollback_plan_returns_to_the_committed_version_and_keeps_its_image() {
    let v1 = svc("db", 1);
    let v2 = svc("db", 2);
    let mut state = update(vec![v1.clone()], vec![v2.clone()]);
    state.roll_back("test".into());
    let obs = observed(
        &[&v1, &v2],
        vec![(
            &v2,
            container(
                &v2,
                Phase::Exited {
                    code: 1,
                    at_ms: 0,
                    oom: false,
                },
                Health::None,
            ),
        )],
    );
    let got = plan(&state, &obs, 0);
    assert_eq!(got, [remove("db"), create(&v1), start("db")]);
    // The failed version's image goes once nothing else is planned or in flight.
    let obs = observed(&[&v1, &v2], vec![(&v1, running(&v1))]);
    assert_eq!(
        plan(&state, &obs, 0),
        [Action::Gc {
            images: vec![v2.image.digest]
        }]
    );
}

#[test]
fn gc_never_touches_images_of_committed_or_pending() {
    let v1 = svc("db", 1);
    let v2 = svc("db", 2);
    let stale = svc("x", 3);
    let state = update(vec![v1.clone()], vec![v2.clone()]);
    // v2 runs and waits out its gate: nothing else to do, so the collection comes.
    let mut obs = observed(&[&v1, &v2, &stale], vec![(&v2, running(&v2))]);
    obs.gate_started_ms = Some(0);
    assert_eq!(
        plan(&state, &obs, 0),
        [Action::Gc {
            images: vec![stale.image.digest]
        }]
    );
    // While the switch is planned, the collection waits for a quiet round.
    let obs = observed(&[&v1, &v2, &stale], vec![(&v1, running(&v1))]);
    assert!(!plan(&state, &obs, 0)
        .iter()
        .any(|a| matches!(a, Action::Gc { .. })));
}

/// Applies one action to a simulated device, checking it against the lifecycle table.
fn apply(state: &mut AgentState, obs: &mut Observed, action: &Action, now: u64) {
    let verb_on = |obs: &Observed, service: &ServiceName, verb| {
        let from = PhaseKind::from(obs.containers.get(service).map(|c| &c.phase));
        transition(from, verb).unwrap_or_else(|e| panic!("plan emitted a refused move: {e}"));
    };
    match action {
        Action::Pull { image } => {
            obs.images.insert(image.digest);
        }
        Action::Create { spec } => {
            verb_on(obs, &spec.name, Verb::Create);
            obs.containers.insert(
                spec.name.clone(),
                container(spec, Phase::Created, Health::Starting),
            );
        }
        Action::Start { service } => {
            verb_on(obs, service, Verb::Start);
            let c = obs.containers.get_mut(service).unwrap();
            c.phase = Phase::Running { since_ms: now };
            c.health = Health::Healthy; // the simulated app is healthy right away
        }
        Action::Restart { service } => {
            verb_on(obs, service, Verb::Restart);
            obs.containers.get_mut(service).unwrap().phase = Phase::Running { since_ms: now };
        }
        Action::Stop { service } => {
            verb_on(obs, service, Verb::Stop);
            obs.containers.get_mut(service).unwrap().phase = Phase::Stopped;
        }
        Action::Remove { service } => {
            verb_on(obs, service, Verb::Remove);
            obs.containers.remove(service);
        }
        Action::CreateNext { spec } => {
            obs.successors.insert(
                spec.name.clone(),
                container(spec, Phase::Created, Health::Starting),
            );
        }
        Action::StartNext { service } => {
            let c = obs.successors.get_mut(service).unwrap();
            c.phase = Phase::Running { since_ms: now };
            c.health = Health::Healthy;
        }
        Action::StopNext { service } => {
            obs.successors.get_mut(service).unwrap().phase = Phase::Stopped;
        }
        Action::RemoveNext { service } => {
            obs.successors.remove(service);
        }
        Action::Promote { service } => {
            let next = obs.successors.remove(service).unwrap();
            if let Some(old) = obs.containers.insert(service.clone(), next) {
                obs.retired.insert(service.clone(), old);
            }
        }
        Action::StopRetired { service } => {
            obs.retired.get_mut(service).unwrap().phase = Phase::Stopped;
        }
        Action::RemoveRetired { service } => {
            obs.retired.remove(service);
        }
        Action::Gc { images } => images.iter().for_each(|d| {
            obs.images.remove(d);
        }),
        Action::StartGate { .. } => obs.gate_started_ms = Some(now),
        Action::Commit { .. } => {
            state.commit();
            obs.gate_started_ms = None;
        }
        Action::RollBack { reason, .. } => {
            state.roll_back(reason.clone());
        }
    }
}

#[test]
fn applying_plans_converges_and_replanning_is_then_empty() {
    let db = healthchecked(svc("db", 1), Some(5_000));
    let mut app = svc("app", 2);
    app.depends_on = vec![Dependency {
        service: name("db"),
        condition: DependencyCondition::Healthy,
    }];
    let stale = svc("gone", 7);
    let mut state = update(vec![stale.clone()], vec![app.clone(), db.clone()]);
    let mut obs = observed(&[&stale], vec![(&stale, running(&stale))]);
    let mut now = 0;
    for _ in 0..20 {
        let actions = plan(&state, &obs, now);
        if actions.is_empty() && state.pending.is_none() {
            break;
        }
        for action in &actions {
            apply(&mut state, &mut obs, action, now);
        }
        now += 1_000;
    }
    assert!(state.pending.is_none(), "committed: {state:?}");
    assert_eq!(state.committed_generation(), Generation(2));
    assert_eq!(obs.containers.len(), 2);
    assert!(obs
        .containers
        .values()
        .all(|c| matches!(c.phase, Phase::Running { .. })));
    assert_eq!(obs.images.len(), 2, "the stale image was collected");
    assert_eq!(plan(&state, &obs, now), []);
}

/// Issue 15: an update whose images are not all in the store yet (a pull in flight, or
/// refused for lack of disk) leaves every running container alone: no stop, no remove,
/// not even of services the new generation drops or whose image it keeps.
#[test]
fn nothing_running_is_touched_until_every_image_of_the_new_generation_is_here() {
    let web1 = svc("web", 1);
    let api1 = svc("api", 3);
    let gone = svc("gone", 4);
    let web2 = svc("web", 2); // a new image
    let mut api2 = api1.clone(); // the same image, another command
    api2.command = vec!["--v2".into()];
    let mut db2 = svc("db", 5); // a new service with a new image
    db2.restart = RestartPolicy::No;
    let state = update(
        vec![web1.clone(), api1.clone(), gone.clone()],
        vec![web2.clone(), api2.clone(), db2.clone()],
    );
    let all_running = || {
        vec![
            (&web1, running(&web1)),
            (&api1, running(&api1)),
            (&gone, running(&gone)),
        ]
    };
    let touches = |actions: &[Action]| {
        actions.iter().any(|a| {
            matches!(
                a,
                Action::Stop { .. } | Action::Remove { .. } | Action::Create { .. }
            )
        })
    };
    // (images in the store besides the old ones, expected plan)
    let table: Vec<(Vec<&ServiceSpec>, Vec<Action>)> = vec![
        (vec![], vec![pull(&web2), pull(&db2)]),
        (vec![&web2], vec![pull(&db2)]),
        (vec![&db2], vec![pull(&web2)]),
        (
            vec![&web2, &db2],
            // The dropped service goes first; the switch follows once it is gone.
            vec![stop("gone"), remove("gone")],
        ),
    ];
    for (new_images, want) in table {
        let mut images = vec![&web1, &api1, &gone];
        images.extend(new_images.iter().copied());
        let got = plan(&state, &observed(&images, all_running()), 0);
        assert_eq!(got, want, "with {} new images", new_images.len());
        assert_eq!(touches(&got), new_images.len() == 2, "{got:?}");
    }
}

#[test]
fn while_the_new_images_download_the_old_containers_are_still_restarted() {
    let v1 = svc("web", 1);
    let v2 = svc("web", 2);
    let crashed = container(
        &v1,
        Phase::Exited {
            code: 1,
            at_ms: 1_000,
            oom: false,
        },
        Health::None,
    );
    let state = update(vec![v1.clone()], vec![v2.clone()]);
    let obs = observed(&[&v1], vec![(&v1, crashed)]);
    assert_eq!(plan(&state, &obs, 1_500), [pull(&v2)], "backoff first");
    assert_eq!(plan(&state, &obs, 2_000), [pull(&v2), start("web")]);
}

/// Issue 15: `cap_add: [NOT_A_CAP]` reached a device (here: a state file written by an
/// older agent, which did not check it). The old container keeps running, nothing is
/// pulled, and the generation is reported failed with what was wrong.
#[test]
fn an_invalid_pending_generation_stops_nothing_and_is_reported_failed() {
    use crate::supervisor::{report, tracker::Tracker};
    let v1 = svc("web", 1);
    let mut v2 = svc("web", 2);
    v2.cap_add = vec!["NOT_A_CAP".into()];
    let state = update(vec![v1.clone()], vec![v2.clone()]);
    for images in [vec![&v1], vec![&v1, &v2]] {
        let obs = observed(&images, vec![(&v1, running(&v1))]);
        assert_eq!(plan(&state, &obs, 0), [], "images: {}", images.len());
        let why = "service web: cap_add: unknown capability \"NOT_A_CAP\"";
        assert_eq!(refusal(&state), Some((Generation(2), why.to_string())));
        let reported = report::reported(
            &"pi".parse().unwrap(),
            &state,
            &obs,
            &Tracker::default(),
            &[],
        );
        match &reported.update {
            coracle_proto::UpdateStatus::Failed { generation, reason } => {
                assert_eq!(*generation, Generation(2));
                assert!(reason.contains(why), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(reported.applied, Generation(1));
        assert_eq!(
            reported.services[0].image, v1.image.digest,
            "reports what runs"
        );
    }
    // The old container is still supervised: it is restarted when it crashes.
    let crashed = container(
        &v1,
        Phase::Exited {
            code: 1,
            at_ms: 0,
            oom: false,
        },
        Health::None,
    );
    let obs = observed(&[&v1], vec![(&v1, crashed)]);
    assert_eq!(plan(&state, &obs, 10_000), [start("web")]);
}

#[test]
fn a_pull_that_never_succeeds_never_takes_the_old_version_down() {
    let v1 = svc("web", 1);
    let v2 = svc("web", 2);
    let mut state = update(vec![v1.clone()], vec![v2.clone()]);
    let mut obs = observed(&[&v1], vec![(&v1, running(&v1))]);
    for round in 0..30u64 {
        let now = round * 1_000;
        if round == 10 {
            // The old version crashes meanwhile; it comes back.
            obs.containers.get_mut(&name("web")).unwrap().phase = Phase::Exited {
                code: 1,
                at_ms: now,
                oom: false,
            };
        }
        for action in plan(&state, &obs, now) {
            match action {
                Action::Pull { .. } => {} // refused: no space
                other => apply(&mut state, &mut obs, &other, now),
            }
        }
    }
    let web = &obs.containers[&name("web")];
    assert_eq!(web.fingerprint, fingerprint(&v1));
    assert!(matches!(web.phase, Phase::Running { .. }), "{web:?}");
    assert_eq!(state.pending.as_ref().unwrap().generation, Generation(2));
}

/// Issue 15 item 1: the supervisor runs actions as jobs; what a job is still doing is
/// `busy` and gets no new actions, nor does what depends on it.
#[test]
fn busy_subjects_and_their_dependents_wait_for_their_jobs() {
    let db1 = svc("db", 1);
    let db2 = svc("db", 2);
    let mut app2 = svc("app", 3);
    app2.depends_on = vec![Dependency {
        service: name("db"),
        condition: DependencyCondition::Started,
    }];
    let independent = svc("cache", 4);
    let state = update(
        vec![db1.clone()],
        vec![db2.clone(), app2.clone(), independent.clone()],
    );
    let mut obs = observed(
        &[&db1, &db2, &app2, &independent],
        vec![(&db1, running(&db1))],
    );
    // Nothing busy: db is replaced first; app waits for db's moves; cache goes meanwhile.
    let got = plan(&state, &obs, 0);
    assert_eq!(
        got,
        [
            stop("db"),
            remove("db"),
            create(&db2),
            start("db"),
            create(&independent),
            start("cache"),
        ]
    );
    // db's job in flight: neither db nor app gets anything; cache still does.
    obs.busy.services.insert(name("db"));
    assert_eq!(
        plan(&state, &obs, 0),
        [create(&independent), start("cache")]
    );
}

#[test]
fn pulls_in_flight_are_not_asked_again_and_hold_the_collection() {
    let v1 = svc("web", 1);
    let v2 = svc("web", 2);
    let stale = svc("old", 9);
    let state = update(vec![v1.clone()], vec![v2.clone()]);
    let mut obs = observed(&[&v1, &stale], vec![(&v1, running(&v1))]);
    // A pull may take a stale image's layers as its delta base: no collection beside it.
    assert_eq!(plan(&state, &obs, 0), [pull(&v2)]);
    obs.busy.images.insert(v2.image.digest);
    assert_eq!(
        plan(&state, &obs, 0),
        [],
        "no second pull, no collection meanwhile"
    );
    obs.busy = Busy {
        gc: true,
        ..Busy::default()
    };
    assert_eq!(plan(&state, &obs, 0), [], "no pull while a collection runs");
}

#[test]
fn the_switch_and_the_gate_wait_for_removals_and_busy_services() {
    let gone = svc("gone", 1);
    let web = healthchecked(svc("web", 2), None);
    let state = update(vec![gone.clone()], vec![web.clone()]);
    let mut obs = observed(&[&gone, &web], vec![(&gone, running(&gone))]);
    assert_eq!(plan(&state, &obs, 0), [stop("gone"), remove("gone")]);
    obs.busy.services.insert(name("gone"));
    assert_eq!(
        plan(&state, &obs, 0),
        [],
        "the new service waits for the removal"
    );
    obs.busy = Busy::default();
    obs.containers.clear();
    obs.containers.insert(name("web"), running(&web));
    obs.containers.get_mut(&name("web")).unwrap().health = Health::Healthy;
    obs.busy.services.insert(name("web"));
    assert_eq!(plan(&state, &obs, 0), [], "no gate while web is busy");
    obs.busy = Busy::default();
    assert_eq!(
        plan(&state, &obs, 0),
        [Action::StartGate {
            generation: Generation(2)
        }]
    );
}

#[path = "start_first_tests.rs"]
mod start_first;
