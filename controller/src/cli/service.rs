//! `coracle logs DEVICE SERVICE` and `coracle restart DEVICE SERVICE`: one service on one
//! device, asked over the device's own connection (the API's device commands).

use clap::Args;

use super::output::print_json;
use super::{ApiArgs, ApiClient};
use crate::api::commands::{LogsResponse, RestartResponse};

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    api: ApiArgs,
    device: String,
    service: String,
    /// How many of the last lines (the device caps the bytes it sends).
    #[arg(long, short = 'n', default_value_t = 100)]
    lines: u32,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[command(flatten)]
    api: ApiArgs,
    device: String,
    service: String,
}

pub fn run_logs(args: LogsArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    let path = format!(
        "/devices/{}/services/{}/logs?lines={}",
        args.device, args.service, args.lines
    );
    let logs: LogsResponse = api.get("read the service's logs", &path)?;
    if args.api.json {
        return print_json(&logs);
    }
    for line in &logs.lines {
        println!("{line}");
    }
    if logs.truncated {
        eprintln!("(the device cut the tail to its byte limit; ask for fewer lines)");
    }
    Ok(())
}

pub fn run_restart(args: RestartArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    let path = format!("/devices/{}/services/{}/restart", args.device, args.service);
    let restarted: RestartResponse =
        api.send("restart the service", "POST", &path, &serde_json::json!({}))?;
    if args.api.json {
        return print_json(&restarted);
    }
    println!("{}/{} restarted", restarted.device, restarted.service);
    Ok(())
}
