//! `coracle admin rotate`: a new admin token (written to the data dir's `admin.token` by the
//! controller, printed here); the old one and every dashboard session stop working.

use clap::{Args, Subcommand};

use super::{ApiArgs, ApiClient};
use crate::api::admin::RotatedAdmin;

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
    }
    Ok(())
}
