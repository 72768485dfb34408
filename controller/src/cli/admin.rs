//! `coracle admin rotate`: a new admin token (written to the data dir's `admin.token` by the
//! controller, printed here); the old one and every dashboard session stop working.
//! `coracle admin rotate-deployment-key`: a new deployment signing key.
//! `coracle admin keys`: the deployment key, the retired ones, and which key and pull token
//! each device holds.

use clap::{Args, Subcommand};

use super::{ApiArgs, ApiClient};
use crate::api::admin::RotatedAdmin;
use crate::api::keys::KeysStatus;
use crate::deployment_keys::Rotated;

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Replace the admin token; devices keep their registry and broker access.
    Rotate,
    /// Replace the deployment signing key. Devices follow a link signed by the old key
    /// (offline ones when they are back); new bootstrap files pin the new key.
    RotateDeploymentKey,
    /// Show the deployment key, the retired ones, and which deployment key and pull token
    /// each device holds (who has followed a rotation).
    Keys,
}

pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    match args.command {
        AdminCommand::Rotate => {
            let rotated: RotatedAdmin = api.send(
                "rotate the admin token",
                "POST",
                "/admin/rotate",
                &serde_json::json!({}),
            )?;
            eprintln!(
                "admin token rotated (written to the controller's admin.token); {} dashboard sessions ended; the new token:",
                rotated.sessions_ended
            );
            println!("{}", rotated.token);
        }
        AdminCommand::RotateDeploymentKey => {
            let rotated: Rotated = api.send(
                "rotate the deployment key",
                "POST",
                "/admin/deployment-key/rotate",
                &serde_json::json!({}),
            )?;
            println!(
                "deployment key rotated to {} (epoch {}); {} desired states signed again{}",
                rotated.key_id,
                rotated.epoch,
                rotated.resigned,
                if rotated.skipped > 0 {
                    format!(", {} could not be verified and were left", rotated.skipped)
                } else {
                    String::new()
                }
            );
        }
        AdminCommand::Keys => {
            let status: KeysStatus = api.get("read the keys", "/admin/keys")?;
            if args.api.json {
                return super::output::print_json(&status);
            }
            print!("{}", keys_table(&status));
        }
    }
    Ok(())
}

/// The status as a human reads it: the keys, then one line per device, and a summary of
/// who is behind.
fn keys_table(status: &KeysStatus) -> String {
    use std::fmt::Write as _;
    let current = &status.deployment_key;
    let mut out = format!(
        "deployment key {} (epoch {})\n",
        current.key_id, current.epoch
    );
    for retired in &status.retired {
        let _ = writeln!(
            out,
            "retired key    {} (epoch {}, retired at {})",
            retired.key_id,
            retired.epoch,
            super::output::local_time(Some(retired.retired_unix))
        );
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:<8} {:<24} PULL TOKEN (held/confirmed)",
        "DEVICE", "ONLINE", "DEPLOYMENT KEY"
    );
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for device in &status.devices {
        let key = match (&device.deployment_key_id, device.deployment_key_epoch) {
            (Some(id), Some(epoch)) => format!("{id} ({epoch})"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:<24} {}/{}",
            device.device,
            if device.online { "yes" } else { "no" },
            key,
            or_dash(device.pull_token_epoch.map(|e| e.to_string())),
            device.pull_token_confirmed
        );
    }
    let behind = status
        .devices
        .iter()
        .filter(|d| !d.on_key(current.epoch))
        .count();
    let _ = writeln!(
        out,
        "\n{} of {} devices trust the current deployment key",
        status.devices.len() - behind,
        status.devices.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::keys::{CurrentKey, DeviceKeys};

    #[test]
    fn the_table_names_each_device_and_counts_who_is_behind() {
        let device = |name: &str, epoch: Option<u32>| DeviceKeys {
            device: name.into(),
            online: epoch.is_some(),
            deployment_key_epoch: epoch,
            deployment_key_id: epoch.map(|e| format!("k{e}")),
            pull_token_epoch: epoch.map(|_| 3),
            pull_token_confirmed: 3,
        };
        let status = KeysStatus {
            deployment_key: CurrentKey {
                epoch: 2,
                key_id: "k2".into(),
                public_key: "00".repeat(32),
            },
            retired: Vec::new(),
            devices: vec![
                device("a", Some(2)),
                device("b", Some(1)),
                device("c", None),
            ],
        };
        let table = keys_table(&status);
        assert!(table.starts_with("deployment key k2 (epoch 2)"), "{table}");
        assert!(table.contains("k1 (1)"), "{table}");
        assert!(table.contains("3/3"), "{table}");
        assert!(table.contains("-/3"), "{table}");
        assert!(
            table.ends_with("1 of 3 devices trust the current deployment key\n"),
            "{table}"
        );
    }
}
