//! Docker's seccomp profile format (moby `profiles/seccomp`, the JSON `docker run
//! --security-opt seccomp=FILE` reads) → a validated proto [`SeccompProfile`]. Unknown
//! fields, actions, operators, architectures and syscall names are refused with the path
//! of the field; what Coracle cannot do (notify listeners, filter flags) is refused too
//! rather than ignored. `architectures`/`archMap` are checked and otherwise unused: the
//! device builds its filter for its own ABI and kills calls made through another one.

use coracle_proto::seccomp::{
    ArgCondition, ArgOp, KernelVersion, RuleFilter, SeccompAction, SeccompProfile, SyscallRule,
};
use serde::Deserialize;

use super::ProfileFileError;

/// Largest profile file accepted (Docker's default profile is about 13 KiB).
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;

/// `SCMP_ARCH_*` names libseccomp knows.
#[rustfmt::skip]
const SCMP_ARCHES: &[&str] = &[
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH", "SCMP_ARCH_SHEB",
];

const EPERM: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProfileJson {
    default_action: String,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<String>>,
    arch_map: Option<Vec<ArchMapJson>>,
    syscalls: Option<Vec<SyscallJson>>,
    listener_path: Option<String>,
    listener_metadata: Option<String>,
    flags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ArchMapJson {
    architecture: String,
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SyscallJson {
    /// The single-name form of old profiles.
    name: Option<String>,
    names: Option<Vec<String>>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<ArgJson>>,
    #[serde(rename = "comment")]
    _comment: Option<String>,
    includes: Option<FilterJson>,
    excludes: Option<FilterJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ArgJson {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FilterJson {
    caps: Option<Vec<String>>,
    arches: Option<Vec<String>>,
    min_kernel: Option<String>,
}

fn invalid(field: String, reason: impl Into<String>) -> ProfileFileError {
    ProfileFileError::Field {
        field,
        reason: reason.into(),
    }
}

/// Parses and validates a profile file's text.
pub fn parse_profile(text: &str) -> Result<SeccompProfile, ProfileFileError> {
    if text.len() > MAX_PROFILE_BYTES {
        return Err(ProfileFileError::TooLarge {
            bytes: text.len(),
            max: MAX_PROFILE_BYTES,
        });
    }
    let json: ProfileJson = serde_json::from_str(text).map_err(|e| ProfileFileError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    if json.listener_path.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(invalid(
            "listenerPath".into(),
            "notify listeners are not supported",
        ));
    }
    let _ = json.listener_metadata;
    if let Some(flag) = json.flags.iter().flatten().next() {
        return Err(invalid(
            "flags".into(),
            format!("{flag:?}: filter flags are not supported"),
        ));
    }
    for (i, arch) in json.architectures.iter().flatten().enumerate() {
        check_arch(arch, format!("architectures[{i}]"))?;
    }
    for (i, entry) in json.arch_map.iter().flatten().enumerate() {
        check_arch(&entry.architecture, format!("archMap[{i}].architecture"))?;
        for (j, sub) in entry.sub_architectures.iter().flatten().enumerate() {
            check_arch(sub, format!("archMap[{i}].subArchitectures[{j}]"))?;
        }
    }
    let default_action = action(
        &json.default_action,
        json.default_errno_ret,
        "defaultAction",
        "defaultErrnoRet",
    )?;
    let rules = json
        .syscalls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, s)| rule(s, &format!("syscalls[{i}]")))
        .collect::<Result<_, _>>()?;
    let profile = SeccompProfile {
        default_action,
        rules,
    };
    profile.validate()?;
    Ok(profile)
}

fn check_arch(name: &str, field: String) -> Result<(), ProfileFileError> {
    if SCMP_ARCHES.contains(&name) {
        Ok(())
    } else {
        Err(invalid(field, format!("unknown architecture {name:?}")))
    }
}

/// `field` names the action, `errno_field` its errno (`defaultErrnoRet`, `...errnoRet`).
fn action(
    name: &str,
    errno: Option<u32>,
    field: &str,
    errno_field: &str,
) -> Result<SeccompAction, ProfileFileError> {
    let data = |default: u32| {
        let value = errno.unwrap_or(default);
        u16::try_from(value).map_err(|_| {
            invalid(
                errno_field.into(),
                format!("{value} is not between 0 and 4095"),
            )
        })
    };
    let action = match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => return Ok(SeccompAction::Errno(data(EPERM)?)),
        "SCMP_ACT_TRACE" => return Ok(SeccompAction::Trace(data(EPERM)?)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_NOTIFY" => {
            return Err(invalid(
                field.into(),
                "SCMP_ACT_NOTIFY is not supported (no listener)",
            ))
        }
        other => return Err(invalid(field.into(), format!("unknown action {other:?}"))),
    };
    match errno {
        Some(value) => Err(invalid(
            errno_field.into(),
            format!("{value} given for {name}, which returns no errno"),
        )),
        None => Ok(action),
    }
}

fn rule(s: SyscallJson, at: &str) -> Result<SyscallRule, ProfileFileError> {
    let names: Vec<String> = s
        .name
        .into_iter()
        .chain(s.names.unwrap_or_default())
        .collect();
    let action = action(
        &s.action,
        s.errno_ret,
        &format!("{at}.action"),
        &format!("{at}.errnoRet"),
    )?;
    let args = s
        .args
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(k, a)| arg(a, &format!("{at}.args[{k}]")))
        .collect::<Result<_, _>>()?;
    Ok(SyscallRule {
        names,
        action,
        args,
        includes: filter(s.includes, &format!("{at}.includes"))?,
        excludes: filter(s.excludes, &format!("{at}.excludes"))?,
    })
}

fn arg(a: ArgJson, at: &str) -> Result<ArgCondition, ProfileFileError> {
    let op = match a.op.as_str() {
        "SCMP_CMP_NE" => ArgOp::NotEqual,
        "SCMP_CMP_LT" => ArgOp::LessThan,
        "SCMP_CMP_LE" => ArgOp::LessOrEqual,
        "SCMP_CMP_EQ" => ArgOp::Equal,
        "SCMP_CMP_GE" => ArgOp::GreaterOrEqual,
        "SCMP_CMP_GT" => ArgOp::GreaterThan,
        "SCMP_CMP_MASKED_EQ" => ArgOp::MaskedEqual,
        other => {
            return Err(invalid(
                format!("{at}.op"),
                format!("unknown operator {other:?}"),
            ))
        }
    };
    let index = u8::try_from(a.index).map_err(|_| {
        invalid(
            format!("{at}.index"),
            format!("{} is not between 0 and 5", a.index),
        )
    })?;
    Ok(ArgCondition {
        index,
        op,
        value: a.value,
        value_two: a.value_two,
    })
}

fn filter(f: Option<FilterJson>, at: &str) -> Result<RuleFilter, ProfileFileError> {
    let f = f.unwrap_or_default();
    let min_kernel = f
        .min_kernel
        .map(|text| {
            kernel_version(&text).ok_or_else(|| {
                invalid(
                    format!("{at}.minKernel"),
                    format!("{text:?} is not MAJOR.MINOR"),
                )
            })
        })
        .transpose()?;
    Ok(RuleFilter {
        caps: f.caps.unwrap_or_default(),
        arches: f.arches.unwrap_or_default(),
        min_kernel,
    })
}

fn kernel_version(text: &str) -> Option<KernelVersion> {
    let (major, minor) = text.split_once('.')?;
    Some(KernelVersion {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
    })
}
