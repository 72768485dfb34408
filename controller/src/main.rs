//! `coracle`: the controller and operator CLI. Parses arguments, starts tracing, runs.

use std::time::Duration;

use clap::Parser;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

fn main() -> std::process::ExitCode {
    let cli = coracle_controller::cli::Cli::parse();
    if !matches!(cli.command, coracle_controller::cli::Command::Serve(_)) {
        quiet_on_broken_pipe();
    }
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
            std::process::ExitCode::from(coracle_controller::cli::exit::code_of(&err))
        }
    }
}

/// `coracle device ls | head`: the CLI ends on SIGPIPE as `ls` and `cat` do, instead of
/// Rust's default (SIGPIPE ignored, so the next print fails and panics). Never for
/// `serve`, whose sockets must get EPIPE as an error.
fn quiet_on_broken_pipe() {
    // SAFETY: restoring a signal's default disposition before any thread starts; no
    // handler runs, so nothing here can race or re-enter.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
