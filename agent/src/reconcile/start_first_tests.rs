//! Table tests of `start-first` updates: the successor starts beside the serving container,
//! takes over once up, and a failed one is dropped with the old container never stopped.

use super::*;

fn start_first(mut spec: ServiceSpec) -> ServiceSpec {
    spec.update.order = UpdateOrder::StartFirst;
    spec
}

fn create_next(spec: &ServiceSpec) -> Action {
    Action::CreateNext {
        spec: Box::new(spec.clone()),
    }
}
fn start_next(n: &str) -> Action {
    Action::StartNext { service: name(n) }
}
fn promote(n: &str) -> Action {
    Action::Promote { service: name(n) }
}

fn with_successor(mut obs: Observed, spec: &ServiceSpec, next: ObservedContainer) -> Observed {
    obs.successors.insert(spec.name.clone(), next);
    obs
}

#[test]
fn the_successor_starts_beside_the_serving_container() {
    let v1 = svc("web", 1);
    let v2 = start_first(svc("web", 2));
    let obs = observed(&[&v1, &v2], vec![(&v1, running(&v1))]);
    let got = plan(&update(vec![v1.clone()], vec![v2.clone()]), &obs, 0);
    assert_eq!(got, [create_next(&v2), start_next("web")]);
}

#[test]
fn a_checked_successor_takes_over_only_once_healthy() {
    let v1 = svc("web", 1);
    let v2 = start_first(healthchecked(svc("web", 2), None));
    let state = update(vec![v1.clone()], vec![v2.clone()]);
    let base = observed(&[&v1, &v2], vec![(&v1, running(&v1))]);
    let starting = container(&v2, Phase::Running { since_ms: 0 }, Health::Starting);
    let obs = with_successor(base.clone(), &v2, starting);
    assert_eq!(plan(&state, &obs, 1_000), []);
    let healthy = container(&v2, Phase::Running { since_ms: 0 }, Health::Healthy);
    let obs = with_successor(base, &v2, healthy);
    assert_eq!(plan(&state, &obs, 1_000), [promote("web")]);
}

#[test]
fn an_unchecked_successor_takes_over_once_running() {
    let v1 = svc("web", 1);
    let v2 = start_first(svc("web", 2));
    let state = update(vec![v1.clone()], vec![v2.clone()]);
    let base = observed(&[&v1, &v2], vec![(&v1, running(&v1))]);
    let created = container(&v2, Phase::Created, Health::None);
    let obs = with_successor(base.clone(), &v2, created);
    assert_eq!(plan(&state, &obs, 0), [start_next("web")]);
    let obs = with_successor(base, &v2, running(&v2));
    assert_eq!(plan(&state, &obs, 0), [promote("web")]);
}

#[test]
fn a_failed_successor_rolls_back_and_is_dropped_while_the_old_one_serves_on() {
    let v1 = svc("web", 1);
    let v2 = start_first(healthchecked(svc("web", 2), None));
    let mut state = update(vec![v1.clone()], vec![v2.clone()]);
    let base = observed(&[&v1, &v2], vec![(&v1, running(&v1))]);
    for (phase, health, said) in [
        (
            Phase::Exited {
                code: 1,
                at_ms: 0,
                oom: false,
            },
            Health::None,
            "exited with code 1",
        ),
        (
            Phase::Running { since_ms: 0 },
            Health::Unhealthy,
            "unhealthy",
        ),
    ] {
        let obs = with_successor(base.clone(), &v2, container(&v2, phase, health));
        let got = plan(&state, &obs, 0);
        let [Action::RollBack { reason, .. }] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert!(reason.contains(said), "{reason}");
        assert!(
            reason.contains("the old container kept serving"),
            "{reason}"
        );
    }
    // After the rollback: the successor goes, the old container is never touched.
    state.roll_back("failed".into());
    let failed = container(&v2, Phase::Running { since_ms: 0 }, Health::Unhealthy);
    let obs = with_successor(base, &v2, failed);
    assert_eq!(
        plan(&state, &obs, 0),
        [
            Action::StopNext {
                service: name("web")
            },
            Action::RemoveNext {
                service: name("web")
            }
        ]
    );
}

#[test]
fn a_stopped_old_container_or_a_stop_first_service_is_replaced_in_place() {
    let v1 = svc("web", 1);
    let v2 = start_first(svc("web", 2));
    let exited = container(
        &v1,
        Phase::Exited {
            code: 1,
            at_ms: 0,
            oom: false,
        },
        Health::None,
    );
    let obs = observed(&[&v1, &v2], vec![(&v1, exited.clone())]);
    let got = plan(&update(vec![v1.clone()], vec![v2.clone()]), &obs, 0);
    assert_eq!(got, [remove("web"), create(&v2), start("web")]);
    let plain = svc("web", 2);
    let obs = observed(&[&v1, &plain], vec![(&v1, running(&v1))]);
    let got = plan(&update(vec![v1.clone()], vec![plain.clone()]), &obs, 0);
    assert_eq!(
        got,
        [stop("web"), remove("web"), create(&plain), start("web")]
    );
}

#[test]
fn a_successor_alone_after_an_agent_crash_takes_over() {
    let v1 = svc("web", 1);
    let v2 = start_first(svc("web", 2));
    let obs = with_successor(observed(&[&v1, &v2], vec![]), &v2, running(&v2));
    let got = plan(&update(vec![v1.clone()], vec![v2.clone()]), &obs, 0);
    assert_eq!(got, [promote("web")]);
}

#[test]
fn a_successor_of_an_older_generation_goes_before_a_new_one_starts() {
    let v1 = svc("web", 1);
    let v2 = start_first(svc("web", 2));
    let v3 = start_first(svc("web", 3));
    let mut state = update(vec![v1.clone()], vec![v3.clone()]);
    state.pending.as_mut().unwrap().generation = Generation(3);
    let obs = with_successor(
        observed(&[&v1, &v2, &v3], vec![(&v1, running(&v1))]),
        &v2,
        container(&v2, Phase::Created, Health::None),
    );
    assert_eq!(
        plan(&state, &obs, 0),
        [Action::RemoveNext {
            service: name("web")
        }]
    );
}

#[test]
fn a_dependent_waits_until_its_dependency_has_taken_over() {
    let db1 = svc("db", 1);
    let db2 = start_first(svc("db", 2));
    let api1 = svc("api", 3);
    let mut api2 = start_first(svc("api", 4));
    api2.depends_on = vec![Dependency {
        service: name("db"),
        condition: coracle_proto::DependencyCondition::Started,
    }];
    let state = update(
        vec![db1.clone(), api1.clone()],
        vec![db2.clone(), api2.clone()],
    );
    let base = observed(
        &[&db1, &db2, &api1, &api2],
        vec![(&db1, running(&db1)), (&api1, running(&api1))],
    );
    let created = container(&db2, Phase::Created, Health::None);
    let obs = with_successor(base, &db2, created);
    let got = plan(&state, &obs, 0);
    assert!(
        got.iter().all(|a| a.service() != Some(&name("api"))),
        "{got:?}"
    );
    // Once db's successor took over, api's starts beside the old api.
    let obs = observed(
        &[&db1, &db2, &api1, &api2],
        vec![(&db2, running(&db2)), (&api1, running(&api1))],
    );
    let got = plan(&state, &obs, 0);
    assert_eq!(got, [create_next(&api2), start_next("api")]);
}

#[test]
fn the_retired_container_stops_on_its_own_and_holds_up_only_the_commit() {
    let v1 = svc("web", 1);
    let v2 = start_first(svc("web", 2));
    let state = update(vec![v1.clone()], vec![v2.clone()]);
    let mut obs = observed(&[&v1, &v2], vec![(&v2, running(&v2))]);
    obs.retired.insert(name("web"), running(&v1));
    // Its stop and removal are planned; the gate starts meanwhile.
    let got = plan(&state, &obs, 0);
    assert_eq!(
        got,
        [
            Action::StopRetired {
                service: name("web")
            },
            Action::RemoveRetired {
                service: name("web")
            },
            Action::StartGate {
                generation: Generation(2)
            },
        ]
    );
    // While it stops (its job in flight), the window passes but nothing commits.
    obs.busy.retiring.insert(name("web"));
    obs.gate_started_ms = Some(0);
    let late = 60_000;
    assert_eq!(plan(&state, &obs, late), []);
    obs.busy.retiring.clear();
    obs.retired.clear();
    assert_eq!(
        plan(&state, &obs, late),
        [Action::Commit {
            generation: Generation(2)
        }]
    );
}

#[test]
fn no_successor_starts_while_the_last_retired_container_holds_the_other_slot() {
    let v1 = svc("web", 1);
    let v2 = start_first(svc("web", 2));
    let v3 = start_first(svc("web", 3));
    let mut state = update(vec![v2.clone()], vec![v3.clone()]);
    state.pending.as_mut().unwrap().generation = Generation(3);
    let mut obs = observed(&[&v2, &v3], vec![(&v2, running(&v2))]);
    obs.retired.insert(name("web"), running(&v1));
    obs.busy.retiring.insert(name("web"));
    assert_eq!(plan(&state, &obs, 0), []);
}
