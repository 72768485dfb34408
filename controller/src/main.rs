//! `coracle`: the controller and operator CLI. Parses arguments, starts tracing, runs.

use clap::Parser;

/// Coracle controller and operator CLI.
#[derive(Debug, Parser)]
#[command(name = "coracle", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
}
