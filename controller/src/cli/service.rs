//! `coracle logs DEVICE SERVICE` and `coracle restart DEVICE SERVICE`: one service on one
//! device, asked over the device's own connection (the API's device commands). `logs` with
//! `-f`, `--since` or `--timestamps` streams over a remote session (`api::logs_stream`)
//! until the log ends, or with `-f` until Ctrl-C; without them it is the one-shot tail that
//! agents without sessions answer too.

use std::io::{Read, Write};

use anyhow::Context;
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
    /// How many of the last lines (default: 100, or all with --since/-f/--timestamps).
    #[arg(long, short = 'n', alias = "tail")]
    lines: Option<u32>,
    /// Keep streaming new lines until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only lines since this time: RFC 3339 (2026-12-04T22:00:00Z), Unix seconds, or a
    /// duration back from now (10m, 1h30m).
    #[arg(long)]
    since: Option<String>,
    /// Each line with its time on the device (RFC 3339, nanoseconds).
    #[arg(long, short = 't')]
    timestamps: bool,
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
    if args.follow || args.since.is_some() || args.timestamps {
        return stream_logs(&api, &args);
    }
    let path = format!(
        "/devices/{}/services/{}/logs?lines={}",
        args.device,
        args.service,
        args.lines.unwrap_or(100)
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

/// Copies the streamed log to stdout as it comes.
fn stream_logs(api: &ApiClient, args: &LogsArgs) -> anyhow::Result<()> {
    let mut query = vec![
        format!("follow={}", args.follow),
        format!("timestamps={}", args.timestamps),
    ];
    if let Some(lines) = args.lines {
        query.push(format!("tail={lines}"));
    }
    if let Some(since) = &args.since {
        query.push(format!("since={}", super::api_client::query_value(since)));
    }
    let path = format!(
        "/devices/{}/services/{}/logs/stream?{}",
        args.device,
        args.service,
        query.join("&")
    );
    let mut body = api.get_stream("stream the service's logs", &path)?;
    let mut stdout = std::io::stdout();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = body
            .read(&mut buf)
            .context("stream the service's logs: the stream broke off")?;
        if n == 0 {
            return Ok(());
        }
        stdout.write_all(&buf[..n])?;
        stdout.flush()?;
    }
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
