//! `coracle deploy APP.yml --device NAME` sends an app to one device; `--to key=value`
//! starts a staged rollout to every device with that tag instead. `--wait` follows either
//! to its end (`deploy_wait`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::app_context;
use super::deploy_wait::wait_for_device;
use super::rollout::parse_duration_s;
use super::{ApiArgs, ApiClient};
use crate::api::deploy::{DeployRequest, DeployResponse};
use crate::api::rollouts::CreateRolloutRequest;
use crate::compose::{self, seccomp::MAX_PROFILE_BYTES, ComposeFile};
use crate::store::RolloutRecord;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["device", "to"])))]
pub struct DeployArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The app: a docker-compose file.
    file: PathBuf,
    /// The device to deploy to (at once, no rollout).
    #[arg(long)]
    device: Option<String>,
    /// Roll out to every device with this tag (key=value), in waves.
    #[arg(long, value_name = "KEY=VALUE")]
    to: Option<String>,
    /// Cumulative wave sizes: counts or percentages, ending with 100%.
    #[arg(long, default_value = "1,10%,100%", conflicts_with = "device")]
    waves: String,
    /// Failed devices tolerated before the rollout pauses: a count or a percentage.
    #[arg(long, default_value = "0", conflicts_with = "device")]
    max_failures: String,
    /// How long each device must stay healthy on the new version (e.g. 30s, 5m).
    #[arg(long, default_value = "60s", value_parser = parse_duration_s, conflicts_with = "device")]
    health_window: u64,
    /// When failures pause the rollout, roll the failing wave back at once.
    #[arg(long, conflicts_with = "device")]
    rollback_on_failure: bool,
    /// How long a device may take to pull and start the new version before it counts as
    /// failed; its health window starts once it runs it (e.g. 10m).
    #[arg(long, default_value = "10m", value_parser = parse_duration_s, conflicts_with = "device")]
    apply_timeout: u64,
    /// Wait until the device commits the new version (exit 0) or rolls it back or fails to
    /// apply it (exit 1, with the reason); with --to, until the rollout completes.
    #[arg(long)]
    wait: bool,
    /// Read variables from this file instead of the `.env` beside the app (repeatable, a
    /// later file wins; the process environment wins over all).
    #[arg(long = "env-file", value_name = "PATH")]
    env_files: Vec<PathBuf>,
    /// Activate a profile: services with `profiles:` run only when one is active
    /// (repeatable; default: COMPOSE_PROFILES, comma-separated; `*` for all).
    #[arg(long = "profile", value_name = "NAME")]
    profiles: Vec<String>,
    /// Give up waiting after this long (exit 1), e.g. 90s, 10m.
    #[arg(long, default_value = "10m", value_parser = parse_duration_s, requires = "wait")]
    timeout: u64,
}

pub fn run(args: DeployArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    let compose = std::fs::read_to_string(&args.file)
        .with_context(|| format!("read app file {}", args.file.display()))?;
    let (context, loaded) =
        app_context::read(&args.file, &compose, &args.env_files, &args.profiles)?;
    let seccomp_profiles = read_profiles(&args.file, &loaded.file)?;
    if let Some(selector) = args.to {
        let app = args
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        let request = CreateRolloutRequest {
            compose,
            selector: selector.into(),
            waves: args.waves,
            max_failures: args.max_failures.into(),
            health_window_s: args.health_window,
            apply_timeout_s: Some(args.apply_timeout),
            app,
            rollback_on_failure: args.rollback_on_failure,
            seccomp_profiles,
            context,
        };
        let rollout: RolloutRecord = api.send("start rollout", "POST", "/rollouts", &request)?;
        let wait = args.wait.then(|| Duration::from_secs(args.timeout));
        return super::rollout::report_started(&api, &rollout, wait);
    }
    let device = args.device.context("--device or --to is required")?;
    let answer: DeployResponse = api.send(
        "deploy",
        "POST",
        &format!("/devices/{device}/deploy"),
        &DeployRequest {
            compose,
            seccomp_profiles,
            context,
        },
    )?;
    println!(
        "deployed {} to {} as generation {}",
        answer.services.join(", "),
        answer.device,
        answer.generation
    );
    if !answer.published {
        eprintln!(
            "the broker is unreachable: generation {} is stored and goes out when it is back",
            answer.generation
        );
    }
    if args.wait {
        wait_for_device(
            &api,
            &answer.device,
            answer.generation.0,
            Duration::from_secs(args.timeout),
        )?;
    }
    Ok(())
}

/// The seccomp profile files the app names (`security_opt: seccomp=FILE`), read relative to
/// the app file, keyed by the path as written.
fn read_profiles(app: &Path, file: &ComposeFile) -> anyhow::Result<BTreeMap<String, String>> {
    let dir = app.parent().unwrap_or(Path::new("."));
    let mut profiles = BTreeMap::new();
    for path in compose::profile_paths(file) {
        let full = dir.join(&path);
        let context = || {
            format!(
                "read seccomp profile {} (security_opt in {})",
                full.display(),
                app.display()
            )
        };
        let bytes = std::fs::metadata(&full).with_context(context)?.len();
        if bytes > MAX_PROFILE_BYTES as u64 {
            anyhow::bail!(
                "seccomp profile {}: {bytes} bytes, more than the {MAX_PROFILE_BYTES} a profile may have",
                full.display()
            );
        }
        let text = std::fs::read_to_string(&full).with_context(context)?;
        profiles.insert(path, text);
    }
    Ok(profiles)
}
