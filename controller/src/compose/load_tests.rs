//! The app as Docker Compose reads it: interpolation, env files, extension fields, merge
//! keys, profiles, resources, labels, named volumes.

use super::*;

use super::tests::resolve;

fn context(vars: &[(&str, &str)]) -> ComposeContext {
    ComposeContext {
        variables: Some(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ComposeContext::default()
    }
}

fn specs(text: &str, context: &ComposeContext) -> Result<Vec<ServiceSpec>, ComposeError> {
    let file = load(text, context)?.file;
    to_specs(text, &file, &ProfileFiles::new(), &resolve)
}

fn env_of(spec: &ServiceSpec, key: &str) -> Option<String> {
    spec.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

const INTERPOLATED: &str = "\
services:
  web:
    image: app:${TAG:-1}
    command: [\"sh\", \"-c\", \"echo $$HOME ${GREETING}\"]
    environment:
      PORT: ${PORT}
      URL: http://${HOST:-db}:${DB_PORT-5432}/x
      EXTRA: ${DEBUG:+verbose}
    cpus: ${CPUS:-0.5}
    pids_limit: ${PIDS:-64}
    read_only: ${RO:-false}
";

#[test]
fn values_are_interpolated_and_keys_are_not() {
    let ctx = context(&[
        ("TAG", "2"),
        ("GREETING", "hi"),
        ("PORT", "8080"),
        ("CPUS", "1.5"),
        ("DEBUG", "1"),
    ]);
    let loaded = load(INTERPOLATED, &ctx).unwrap();
    assert!(loaded.named.contains("GREETING") && loaded.named.contains("HOST"));
    assert!(loaded.unset.is_empty());
    let web = &specs(INTERPOLATED, &ctx).unwrap()[0];
    assert_eq!(web.image.repository, "app");
    assert_eq!(web.command[2], "echo $HOME hi");
    assert_eq!(env_of(web, "PORT").as_deref(), Some("8080"));
    assert_eq!(env_of(web, "URL").as_deref(), Some("http://db:5432/x"));
    assert_eq!(env_of(web, "EXTRA").as_deref(), Some("verbose"));
    assert_eq!(web.resources.cpu_millicores, Some(1500));
    assert_eq!(web.resources.pids_max, Some(64));
    assert!(!web.read_only_rootfs);
}

#[test]
fn keys_are_never_interpolated() {
    let text = "services:\n  web:\n    image: app:1\n    labels:\n      ${NOT_A_VARIABLE}: kept\n";
    let loaded = load(text, &context(&[("NOT_A_VARIABLE", "x")])).unwrap();
    assert!(loaded.named.is_empty());
    let labels = loaded.file.services["web"].labels.clone().unwrap();
    assert_eq!(
        labels::pairs(&labels).unwrap(),
        [("${NOT_A_VARIABLE}".to_string(), "kept".to_string())]
    );
}

#[test]
fn an_unset_variable_is_blank_and_reported() {
    let loaded = load(INTERPOLATED, &context(&[])).unwrap();
    assert_eq!(
        loaded.unset.into_iter().collect::<Vec<_>>(),
        ["GREETING", "PORT"]
    );
}

#[test]
fn a_missing_required_variable_fails_naming_it_the_key_and_the_line() {
    let text = "services:\n  db:\n    image: db:1\n    environment:\n      - MODE=prod\n      - PASSWORD=${DB_PASSWORD:?set DB_PASSWORD in .env}\n";
    let err = load(text, &context(&[])).unwrap_err();
    assert_eq!(err.line(), 6);
    let message = err.to_string();
    for part in [
        "line 6",
        "DB_PASSWORD",
        "set DB_PASSWORD in .env",
        "services.db.environment.1",
    ] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

#[test]
fn an_app_sent_without_variables_is_refused_where_it_holds_a_dollar() {
    let text = "services:\n  web:\n    image: app:1\n    environment:\n      PASSWORD: ${PW}\n";
    let err = parse(text).unwrap_err();
    let message = err.to_string();
    assert_eq!(err.line(), 5, "{message}");
    assert!(
        message.contains("services.web.environment.PASSWORD"),
        "{message}"
    );
    assert!(message.contains("coracle deploy"), "{message}");
    // With the client's variables it is read.
    assert!(load(text, &context(&[("PW", "x")])).is_ok());
}

#[test]
fn env_files_merge_under_environment_in_order() {
    let text = "\
services:
  web:
    image: app:1
    env_file:
      - common.env
      - path: local.env
        required: false
      - path: ${SITE}.env
    environment:
      LEVEL: from-environment
";
    let mut ctx = context(&[("SITE", "berlin"), ("OUTER", "o")]);
    ctx.env_files.insert(
        "common.env".into(),
        "# shared\nexport LEVEL=common\nA=1\nB='two words'\n".into(),
    );
    ctx.env_files.insert(
        "berlin.env".into(),
        "A=berlin\nC=\"x\\ny ${OUTER}\"\n".into(),
    );
    let web = &specs(text, &ctx).unwrap()[0];
    assert_eq!(env_of(web, "LEVEL").as_deref(), Some("from-environment"));
    assert_eq!(env_of(web, "A").as_deref(), Some("berlin"));
    assert_eq!(env_of(web, "B").as_deref(), Some("two words"));
    assert_eq!(env_of(web, "C").as_deref(), Some("x\ny o"));
    let refs = env_file_references(text, &ctx).unwrap();
    let paths: Vec<(&str, bool)> = refs.iter().map(|r| (r.path.as_str(), r.required)).collect();
    assert_eq!(
        paths,
        [
            ("common.env", true),
            ("local.env", false),
            ("berlin.env", true)
        ]
    );
    // A required file that was not sent is named.
    ctx.env_files.remove("berlin.env");
    let message = specs(text, &ctx).unwrap_err().to_string();
    assert!(
        message.contains("env_file")
            && message.contains("berlin.env")
            && message.contains("line 4"),
        "{message}"
    );
    // env_file as one string; a bare environment name takes the client's value.
    let text = "services:\n  web:\n    image: app:1\n    env_file: one.env\n    environment: [OUTER, NOT_SET]\n";
    ctx.env_files
        .insert("one.env".into(), "X=1\nbad line=\n".into());
    let message = specs(text, &ctx).unwrap_err().to_string();
    assert!(message.contains("one.env, line 2"), "{message}");
    ctx.env_files.insert("one.env".into(), "X=1\n".into());
    let web = &specs(text, &ctx).unwrap()[0];
    assert_eq!(
        web.env,
        [
            ("OUTER".to_string(), "o".to_string()),
            ("X".into(), "1".into())
        ]
    );
}

#[test]
fn extension_fields_and_merge_keys_are_read_as_compose_reads_them() {
    let text = "\
x-common: &common
  image: app:1
  restart: always
  environment: &env
    MODE: prod
x-other: 42
services:
  web:
    <<: *common
    x-note: ignored
    command: serve
  worker:
    <<: [*common]
    restart: \"no\"
    environment:
      <<: *env
      ROLE: worker
    deploy:
      x-ignored: true
";
    let all = specs(text, &context(&[])).unwrap();
    let web = &all[0];
    assert_eq!(web.restart, RestartPolicy::Always);
    assert_eq!(web.command, ["serve"]);
    let worker = &all[1];
    assert_eq!(worker.restart, RestartPolicy::No);
    assert_eq!(env_of(worker, "MODE").as_deref(), Some("prod"));
    assert_eq!(env_of(worker, "ROLE").as_deref(), Some("worker"));
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        text.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            [prev.as_str(); 10].join(", ")
        ));
    }
    text.push_str("services:\n  web:\n    image: app:1\n    command: *a9\n");
    let message = parse(&text).unwrap_err().to_string();
    assert!(message.contains("repetition limit"), "{message}");
}

#[test]
fn profiles_select_services_and_a_dependency_on_a_dropped_one_fails() {
    let text = "\
services:
  web:
    image: app:1
  debug:
    image: tools:1
    profiles: [debug]
";
    let names = |ctx: &ComposeContext| -> Vec<String> {
        load(text, ctx)
            .unwrap()
            .file
            .services
            .keys()
            .cloned()
            .collect()
    };
    let mut ctx = context(&[]);
    assert_eq!(names(&ctx), ["web"]);
    ctx.profiles = vec!["debug".into()];
    assert_eq!(names(&ctx), ["debug", "web"]);
    ctx.profiles = vec!["*".into()];
    assert_eq!(names(&ctx), ["debug", "web"]);
    // The env files of a dropped service are neither asked for nor needed.
    let with_env = "services:\n  web:\n    image: app:1\n  debug:\n    image: tools:1\n    profiles: [debug]\n    env_file: debug.env\n";
    assert!(env_file_references(with_env, &context(&[]))
        .unwrap()
        .is_empty());
    assert!(load(with_env, &context(&[])).is_ok());
    let text = "services:\n  web:\n    image: app:1\n    depends_on: [debug]\n  debug:\n    image: tools:1\n    profiles: [debug]\n";
    let message = load(text, &context(&[])).unwrap_err().to_string();
    assert!(
        message.contains("line 4")
            && message.contains("\"debug\" is not deployed")
            && message.contains("--profile"),
        "{message}"
    );
}

#[test]
fn resource_keys_of_compose_and_deploy_limits() {
    let text = "\
services:
  web:
    image: app:1
    cpus: \"0.25\"
    mem_limit: 64m
    memswap_limit: 128m
    cpu_shares: 512
    cpuset: 0-1
    labels:
      com.example.role: web
    deploy:
      resources:
        limits:
          memory: 64M
          pids: 50
  worker:
    image: app:1
    memswap_limit: -1
    labels: [\"a=b\", c]
    deploy:
      resources:
        limits:
          cpus: 1.5
";
    let all = specs(text, &context(&[])).unwrap();
    let r = &all[0].resources;
    assert_eq!(r.cpu_millicores, Some(250));
    assert_eq!(r.memory_max_bytes, Some(64 << 20));
    assert_eq!(r.memory_swap_max_bytes, Some(128 << 20));
    assert_eq!(r.cpu_weight, Some(20)); // 1 + (510 * 9999) / 262142
    assert_eq!(r.cpuset_cpus.as_deref(), Some("0-1"));
    assert_eq!(r.pids_max, Some(50));
    let r = &all[1].resources;
    assert_eq!(
        (r.cpu_millicores, r.memory_swap_max_bytes),
        (Some(1500), None)
    );

    let cases: &[(&str, &[&str])] = &[
        ("services:\n  w:\n    image: a:1\n    mem_limit: 1g\n    deploy:\n      resources:\n        limits:\n          memory: 2g\n", &["line 4", "mem_limit", "differs"]),
        ("services:\n  w:\n    image: a:1\n    cpu_shares: 1\n", &["line 4", "cpu_shares"]),
        ("services:\n  w:\n    image: a:1\n    cpus: lots\n", &["line 4", "cpus"]),
        ("services:\n  w:\n    image: a:1\n    deploy:\n      resources:\n        limits:\n          pids: 0\n", &["line 4", "deploy", "pids"]),
        ("services:\n  w:\n    image: a:1\n    labels:\n      \"\": x\n", &["line 4", "labels", "no key"]),
    ];
    for (text, parts) in cases {
        let message = specs(text, &context(&[])).unwrap_err().to_string();
        for part in *parts {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
    }
}

#[test]
fn named_volumes_are_declared_and_other_drivers_refused() {
    let ok = "services:\n  w:\n    image: a:1\n    volumes: [data:/data]\nvolumes:\n  data:\n  logs:\n    driver: local\n    labels: {a: b}\n    x-note: 1\n";
    assert!(specs(ok, &context(&[])).is_ok());
    let cases = [
        (
            "volumes:\n  data:\n    external: true\n",
            "volumes.data.external",
            6,
        ),
        (
            "volumes:\n  data:\n    driver: nfs\n",
            "volumes.data.driver",
            6,
        ),
        (
            "volumes:\n  data:\n    driver_opts: {type: nfs}\n",
            "volumes.data.driver_opts",
            6,
        ),
        (
            "volumes:\n  data:\n    name: other\n",
            "volumes.data.name",
            6,
        ),
    ];
    for (volumes, key, line) in cases {
        let text = format!("services:\n  w:\n    image: a:1\n{volumes}");
        let err = specs(&text, &context(&[])).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(key) && message.contains(refused::PREFIX),
            "{message}"
        );
        assert_eq!(err.line(), line, "{message}");
    }
}

#[test]
fn the_example_apps_load_as_they_are() {
    let text = include_str!("../../../examples/hello/compose.yml");
    specs(text, &context(&[])).unwrap();
    // Raw, too: it holds no `$`.
    parse(text).unwrap();
}

#[test]
fn depends_on_entries_and_unlimited_pids() {
    let text = "services:\n  db:\n    image: db:1\n    pids_limit: -1\n  web:\n    image: app:1\n    depends_on:\n      db:\n        condition: service_started\n        required: true\n";
    let all = specs(text, &context(&[])).unwrap();
    assert_eq!(all[0].resources.pids_max, None);
    for (entry, part) in [
        ("required: false", "optional dependencies"),
        ("restart: true", "restarting dependents"),
    ] {
        let text = format!("services:\n  db:\n    image: db:1\n  web:\n    image: app:1\n    depends_on:\n      db:\n        condition: service_started\n        {entry}\n");
        let message = specs(&text, &context(&[])).unwrap_err().to_string();
        assert!(
            message.contains(part)
                && message.contains("line 6")
                && message.contains(refused::PREFIX),
            "{message}"
        );
    }
}
