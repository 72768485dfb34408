use super::*;
use coracle_proto::{DependencyCondition, HealthProbe, NetworkMode, VolumeSource};

pub(super) const DIGEST: &str =
    "sha256:0b006957920fba61d4c920e53bcc2df21bb31262640f51225003d09110e6915b";

/// The registry the compose tests resolve tags in: every repository at `DIGEST`, but
/// `missing`.
pub(super) fn resolve(image: &str) -> Result<ImageRef, String> {
    let repo = image.split(':').next().unwrap_or(image);
    if repo == "missing" {
        return Err(format!("{image} is not in the registry"));
    }
    format!("{repo}@{DIGEST}")
        .parse()
        .map_err(|e: coracle_proto::RefError| e.to_string())
}

const VALID: &str = "\
services:
  db:
    image: redis:7
    healthcheck:
      test: [\"CMD\", \"redis-cli\", \"ping\"]
      interval: 10s
      retries: 5
  web:
    image: app:1
    command: serve --port 80
    environment:
      MODE: prod
      WORKERS: 4
    volumes:
      - data:/var/lib/app
      - /etc/ssl:/etc/ssl:ro
    devices:
      - /dev/i2c-1
    restart: on-failure:3
    mem_limit: 64m
    cpus: 0.5
    pids_limit: 100
    network_mode: bridge
    depends_on:
      db:
        condition: service_healthy
";

#[test]
fn valid_app_becomes_service_specs() {
    let file = parse(VALID).unwrap();
    let specs = to_specs(VALID, &file, &ProfileFiles::new(), &resolve).unwrap();
    assert_eq!(specs.len(), 2);
    let web = specs.iter().find(|s| s.name.as_str() == "web").unwrap();
    assert_eq!(web.command, vec!["serve", "--port", "80"]);
    assert_eq!(
        web.env,
        vec![
            ("MODE".into(), "prod".into()),
            ("WORKERS".into(), "4".into())
        ]
    );
    assert_eq!(web.resources.memory_max_bytes, Some(64 << 20));
    assert_eq!(web.resources.cpu_millicores, Some(500));
    assert_eq!(web.restart, RestartPolicy::OnFailure { max_retries: 3 });
    assert_eq!(web.network, NetworkMode::Private);
    assert_eq!(web.volumes[0].source, VolumeSource::Named("data".into()));
    assert!(web.volumes[1].read_only);
    assert_eq!(web.devices[0].container_path, "/dev/i2c-1");
    assert_eq!(web.depends_on[0].condition, DependencyCondition::Healthy);
    assert_eq!(web.image.digest.to_string(), DIGEST);
    let db = specs.iter().find(|s| s.name.as_str() == "db").unwrap();
    let health = db.health.as_ref().unwrap();
    assert_eq!(
        health.probe,
        HealthProbe::Exec(vec!["redis-cli".into(), "ping".into()])
    );
    assert_eq!((health.interval_ms, health.retries), (10_000, 5));
}

#[test]
fn tcp_and_http_health_probes_need_no_process_in_the_container() {
    let text = "services:\n  a:\n    image: app:1\n    healthcheck:\n      test: [TCP, \"8080\"]\n  b:\n    image: app:1\n    healthcheck:\n      test: [HTTP, \"80\", /healthz]\n";
    let specs = to_specs(text, &parse(text).unwrap(), &ProfileFiles::new(), &resolve).unwrap();
    let probe = |i: usize| specs[i].health.as_ref().unwrap().probe.clone();
    assert_eq!(probe(0), HealthProbe::Tcp { port: 8080 });
    assert_eq!(
        probe(1),
        HealthProbe::Http {
            port: 80,
            path: "/healthz".into()
        }
    );
}

#[test]
fn invalid_apps_name_the_line_and_the_field() {
    // (text, expected substrings)
    let cases: &[(&str, &[&str])] = &[
        ("services:\n  web:\n    image: app:1\n    mem_limt: 1g\n", &["line 4", "mem_limt"]),
        ("services:\n  web:\n    image: app:1\n    restart: sometimes\n", &["line 4", "restart", "web"]),
        ("services:\n  web:\n    image: missing:1\n", &["line 3", "image", "not in the registry"]),
        ("services:\n  web:\n    image: app:1\n    volumes:\n      - ./x:/y\n", &["line 4", "volumes", "relative"]),
        ("services:\n  web:\n    image: app:1\n    depends_on: [db]\n", &["line 4", "depends_on", "unknown service"]),
        ("services:\n  web:\n    image: app:1\n    cpus: -1\n", &["line 4", "cpus"]),
        ("services:\n  web:\n    image: app:1\n    devices: [\"/dev/x:/dev/x:rwz\"]\n", &["devices", "rwm"]),
        ("services:\n  web:\n    image: app:1\n    healthcheck:\n      test: [CMD, \"true\"]\n      interval: \"5\"\n", &["healthcheck", "unit"]),
        ("services:\n  web:\n    image: app:1\n    healthcheck:\n      test: [TCP, \"x\"]\n", &["healthcheck", "port"]),
        ("services:\n  web:\n  image: [\n", &["line"]),
        ("services: {}\n", &["no services"]),
    ];
    for (text, expected) in cases {
        let err = parse(text)
            .and_then(|file| to_specs(text, &file, &ProfileFiles::new(), &resolve).map(|_| ()))
            .unwrap_err();
        let message = err.to_string();
        for part in *expected {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }
}

#[test]
fn healthcheck_none_and_disable_switch_the_check_off_and_a_string_is_cmd_shell() {
    let text = "services:\n  a:\n    image: app:1\n    healthcheck:\n      test: [NONE]\n  b:\n    image: app:1\n    healthcheck:\n      disable: true\n  c:\n    image: app:1\n    healthcheck:\n      test: \"wget -q -O- http://127.0.0.1/  ||  exit 1\"\n  d:\n    image: app:1\n    healthcheck:\n      test: [CMD-SHELL, \"test -f /ready\"]\n";
    let specs = to_specs(text, &parse(text).unwrap(), &ProfileFiles::new(), &resolve).unwrap();
    let health = |name: &str| {
        specs
            .iter()
            .find(|s| s.name.as_str() == name)
            .unwrap()
            .health
            .clone()
    };
    assert_eq!(health("a"), None);
    assert_eq!(health("b"), None);
    let shell =
        |script: &str| HealthProbe::Exec(vec!["/bin/sh".into(), "-c".into(), script.into()]);
    assert_eq!(
        health("c").unwrap().probe,
        shell("wget -q -O- http://127.0.0.1/  ||  exit 1")
    );
    assert_eq!(health("d").unwrap().probe, shell("test -f /ready"));
}

#[test]
fn fields_a_device_could_not_run_are_refused_naming_service_field_and_value() {
    // (text, expected substrings)
    let cases: &[(&str, &[&str])] = &[
        (
            "services:\n  web:\n    image: app:1\n    cap_add: [NOT_A_CAP]\n",
            &["line 4", "service web: cap_add: unknown capability \"NOT_A_CAP\""],
        ),
        (
            "services:\n  web:\n    image: app:1\n    cap_drop: [chown, fly]\n",
            &["line 4", "cap_drop: unknown capability \"fly\""],
        ),
        (
            "services:\n  web:\n    image: app:1\n    user: \"a:b:c\"\n",
            &["line 4", "service web: user: \"a:b:c\""],
        ),
        (
            "services:\n  web:\n    image: app:1\n    volumes:\n      - data:/srv/../etc\n",
            &["line 4", "volumes: \"/srv/../etc\""],
        ),
        (
            "services:\n  web:\n    image: app:1\n    volumes:\n      - \"bad name:/srv\"\n",
            &["volumes: \"bad name\" is not a volume name"],
        ),
        (
            "services:\n  web:\n    image: app:1\n    devices: [\"/dev/../etc/shadow\"]\n",
            &["line 4", "devices: \"/dev/../etc/shadow\""],
        ),
        (
            "services:\n  web:\n    image: app:1\n    mem_limit: 1k\n",
            &["line 4", "mem_limit: \"1024 bytes\" must be at least 1 MiB"],
        ),
        (
            "services:\n  web:\n    image: app:1\n    working_dir: app\n",
            &["line 4", "working_dir: \"app\""],
        ),
        (
            "services:\n  web:\n    image: app:1\n    healthcheck:\n      test: [HTTP, \"80\", health]\n",
            &["line 4", "healthcheck: \"health\" path must start with /"],
        ),
    ];
    for (text, expected) in cases {
        let err =
            to_specs(text, &parse(text).unwrap(), &ProfileFiles::new(), &resolve).unwrap_err();
        let message = err.to_string();
        for part in *expected {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }
    // Docker's spellings pass.
    let fine = "services:\n  web:\n    image: app:1\n    cap_add: [net_admin, CAP_SYS_TIME]\n    cap_drop: [ALL]\n    user: \"1000:100\"\n";
    to_specs(fine, &parse(fine).unwrap(), &ProfileFiles::new(), &resolve).unwrap();
}

#[test]
fn lifecycle_keys_become_the_service_lifecycle() {
    let text = "\
services:
  web:
    image: app:1
    init: true
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    deploy:
      update_config:
        order: start-first
        monitor: 20s
  worker:
    image: app:1
    stop_signal: 10
";
    let specs = to_specs(text, &parse(text).unwrap(), &ProfileFiles::new(), &resolve).unwrap();
    let web = &specs.iter().find(|s| s.name.as_str() == "web").unwrap();
    assert_eq!(
        web.lifecycle,
        coracle_proto::Lifecycle {
            stop_signal: Some(2),
            stop_grace_ms: Some(90_000),
            init: true,
            min_uptime_ms: Some(20_000),
        }
    );
    assert_eq!(web.update.order, coracle_proto::UpdateOrder::StartFirst);
    let worker = &specs.iter().find(|s| s.name.as_str() == "worker").unwrap();
    assert_eq!(worker.lifecycle.stop_signal, Some(10));
}

#[test]
fn services_update_start_first_unless_they_hold_something_exclusive() {
    use coracle_proto::UpdateOrder::{DownloadThenSwitch as StopFirst, StartFirst};
    let text = "\
services:
  bridged:
    image: app:1
  reads_config:
    image: app:1
    volumes: [\"conf:/etc/app:ro\"]
  host_net:
    image: app:1
    network_mode: host
  serial:
    image: app:1
    devices: [\"/dev/ttyUSB0\"]
  database:
    image: app:1
    volumes: [\"data:/var/lib/db\"]
  told_stop_first:
    image: app:1
    deploy:
      update_config:
        order: stop-first
  told_start_first:
    image: app:1
    volumes: [\"data:/var/lib/db\"]
    deploy:
      update_config:
        order: start-first
volumes:
  conf:
  data:
";
    let specs = to_specs(text, &parse(text).unwrap(), &ProfileFiles::new(), &resolve).unwrap();
    let order = |name: &str| {
        specs
            .iter()
            .find(|s| s.name.as_str() == name)
            .unwrap()
            .update
            .order
    };
    for (name, want) in [
        ("bridged", StartFirst),
        ("reads_config", StartFirst),
        ("host_net", StopFirst),
        ("serial", StopFirst),
        ("database", StopFirst),
        ("told_stop_first", StopFirst),
        ("told_start_first", StartFirst),
    ] {
        assert_eq!(order(name), want, "{name}");
    }
}

#[test]
fn bad_lifecycle_values_are_refused_naming_the_field() {
    for (key, want) in [
        (
            "stop_signal: SIGNOPE",
            "field stop_signal: \"SIGNOPE\" is not a signal",
        ),
        ("stop_signal: 99", "field stop_signal"),
        ("stop_grace_period: soon", "field stop_grace_period"),
        (
            "stop_grace_period: 2h",
            "stop_grace_period: \"7200000 ms\" must be at most 1 hour",
        ),
        (
            "deploy:\n      update_config:\n        order: sideways",
            "field deploy: update_config.order: \"sideways\"",
        ),
        (
            "deploy:\n      update_config:\n        monitor: 5x",
            "field deploy: update_config.monitor",
        ),
    ] {
        let text = format!("services:\n  web:\n    image: app:1\n    {key}\n");
        let err = parse(&text)
            .and_then(|file| to_specs(&text, &file, &ProfileFiles::new(), &resolve))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{key}: {err}");
    }
}

#[test]
fn other_deploy_keys_are_refused_by_name() {
    for (key, want) in [
        (
            "replicas: 2",
            "services.web.deploy.replicas: not supported on devices yet",
        ),
        (
            "update_config:\n        parallelism: 2",
            "services.web.deploy.update_config.parallelism: not supported on devices yet",
        ),
        ("replicaz: 2", "unknown field `replicaz`"),
    ] {
        let text = format!("services:\n  web:\n    image: app:1\n    deploy:\n      {key}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn tmpfs_shm_groups_logging_and_start_interval_become_tuning_entries() {
    let text = "\
services:
  web:
    image: app:1
    tmpfs:
      - /run:size=8m,mode=1770
    shm_size: 128m
    group_add: [dialout, 997]
    logging:
      driver: json-file
      options:
        max-size: 1m
        max-file: 4
    healthcheck:
      test: [TCP, \"80\"]
      start_period: 30s
      start_interval: 1s
  off:
    image: app:1
    healthcheck:
      disable: true
      start_interval: 1s
";
    let specs = to_specs(text, &parse(text).unwrap(), &ProfileFiles::new(), &resolve).unwrap();
    let web = &specs[1];
    assert_eq!(web.shm_size(), Some(128 << 20));
    assert_eq!(web.health_start_interval_ms(), Some(1000));
    let rotation = web.log_rotation().unwrap();
    assert_eq!(
        (rotation.max_bytes, rotation.max_files),
        (Some(1 << 20), Some(4))
    );
    assert!(web.tuning.iter().any(|t| matches!(t,
        coracle_proto::Tuning::Tmpfs(m) if m.target == "/run" && m.size_bytes == Some(8 << 20))));
    let groups: Vec<_> = web
        .tuning
        .iter()
        .filter_map(|t| match t {
            coracle_proto::Tuning::GroupAdd(g) => Some(g.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(groups, ["dialout", "997"]);
    assert_eq!(
        specs[0].health_start_interval_ms(),
        None,
        "no check, no pace"
    );
}

#[test]
fn extras_a_device_could_not_run_are_refused_with_their_line() {
    for (yaml, line, words) in [
        (
            "    tmpfs: /dev/shm\n",
            4,
            "tmpfs: \"/dev/shm\" is in /proc, /sys or /dev",
        ),
        (
            "    tmpfs: [/run, /run]\n",
            4,
            "tmpfs: \"/run\" is given twice",
        ),
        ("    shm_size: 0\n", 4, "shm_size: \"0\" must be above 0"),
        ("    group_add: [\"a b\"]\n", 4, "group_add: \"a b\""),
        (
            "    logging:\n      options:\n        max-file: 0\n",
            4,
            "max-file 0",
        ),
        ("    logging:\n      driver: gelf\n", 4, "driver \"gelf\""),
        (
            "    logging:\n      options:\n        compress: 'true'\n",
            6,
            "compressing rotated logs",
        ),
        (
            "    tmpfs: /x:size=1g,suid\n",
            4,
            "suid is not supported on devices yet",
        ),
        (
            "    healthcheck:\n      test: [TCP, \"80\"]\n      start_interval: 0s\n",
            4,
            "start_interval: \"0 ms\" must be above 0",
        ),
        (
            "    healthcheck:\n      test: [TCP, \"80\"]\n      start_interval: soon\n",
            4,
            "start_interval: duration",
        ),
    ] {
        let text = format!("services:\n  web:\n    image: app:1\n{yaml}");
        let err = parse(&text)
            .and_then(|file| to_specs(&text, &file, &ProfileFiles::new(), &resolve))
            .unwrap_err();
        assert!(
            err.to_string().contains(words),
            "{yaml}: {err} lacks {words}"
        );
        assert_eq!(err.line(), line, "{yaml}: {err}");
    }
}

#[test]
fn long_volume_entries_mix_with_short_ones_and_map_like_them() {
    let text = "\
services:
  web:
    image: app:1
    volumes:
      - data:/var/lib/app
      - type: volume
        source: cache
        target: /cache
        read_only: true
        volume:
          nocopy: true
        x-note: kept out
      - type: bind
        source: /etc/ssl
        target: /etc/ssl
        read_only: true
        bind:
          create_host_path: false
      - type: tmpfs
        target: /run
        tmpfs:
          size: 8m
          mode: 0o1770
    tmpfs: /scratch:size=8m,mode=1770
volumes:
  data:
  cache:
";
    let specs = to_specs(text, &parse(text).unwrap(), &ProfileFiles::new(), &resolve).unwrap();
    let short = to_specs(
        "services:\n  web:\n    image: app:1\n    volumes: [\"data:/var/lib/app\", \"cache:/cache:ro\", \"/etc/ssl:/etc/ssl:ro\"]\n",
        &parse("services:\n  web:\n    image: app:1\n    volumes: [\"data:/var/lib/app\", \"cache:/cache:ro\", \"/etc/ssl:/etc/ssl:ro\"]\n").unwrap(),
        &ProfileFiles::new(),
        &resolve,
    )
    .unwrap();
    assert_eq!(specs[0].volumes, short[0].volumes);
    let tmpfs: Vec<_> = specs[0]
        .tuning
        .iter()
        .filter_map(|t| match t {
            coracle_proto::Tuning::Tmpfs(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    // The long form makes the TmpfsMount the `tmpfs:` key makes, Docker's defaults and all.
    let mut from_key = tmpfs[0].clone();
    from_key.target = "/run".into();
    assert_eq!(tmpfs[1], from_key);
    assert_eq!(tmpfs[1].target, "/run");
}

#[test]
fn long_volume_errors_name_the_entry_line_and_key() {
    for (entry, line, words) in [
        (
            "      - type: volume\n        source: \"bad name\"\n        target: /x\n",
            4,
            "volumes: \"bad name\" is not a volume name",
        ),
        (
            "      - type: volume\n        source: data\n        target: /srv/../etc\n",
            4,
            "volumes: \"/srv/../etc\"",
        ),
        (
            "      - type: bind\n        source: /srv\n        target: /x\n        bind:\n          propagation: rshared\n",
            10,
            "services.web.volumes.1.bind.propagation: not supported on devices yet: mount propagation",
        ),
        (
            "      - type: npipe\n        source: x\n        target: /x\n",
            6,
            "services.web.volumes.1.type: not supported on devices yet: Windows named pipes",
        ),
        (
            "      - type: tmpfs\n        target: /x\n        tmpfs:\n          size: lots\n",
            9,
            "field volumes: entry 1: tmpfs.size: size \"lots\"",
        ),
        (
            "      - type: bind\n        source: ./data\n        target: /x\n",
            7,
            "entry 1: source: \"./data\": relative host paths",
        ),
        (
            "      - type: bind\n        source: /x\n        target: /x\n        bind:\n          create_host_pth: true\n",
            10,
            "unknown field `create_host_pth`",
        ),
        // The duplicate is the device's rule on tmpfs mounts, named at the `tmpfs:` key.
        (
            "      - type: tmpfs\n        target: /scratch\n",
            8,
            "tmpfs: \"/scratch\" is given twice",
        ),
    ] {
        let text = format!(
            "services:\n  web:\n    image: app:1\n    volumes:\n      - data:/data\n{entry}    tmpfs: /scratch\n"
        );
        let err = parse(&text)
            .and_then(|file| to_specs(&text, &file, &ProfileFiles::new(), &resolve))
            .unwrap_err();
        assert!(
            err.to_string().contains(words),
            "{entry}: {err} lacks {words}"
        );
        assert_eq!(err.line(), line, "{entry}: {err}");
    }
}

#[test]
fn memory_reservations_become_the_soft_limit_and_cpu_reservations_nothing() {
    let spec_of = |lines: &str| {
        let text = format!("services:\n  web:\n    image: app:1\n{lines}");
        parse(&text)
            .and_then(|file| to_specs(&text, &file, &ProfileFiles::new(), &resolve))
            .map(|mut specs| specs.remove(0))
    };
    let deploy = "    deploy:\n      resources:\n        limits:\n          memory: 64m\n        reservations:\n          memory: 32m\n          cpus: '0.25'\n";
    let web = spec_of(deploy).unwrap();
    assert_eq!(web.memory_reservation(), Some(32 << 20));
    assert_eq!(web.resources.memory_max_bytes, Some(64 << 20));
    // The CPU reservation sets nothing, as under Docker Compose outside swarm.
    assert_eq!(web.resources.cpu_millicores, None);
    let reservations = |spec: &ServiceSpec| -> Vec<coracle_proto::Tuning> {
        let entries = spec.tuning.iter().cloned();
        entries
            .filter(|t| matches!(t, coracle_proto::Tuning::MemoryReservation(_)))
            .collect()
    };
    assert_eq!(
        reservations(&web),
        [coracle_proto::Tuning::MemoryReservation(32 << 20)]
    );
    let direct = spec_of("    mem_reservation: 32m\n    mem_limit: 64m\n").unwrap();
    assert_eq!(reservations(&direct), reservations(&web));
    let both = spec_of(&format!("    mem_reservation: 33554432\n{deploy}")).unwrap();
    assert_eq!(reservations(&both), reservations(&web));
    assert_eq!(spec_of("").unwrap().memory_reservation(), None);

    for (lines, line, words) in [
        (
            format!("    mem_reservation: 16m\n{deploy}"),
            4,
            "field mem_reservation: 16777216 differs from deploy.resources.reservations (33554432): give one".to_string(),
        ),
        (
            "    mem_limit: 16m\n    mem_reservation: 32m\n".into(),
            5,
            "service web: mem_reservation: \"33554432 bytes\" must be at most mem_limit".into(),
        ),
        (
            "    mem_reservation: 1k\n".into(),
            4,
            "mem_reservation: \"1024 bytes\" must be at least 1 MiB".into(),
        ),
        (
            "    deploy:\n      resources:\n        reservations:\n          cpus: lots\n".into(),
            4,
            "field deploy: resources.reservations.cpus: lots is not a number of CPUs".into(),
        ),
        (
            "    deploy:\n      resources:\n        reservations:\n          devices:\n            - capabilities: [gpu]\n".into(),
            7,
            "services.web.deploy.resources.reservations.devices: not supported on devices yet: device requests such as GPUs".into(),
        ),
        (
            "    deploy:\n      resources:\n        reservations:\n          pids: 10\n".into(),
            7,
            "services.web.deploy.resources.reservations.pids: not supported on devices yet: process reservations".into(),
        ),
    ] {
        let err = spec_of(&lines).unwrap_err();
        assert!(err.to_string().contains(&words), "{lines}: {err} lacks {words}");
        assert_eq!(err.line(), line, "{lines}: {err}");
    }
}

#[test]
fn privileged_becomes_one_tuning_entry_and_a_bad_value_names_its_line() {
    let text = "\
services:
  web:
    image: app:1
    privileged: true
  locked:
    image: app:1
    privileged: true
    security_opt: [no-new-privileges]
  plain:
    image: app:1
    privileged: false
";
    let specs = to_specs(text, &parse(text).unwrap(), &ProfileFiles::new(), &resolve).unwrap();
    let privileged = |name: &str| -> Vec<coracle_proto::Tuning> {
        let spec = specs.iter().find(|s| s.name.as_str() == name).unwrap();
        spec.tuning
            .iter()
            .filter(|t| matches!(t, coracle_proto::Tuning::Privileged { .. }))
            .cloned()
            .collect()
    };
    let entry = |no_new_privileges| coracle_proto::Tuning::Privileged { no_new_privileges };
    assert_eq!(privileged("web"), [entry(false)]);
    assert_eq!(privileged("locked"), [entry(true)]);
    assert_eq!(privileged("plain"), []);

    let text = "services:\n  web:\n    image: app:1\n    privileged: maybe\n";
    let err = parse(text)
        .and_then(|file| to_specs(text, &file, &ProfileFiles::new(), &resolve))
        .unwrap_err();
    assert!(
        err.to_string().contains("maybe is not true or false"),
        "{err}"
    );
    assert_eq!(err.line(), 4, "{err}");
}
