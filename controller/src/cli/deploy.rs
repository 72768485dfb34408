//! `coracle deploy APP.yml --device NAME`: sends an app to one device through the API.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{ApiArgs, ApiClient};
use crate::api::deploy::{DeployRequest, DeployResponse};

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The app: a docker-compose file.
    file: PathBuf,
    /// The device to deploy to.
    #[arg(long)]
    device: String,
}

pub fn run(args: DeployArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    let compose = std::fs::read_to_string(&args.file)
        .with_context(|| format!("read app file {}", args.file.display()))?;
    let answer: DeployResponse = api.send(
        "deploy",
        "POST",
        &format!("/devices/{}/deploy", args.device),
        &DeployRequest { compose },
    )?;
    println!(
        "deployed {} to {} as generation {}",
        answer.services.join(", "),
        answer.device,
        answer.generation
    );
    Ok(())
}
