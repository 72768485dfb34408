//! `security_opt` → the service's [`SeccompPolicy`]. `seccomp=unconfined` turns the filter
//! off, `seccomp=FILE` names a Docker-format profile (`docker_json.rs`). The file lives on
//! the operator's machine: `coracle deploy` reads every file the app names ([`profile_paths`],
//! relative to the app file) and sends the texts with the app, keyed by the path as written;
//! the controller parses and validates them here and ships the parsed profile in the
//! signed desired state. `no-new-privileges[:true]` is accepted: it is always on.

mod docker_json;

use std::collections::BTreeMap;

use coracle_proto::seccomp::ProfileError;
use coracle_proto::SeccompPolicy;

pub use docker_json::{parse_profile, MAX_PROFILE_BYTES};

use super::ComposeFile;

/// Profile texts sent with an app, by the path the app names them with.
pub type ProfileFiles = BTreeMap<String, String>;

/// Why a profile file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileFileError {
    #[error("{bytes} bytes, more than the {max} a profile may have")]
    TooLarge { bytes: usize, max: usize },
    #[error("line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    #[error(transparent)]
    Invalid(#[from] ProfileError),
}

/// What one `security_opt` entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SecurityOpt<'a> {
    Unconfined,
    Profile(&'a str),
    /// `no-new-privileges`: Coracle's containers always have it; a privileged one only
    /// when asked.
    NoNewPrivileges,
}

/// Docker accepts `key=value` and the older `key:value`.
fn parse_opt(text: &str) -> Result<SecurityOpt<'_>, String> {
    let (key, value) = match text.split_once(['=', ':']) {
        Some((key, value)) => (key, Some(value)),
        None => (text, None),
    };
    match (key, value) {
        ("seccomp", Some("unconfined")) => Ok(SecurityOpt::Unconfined),
        ("seccomp", Some(path)) if !path.is_empty() => Ok(SecurityOpt::Profile(path)),
        ("no-new-privileges", None | Some("true")) => Ok(SecurityOpt::NoNewPrivileges),
        ("no-new-privileges", Some(_)) => Err(format!(
            "{text:?}: Coracle always sets no-new-privileges; it cannot be switched off"
        )),
        _ => Err(format!(
            "{text:?} is not supported (seccomp=unconfined, seccomp=FILE, no-new-privileges)"
        )),
    }
}

/// Whether `security_opt` asks for `no-new-privileges` (always in force, except for a
/// privileged service that does not ask for it, as under Docker).
pub fn asks_no_new_privileges(options: &[String]) -> bool {
    options
        .iter()
        .any(|opt| parse_opt(opt) == Ok(SecurityOpt::NoNewPrivileges))
}

/// The paths of the profile files an app names, each once.
pub fn profile_paths(file: &ComposeFile) -> Vec<String> {
    let mut paths: Vec<String> = file
        .services
        .values()
        .flat_map(|s| &s.security_opt)
        .filter_map(|opt| match parse_opt(opt) {
            Ok(SecurityOpt::Profile(path)) => Some(path.to_string()),
            _ => None,
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The policy a service's `security_opt` entries ask for; the error text is what the
/// operator sees under `security_opt`.
pub fn policy(options: &[String], files: &ProfileFiles) -> Result<SeccompPolicy, String> {
    let mut policy = SeccompPolicy::Default;
    let mut seccomp_given = false;
    for text in options {
        let chosen = match parse_opt(text)? {
            SecurityOpt::NoNewPrivileges => continue,
            SecurityOpt::Unconfined => SeccompPolicy::Unconfined,
            SecurityOpt::Profile(path) => {
                let text = files.get(path).ok_or_else(|| {
                    format!(
                        "seccomp profile {path:?} was not sent with the app \
                         (coracle deploy reads it relative to the app file)"
                    )
                })?;
                let profile =
                    parse_profile(text).map_err(|e| format!("seccomp profile {path:?}: {e}"))?;
                SeccompPolicy::Profile(profile)
            }
        };
        if seccomp_given {
            return Err("names seccomp more than once".into());
        }
        seccomp_given = true;
        policy = chosen;
    }
    Ok(policy)
}

#[cfg(test)]
mod tests;
