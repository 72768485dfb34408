//! `coracle admin rotate`: a new admin token (written to the data dir's `admin.token` by the
//! controller, printed here); the old one and every dashboard session stop working.
//! `coracle admin rotate-deployment-key`: a new deployment signing key.

use clap::{Args, Subcommand};

use super::{ApiArgs, ApiClient};
use crate::api::admin::RotatedAdmin;
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
    }
    Ok(())
}
