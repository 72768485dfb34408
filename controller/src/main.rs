//! `coracle`: the controller and operator CLI. Parses arguments, starts tracing, runs.

use std::time::Duration;

use clap::Parser;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

fn main() -> std::process::ExitCode {
    let cli = coracle_controller::cli::Cli::parse();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(env_filter().and(mqtt5_limit())),
        )
        .init();
    match coracle_controller::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// The embedded broker logs per failed accept and per misbehaving client: 10 lines per
/// statement per 10 s at most.
fn mqtt5_limit() -> coracle_controller::log_limit::CallsiteLimit {
    coracle_controller::log_limit::CallsiteLimit::new("mqtt5", Duration::from_secs(10), 10)
}
