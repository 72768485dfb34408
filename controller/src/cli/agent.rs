//! `coracle agent release FILE [--version V] [--arch P]`, `coracle agent ls` and
//! `coracle agent rollout VERSION --to KEY=VALUE [--waves …]`: over-the-air updates of the
//! device agent. A rollout takes the same flags as `coracle deploy --to` and is followed
//! with `coracle rollout show|pause|resume|abort|rollback` like any other.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::rollout::parse_duration_s;
use super::{ApiArgs, ApiClient};
use crate::agent_release::Release;
use crate::api::agent::CreateAgentRolloutRequest;
use crate::store::RolloutRecord;

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Store an agent binary (as `cross/build.sh` makes it) as a release.
    Release {
        /// The `coracle-agent` binary.
        file: PathBuf,
        /// Its version (default: the version stamped in the binary; must agree with it).
        #[arg(long)]
        version: Option<String>,
        /// Its platform, e.g. linux/arm64 (default: from the ELF header; needed for 32-bit
        /// ARM: linux/arm/v6 or linux/arm/v7).
        #[arg(long)]
        arch: Option<String>,
    },
    /// List the releases, one row per platform build.
    Ls,
    /// Roll a release out to every device with a tag, in waves.
    Rollout(RolloutFlags),
}

#[derive(Debug, Args)]
struct RolloutFlags {
    /// The release version.
    version: String,
    /// Roll out to every device with this tag.
    #[arg(long, value_name = "KEY=VALUE")]
    to: String,
    /// Cumulative wave sizes: counts or percentages, ending with 100%.
    #[arg(long, default_value = "1,10%,100%")]
    waves: String,
    /// Failed devices tolerated before the rollout pauses: a count or a percentage.
    #[arg(long, default_value = "0")]
    max_failures: String,
    /// How long each device must stay healthy on the new agent (e.g. 30s, 5m).
    #[arg(long, default_value = "60s", value_parser = parse_duration_s)]
    health_window: u64,
    /// When failures pause the rollout, send the failing wave its previous agent at once.
    #[arg(long)]
    rollback_on_failure: bool,
    /// How long a device may take to download, start and report the new agent.
    #[arg(long, default_value = "10m", value_parser = parse_duration_s)]
    apply_timeout: u64,
    /// Wait until the rollout completes (exit 0) or pauses or is rolled back (exit 1).
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long (exit 1).
    #[arg(long, default_value = "30m", value_parser = parse_duration_s, requires = "wait")]
    timeout: u64,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    match args.command {
        AgentCommand::Release {
            file,
            version,
            arch,
        } => {
            let binary = std::fs::read(&file)
                .with_context(|| format!("read agent binary {}", file.display()))?;
            let mut query = Vec::new();
            if let Some(version) = &version {
                query.push(format!(
                    "version={}",
                    super::api_client::query_value(version)
                ));
            }
            if let Some(arch) = &arch {
                query.push(format!("platform={}", super::api_client::query_value(arch)));
            }
            let path = match query.is_empty() {
                true => "/agent/releases".to_string(),
                false => format!("/agent/releases?{}", query.join("&")),
            };
            let what = format!("release {}", file.display());
            let release: Release = api.post_bytes(&what, &path, &binary)?;
            if args.api.json {
                return super::output::print_json(&release);
            }
            println!(
                "released agent {} for {} ({} bytes, {})",
                release.version, release.platform, release.size, release.binary
            );
        }
        AgentCommand::Ls => {
            let releases: Vec<Release> = api.get("list agent releases", "/agent/releases")?;
            if args.api.json {
                return super::output::print_json(&releases);
            }
            println!(
                "{:<20} {:<14} {:>12}  BINARY",
                "VERSION", "PLATFORM", "BYTES"
            );
            for r in releases {
                println!(
                    "{:<20} {:<14} {:>12}  {}",
                    r.version, r.platform, r.size, r.binary
                );
            }
        }
        AgentCommand::Rollout(flags) => {
            let request = CreateAgentRolloutRequest {
                version: flags.version,
                selector: flags.to.into(),
                waves: flags.waves,
                max_failures: flags.max_failures.into(),
                health_window_s: flags.health_window,
                apply_timeout_s: Some(flags.apply_timeout),
                rollback_on_failure: flags.rollback_on_failure,
            };
            let rollout: RolloutRecord =
                api.send("start agent rollout", "POST", "/agent/rollouts", &request)?;
            if args.api.json && !flags.wait {
                return super::output::print_json(&rollout);
            }
            let wait = flags.wait.then(|| Duration::from_secs(flags.timeout));
            super::rollout::report_started(&api, &rollout, wait)?;
        }
    }
    Ok(())
}
