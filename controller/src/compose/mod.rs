//! The docker-compose subset Coracle deploys (DESIGN.md §7), read as Docker Compose reads
//! it (`document`): merge keys, `x-*` fields, interpolation with the client's variables
//! (`interpolate`, `context`), `env_file` (`env_file`, `dotenv`), profiles (`profiles`);
//! keys a device cannot run yet refused by name (`refused`), typos refused as unknown keys.
//! Then `to_specs` turns each service into a proto `ServiceSpec`, resolving `image` tags to
//! digests through a caller-given function and `security_opt` seccomp profiles from the
//! files sent with the app (`seccomp`), and checks each spec with `ServiceSpec::validate`
//! (what a device could not run is refused here, at deploy time, not by the device after it
//! stopped the old version), then the app as a whole (a host port published once). Networking
//! is Compose's: a service without `network_mode` joins the app's `default` network
//! (`networks`, `ports`, `resolv`). Every error names the service, the field and the line.

mod context;
mod depends;
mod document;
mod dotenv;
mod env_file;
mod health;
mod interpolate;
mod labels;
mod lenient;
mod lifecycle;
mod lines;
mod logging;
mod long_volumes;
mod model;
mod mounts;
mod named_volumes;
mod networks;
mod ports;
mod profiles;
pub mod refused;
mod resolv;
mod resources;
pub mod seccomp;
mod tmpfs;
mod tuning;
mod units;

use coracle_proto::{DesiredState, DeviceId, ImageRef, RestartPolicy, ServiceName, ServiceSpec};

pub use context::ComposeContext;
pub use document::{load, Loaded};
pub use env_file::EnvFileRef;
pub use model::{ComposeFile, ComposeService};
use model::{Environment, StringOrList, VolumeEntry};
pub use seccomp::{profile_paths, ProfileFiles};

/// Why an app file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error("app file, line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("app file, line {line}: service {service:?}, field {field}: {reason}")]
    Field {
        line: usize,
        service: String,
        field: &'static str,
        reason: String,
    },
    /// A Compose key a device does not run yet (`refused`), by its dotted path.
    #[error("app file, line {line}: {key}: {reason}")]
    Refused {
        line: usize,
        key: String,
        reason: String,
    },
    /// A value whose `$` could not be interpolated (a required variable, a bad template, or
    /// a raw API client's app).
    #[error("app file, line {line}: {key}: {reason}")]
    Interpolate {
        line: usize,
        key: String,
        reason: String,
    },
    /// A field the compose shape allows but a device could not run (`cap_add: [NOT_A_CAP]`,
    /// a volume target with `..`): the same check the agent makes before touching anything.
    #[error("app file, line {line}: {invalid}")]
    Invalid {
        line: usize,
        invalid: coracle_proto::InvalidDesired,
    },
    #[error("app file has no services")]
    NoServices,
}

impl ComposeError {
    /// The line of the app text the error is about (0: none).
    pub fn line(&self) -> usize {
        match self {
            ComposeError::Syntax { line, .. }
            | ComposeError::Field { line, .. }
            | ComposeError::Refused { line, .. }
            | ComposeError::Interpolate { line, .. }
            | ComposeError::Invalid { line, .. } => *line,
            ComposeError::NoServices => 0,
        }
    }
}

/// Parses an app sent without a client context: nothing interpolated, no env files, no
/// profiles active.
pub fn parse(text: &str) -> Result<ComposeFile, ComposeError> {
    load(text, &ComposeContext::default()).map(|loaded| loaded.file)
}

/// The `env_file:` entries of an app, after interpolation with `context`.
pub fn env_file_references(
    text: &str,
    context: &ComposeContext,
) -> Result<Vec<EnvFileRef>, ComposeError> {
    let (root, _) = document::interpolated(text, context)?;
    env_file::references(text, &root, &context.profiles)
}

/// Parses text in Docker's `.env` syntax (see `dotenv`); `lookup` gives outside values.
pub fn parse_env_file(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, dotenv::DotenvError> {
    dotenv::parse(text, lookup)
}

/// The 1-based line of `field:` inside `service:`'s block (the service's line when the
/// field is not written there, 0 when the service is not found).
fn line_of(text: &str, service: &str, field: &str) -> usize {
    lines::line_of_path(text, &["services", service, field])
}

/// Converts every service into a `ServiceSpec`. `resolve` pins an `image:` value to a
/// digest (the controller asks its registry); its error text is shown under `image`.
/// `profiles` holds the seccomp profile files the app names (see `seccomp`).
pub fn to_specs(
    text: &str,
    file: &ComposeFile,
    profiles: &ProfileFiles,
    resolve: &dyn Fn(&str) -> Result<ImageRef, String>,
) -> Result<Vec<ServiceSpec>, ComposeError> {
    named_volumes::check(text, file)?;
    long_volumes::check(text, file)?;
    networks::check(text, file)?;
    let specs: Vec<ServiceSpec> = file
        .services
        .iter()
        .map(|(name, service)| {
            let field_error = |field: &'static str, reason: String| ComposeError::Field {
                line: line_of(text, name, field),
                service: name.clone(),
                field,
                reason,
            };
            let spec = to_spec(name, service, profiles, resolve, file)
                .map_err(|(f, r)| field_error(f, r))?;
            spec.validate()
                .map_err(|invalid| invalid_error(text, invalid))?;
            Ok(spec)
        })
        .collect::<Result<_, ComposeError>>()?;
    // What holds across services (a host port published once, dependency cycles), checked
    // as the device will; the device and generation are placeholders.
    let state = DesiredState {
        device: "compose".parse::<DeviceId>().expect("a valid device id"),
        generation: Default::default(),
        services: specs,
        registries: Vec::new(),
    };
    state
        .validate()
        .map_err(|invalid| invalid_error(text, invalid))?;
    Ok(state.services)
}

/// A spec the device would refuse, at the line of the field at fault.
fn invalid_error(text: &str, invalid: coracle_proto::InvalidDesired) -> ComposeError {
    let service = invalid.service().map(|s| s.to_string()).unwrap_or_default();
    let field = invalid.field().unwrap_or("image");
    let field = field.split('.').next().unwrap_or(field);
    ComposeError::Invalid {
        line: line_of(text, &service, field),
        invalid,
    }
}

type FieldResult<T> = Result<T, (&'static str, String)>;

fn to_spec(
    name: &str,
    s: &ComposeService,
    profiles: &ProfileFiles,
    resolve: &dyn Fn(&str) -> Result<ImageRef, String>,
    file: &ComposeFile,
) -> FieldResult<ServiceSpec> {
    let all = &file.services;
    let service_name: ServiceName = name
        .parse()
        .map_err(|e: coracle_proto::IdError| ("name", e.to_string()))?;
    let image = resolve(&s.image).map_err(|e| ("image", e))?;
    let mut spec = ServiceSpec::new(service_name, image);
    spec.command = s
        .command
        .clone()
        .map(StringOrList::into_args)
        .unwrap_or_default();
    spec.entrypoint = s
        .entrypoint
        .clone()
        .map(StringOrList::into_args)
        .unwrap_or_default();
    spec.env = match &s.environment {
        None => Vec::new(),
        Some(env) => env.pairs().map_err(|e| ("environment", e))?,
    };
    spec.working_dir = s.working_dir.clone();
    spec.user = s.user.clone();
    spec.read_only_rootfs = s.read_only.unwrap_or(false);
    spec.cap_add = s.cap_add.clone();
    spec.cap_drop = s.cap_drop.clone();
    spec.seccomp = seccomp::policy(&s.security_opt, profiles).map_err(|e| ("security_opt", e))?;
    spec.lifecycle = lifecycle::lifecycle(s)?;
    spec.restart = restart_policy(s.restart.as_deref())?;
    spec.network = networks::mode(s)?;
    spec.resources = resources::resources(s)?;
    spec.tuning = tuning::tuning(s)?;
    spec.tuning.extend(resources::reservation(s)?);
    spec.tuning
        .extend(networks::attachments(s, spec.network, &file.networks)?);
    spec.tuning.extend(ports::entries(s)?);
    spec.tuning.extend(resolv::entries(s)?);
    spec.tuning.extend(tmpfs::entries(s)?);
    spec.tuning.extend(logging::entries(s)?);
    if let Some(labels) = &s.labels {
        labels::pairs(labels).map_err(|e| ("labels", e))?;
    }
    volumes(s, &mut spec)?;
    spec.devices = s
        .devices
        .iter()
        .map(|d| mounts::device(d))
        .collect::<Result<_, _>>()
        .map_err(|e| ("devices", e))?;
    // After the network, volumes and devices it depends on.
    spec.update.order = lifecycle::update_order(s, &spec)?;
    health_check(s, &mut spec)?;
    spec.depends_on = depends::dependencies(s, all)?;
    Ok(spec)
}

/// `restart:` as Docker spells it.
fn restart_policy(restart: Option<&str>) -> FieldResult<RestartPolicy> {
    Ok(match restart {
        None | Some("no") => RestartPolicy::No,
        Some("always") => RestartPolicy::Always,
        Some("unless-stopped") => RestartPolicy::UnlessStopped,
        Some("on-failure") => RestartPolicy::OnFailure { max_retries: 0 },
        Some(other) => match other.strip_prefix("on-failure:").map(str::parse) {
            Some(Ok(max_retries)) => RestartPolicy::OnFailure { max_retries },
            _ => {
                return Err((
                    "restart",
                    format!("{other:?} is not no, always, unless-stopped or on-failure[:N]"),
                ))
            }
        },
    })
}

/// `volumes:`, short and long entries (a long `tmpfs` entry becomes a tmpfs tuning).
fn volumes(s: &ComposeService, spec: &mut ServiceSpec) -> FieldResult<()> {
    for entry in &s.volumes {
        match entry {
            VolumeEntry::Short(text) => {
                spec.volumes
                    .push(mounts::volume(text).map_err(|e| ("volumes", e))?);
            }
            // `long_volumes::check` has named the entry's line for any error already.
            VolumeEntry::Long(long) => {
                match long_volumes::mount(long).map_err(|e| ("volumes", e.to_string()))? {
                    long_volumes::Mounted::Volume(v) => spec.volumes.push(v),
                    long_volumes::Mounted::Tmpfs(t) => {
                        spec.tuning.push(coracle_proto::Tuning::Tmpfs(t));
                    }
                }
            }
        }
    }
    Ok(())
}

/// `healthcheck:` and its `start_interval`, which the device keeps as a tuning.
fn health_check(s: &ComposeService, spec: &mut ServiceSpec) -> FieldResult<()> {
    spec.health = s
        .healthcheck
        .as_ref()
        .map(health::health)
        .transpose()
        .map(Option::flatten)
        .map_err(|e| ("healthcheck", e))?;
    if spec.health.is_some() {
        let check = s.healthcheck.as_ref();
        if let Some(ms) = check.map(health::start_interval).transpose()?.flatten() {
            spec.tuning
                .push(coracle_proto::Tuning::HealthStartInterval(ms));
        }
    }
    Ok(())
}

impl Environment {
    fn pairs(&self) -> Result<Vec<(String, String)>, String> {
        match self {
            Environment::Map(map) => Ok(map
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect()),
            Environment::List(list) => list
                .iter()
                .map(|item| {
                    item.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| format!("{item:?} must be NAME=VALUE"))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod refused_tests;
#[cfg(test)]
mod tests;
