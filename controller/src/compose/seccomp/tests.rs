use coracle_proto::seccomp::{ArgOp, KernelVersion, SeccompAction};

use super::*;
use crate::compose::{parse, to_specs};

/// A profile in Docker's shape, with every feature the format has that Coracle accepts.
const DOCKER_SHAPED: &str = r#"{
  "defaultAction": "SCMP_ACT_ERRNO",
  "defaultErrnoRet": 1,
  "archMap": [
    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": null}
  ],
  "syscalls": [
    {"names": ["read", "write", "socketcall", "_llseek"], "action": "SCMP_ACT_ALLOW"},
    {"name": "exit_group", "action": "SCMP_ACT_ALLOW", "args": null},
    {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
     "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
    {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
     "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
     "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
     "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "comment": "needs a new kernel",
     "includes": {"minKernel": "4.8"}},
    {"names": ["s390_runtime_instr"], "action": "SCMP_ACT_ALLOW",
     "includes": {"arches": ["s390", "s390x"]}},
    {"names": ["kexec_load"], "action": "SCMP_ACT_KILL_PROCESS"}
  ]
}"#;

#[test]
fn a_docker_shaped_profile_becomes_the_proto_model() {
    let p = parse_profile(DOCKER_SHAPED).unwrap();
    assert_eq!(p.default_action, SeccompAction::Errno(1));
    assert_eq!(p.rules.len(), 8);
    assert_eq!(p.rules[0].names, ["read", "write", "socketcall", "_llseek"]);
    assert_eq!(p.rules[1].names, ["exit_group"]);
    assert_eq!(p.rules[2].args[0].op, ArgOp::NotEqual);
    let clone = &p.rules[3];
    assert_eq!(
        (clone.args[0].op, clone.args[0].value),
        (ArgOp::MaskedEqual, 0x7e02_0000)
    );
    assert_eq!(clone.excludes.caps, ["CAP_SYS_ADMIN"]);
    assert_eq!(p.rules[4].action, SeccompAction::Errno(38));
    assert_eq!(
        p.rules[5].includes.min_kernel,
        Some(KernelVersion { major: 4, minor: 8 })
    );
    assert_eq!(p.rules[7].action, SeccompAction::KillProcess);
}

#[test]
fn bad_profiles_are_refused_naming_the_field_and_the_value() {
    let rule =
        |json: &str| format!(r#"{{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{json}]}}"#);
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"defaultAction": "SCMP_ACT_DENY"}"#.into(),
            r#"defaultAction: unknown action "SCMP_ACT_DENY""#,
        ),
        (
            rule(r#"{"names": ["read"], "action": "SCMP_ACT_ALOW"}"#),
            r#"syscalls[0].action: unknown action "SCMP_ACT_ALOW""#,
        ),
        (
            rule(r#"{"names": ["read", "opne"], "action": "SCMP_ACT_ALLOW"}"#),
            r#"syscalls[0].names[1]: unknown syscall "opne""#,
        ),
        (
            rule(
                r#"{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQUAL"}]}"#,
            ),
            r#"syscalls[0].args[0].op: unknown operator "SCMP_CMP_EQUAL""#,
        ),
        (
            rule(
                r#"{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}"#,
            ),
            "syscalls[0].args[0].index: argument index 7",
        ),
        (
            rule(
                r#"{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMN"]}}"#,
            ),
            r#"syscalls[0].includes.caps[0]: unknown capability "CAP_SYS_ADMN""#,
        ),
        (
            rule(
                r#"{"names": ["read"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["x86-64"]}}"#,
            ),
            r#"syscalls[0].excludes.arches[0]: unknown architecture "x86-64""#,
        ),
        (
            rule(
                r#"{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4"}}"#,
            ),
            r#"syscalls[0].includes.minKernel: "4" is not MAJOR.MINOR"#,
        ),
        (
            rule(r#"{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}"#),
            "syscalls[0].errnoRet: 1 given for SCMP_ACT_ALLOW",
        ),
        (
            rule(r#"{"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5000}"#),
            "syscalls[0].action: errno 5000",
        ),
        (
            rule(r#"{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}"#),
            "syscalls[0].action: SCMP_ACT_NOTIFY is not supported",
        ),
        (
            rule(r#"{"names": [], "action": "SCMP_ACT_ALLOW"}"#),
            "syscalls[0].names: the rule names no syscall",
        ),
        (
            rule(r#"{"names": ["read"], "action": "SCMP_ACT_ALLOW", "nmaes": []}"#),
            "unknown field `nmaes`",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_46"]}"#.into(),
            r#"architectures[0]: unknown architecture "SCMP_ARCH_X86_46""#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/agent.sock"}"#.into(),
            "listenerPath: notify listeners are not supported",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_LOG"]}"#.into(),
            "flags: \"SECCOMP_FILTER_FLAG_LOG\": filter flags are not supported",
        ),
        (
            "{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  oops\n}".into(),
            "line 3, column 3",
        ),
        (
            format!(
                "{{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"x\": \"{}\"}}",
                "a".repeat(MAX_PROFILE_BYTES)
            ),
            "bytes, more than the 65536",
        ),
    ];
    for (text, want) in cases {
        let got = parse_profile(&text).unwrap_err().to_string();
        assert!(got.contains(want), "{got:?} should contain {want:?}");
    }
}

#[test]
fn security_opt_selects_the_policy() {
    let files: ProfileFiles = [("profiles/app.json".to_string(), DOCKER_SHAPED.to_string())].into();
    let opts = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(policy(&opts(&[]), &files), Ok(SeccompPolicy::Default));
    assert_eq!(
        policy(
            &opts(&["seccomp=unconfined", "no-new-privileges:true"]),
            &files
        ),
        Ok(SeccompPolicy::Unconfined)
    );
    assert_eq!(
        policy(&opts(&["seccomp:unconfined"]), &files),
        Ok(SeccompPolicy::Unconfined)
    );
    assert!(matches!(
        policy(&opts(&["seccomp=profiles/app.json"]), &files),
        Ok(SeccompPolicy::Profile(p)) if p.rules.len() == 8
    ));
    let refusals: &[(&[&str], &str)] = &[
        (
            &["seccomp=other.json"],
            "\"other.json\" was not sent with the app",
        ),
        (
            &["seccomp=unconfined", "seccomp=profiles/app.json"],
            "more than once",
        ),
        (
            &["apparmor=unconfined"],
            "\"apparmor=unconfined\" is not supported",
        ),
        (&["no-new-privileges=false"], "cannot be switched off"),
        (&["seccomp="], "is not supported"),
    ];
    for (items, want) in refusals {
        let got = policy(&opts(items), &files).unwrap_err();
        assert!(got.contains(want), "{got:?} should contain {want:?}");
    }
}

const APP: &str = "\
services:
  web:
    image: app:1
    security_opt:
      - seccomp=profiles/app.json
  db:
    image: db:1
    security_opt: [\"seccomp=unconfined\"]
  cache:
    image: cache:1
";

fn resolve(image: &str) -> Result<coracle_proto::ImageRef, String> {
    let repo = image.split(':').next().unwrap_or(image);
    format!("{repo}@sha256:{}", "ab".repeat(32))
        .parse()
        .map_err(|e: coracle_proto::RefError| e.to_string())
}

#[test]
fn an_app_names_its_profiles_and_each_service_gets_its_policy() {
    let file = parse(APP).unwrap();
    assert_eq!(profile_paths(&file), ["profiles/app.json"]);
    let files: ProfileFiles = [("profiles/app.json".to_string(), DOCKER_SHAPED.to_string())].into();
    let specs = to_specs(APP, &file, &files, &resolve).unwrap();
    let policy_of = |name: &str| {
        &specs
            .iter()
            .find(|s| s.name.as_str() == name)
            .unwrap()
            .seccomp
    };
    assert!(matches!(policy_of("web"), SeccompPolicy::Profile(_)));
    assert_eq!(policy_of("db"), &SeccompPolicy::Unconfined);
    assert_eq!(policy_of("cache"), &SeccompPolicy::Default);
}

#[test]
fn a_bad_profile_is_refused_with_the_line_service_and_field() {
    let file = parse(APP).unwrap();
    let bad = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["opne"], "action": "SCMP_ACT_ALLOW"}]}"#;
    let files: ProfileFiles = [("profiles/app.json".to_string(), bad.to_string())].into();
    let got = to_specs(APP, &file, &files, &resolve)
        .unwrap_err()
        .to_string();
    assert_eq!(
        got,
        "app file, line 4: service \"web\", field security_opt: seccomp profile \
         \"profiles/app.json\": syscalls[0].names[0]: unknown syscall \"opne\": no Linux \
         architecture has it"
    );
}
