//! `coracle rollout ls|show|pause|resume|abort|rollback`: tables for humans.

use anyhow::bail;
use clap::{Args, Subcommand};

use super::{ApiArgs, ApiClient};
use crate::rollout::parse_waves;
use crate::store::{DeviceStatus, RolloutRecord};

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: RolloutSubcommand,
}

#[derive(Debug, Subcommand)]
enum RolloutSubcommand {
    /// List rollouts, newest first.
    Ls,
    /// Show one rollout with every device's progress.
    Show { id: i64 },
    /// Stop starting new waves (devices already reached keep the new version).
    Pause { id: i64 },
    /// Continue a paused rollout; the failures so far are accepted.
    Resume { id: i64 },
    /// Stop for good and leave every device as it is.
    Abort { id: i64 },
    /// Give every device the rollout reached its previous app again.
    Rollback { id: i64 },
}

/// Parses `30s`, `5m`, `1h` or plain seconds.
pub fn parse_duration_s(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 5m or 1h"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{text:?}: unit must be s, m or h")),
    };
    Ok(n * scale)
}

fn count(rollout: &RolloutRecord, status: DeviceStatus) -> usize {
    rollout
        .devices
        .iter()
        .filter(|d| d.status == status)
        .count()
}

fn waves_total(rollout: &RolloutRecord) -> usize {
    parse_waves(&rollout.waves).map_or(0, |w| w.len())
}

/// The rollout's summary lines and its device table.
/// Prints a rollout just started and, with `wait`, follows it to its end (`Err` when it
/// pauses, is rolled back or the wait times out).
pub fn report_started(
    api: &ApiClient,
    rollout: &RolloutRecord,
    wait: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    println!(
        "rollout {} started: {} to {} device(s)",
        rollout.id,
        rollout.app,
        rollout.devices.len()
    );
    print_rollout(rollout);
    match wait {
        Some(timeout) => super::deploy_wait::wait_for_rollout(api, rollout.id, timeout),
        None => Ok(()),
    }
}

pub fn print_rollout(rollout: &RolloutRecord) {
    println!(
        "rollout {}: {} to {} ({} devices), {}, wave {}/{}",
        rollout.id,
        rollout.app,
        rollout.selector,
        rollout.devices.len(),
        rollout.phase.as_str().replace('_', " "),
        rollout.wave + 1,
        waves_total(rollout)
    );
    println!(
        "waves {}, max failures {}, apply timeout {} s, health window {} s{}",
        rollout.waves,
        rollout.max_failures,
        rollout.apply_timeout_s,
        rollout.health_window_s,
        if rollout.rollback_on_failure {
            ", rollback on failure"
        } else {
            ""
        }
    );
    if let Some(reason) = &rollout.reason {
        println!("reason: {reason}");
    }
    println!();
    println!(
        "{:<24} {:<12} {:>6} {:>9}  REASON",
        "DEVICE", "STATUS", "GEN", "ROLLBACK"
    );
    let generation = |g: Option<u64>| g.map_or("-".to_string(), |g| g.to_string());
    for d in &rollout.devices {
        println!(
            "{:<24} {:<12} {:>6} {:>9}  {}",
            d.device.as_str(),
            d.status.as_str(),
            generation(d.generation),
            generation(d.rollback_generation),
            d.reason.as_deref().unwrap_or("")
        );
    }
}

pub fn run(args: RolloutArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    let (id, verb, done) = match args.command {
        RolloutSubcommand::Ls => {
            let rollouts: Vec<RolloutRecord> = api.get("list rollouts", "/rollouts")?;
            if args.api.json {
                return super::output::print_json(&rollouts);
            }
            println!(
                "{:>4} {:<20} {:<12} {:>6} {:>8} {:>8} {:>7}  SELECTOR",
                "ID", "APP", "PHASE", "WAVE", "DEVICES", "HEALTHY", "FAILED"
            );
            for r in rollouts {
                println!(
                    "{:>4} {:<20} {:<12} {:>6} {:>8} {:>8} {:>7}  {}",
                    r.id,
                    r.app,
                    r.phase.as_str(),
                    format!("{}/{}", r.wave + 1, waves_total(&r)),
                    r.devices.len(),
                    count(&r, DeviceStatus::Healthy),
                    count(&r, DeviceStatus::Failed),
                    r.selector
                );
            }
            return Ok(());
        }
        RolloutSubcommand::Show { id } => {
            let rollout: RolloutRecord = api.get("show rollout", &format!("/rollouts/{id}"))?;
            if args.api.json {
                return super::output::print_json(&rollout);
            }
            print_rollout(&rollout);
            return Ok(());
        }
        RolloutSubcommand::Pause { id } => (id, "pause", "paused"),
        RolloutSubcommand::Resume { id } => (id, "resume", "resumed"),
        RolloutSubcommand::Abort { id } => (id, "abort", "aborted"),
        RolloutSubcommand::Rollback { id } => (id, "rollback", "rolled back"),
    };
    let rollout: RolloutRecord = api.send(
        &format!("{verb} rollout"),
        "POST",
        &format!("/rollouts/{id}/{verb}"),
        &serde_json::json!({}),
    )?;
    if rollout.id != id {
        bail!(
            "the API answered with rollout {} instead of {id}",
            rollout.id
        );
    }
    if args.api.json {
        return super::output::print_json(&rollout);
    }
    println!("rollout {id} {done}");
    print_rollout(&rollout);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_s("30s"), Ok(30));
        assert_eq!(parse_duration_s("5m"), Ok(300));
        assert_eq!(parse_duration_s("45"), Ok(45));
        assert!(parse_duration_s("5d").is_err());
        assert!(parse_duration_s("s").is_err());
    }
}
