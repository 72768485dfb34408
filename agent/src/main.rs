//! `coracle-agent`: the device daemon's entry point. Parses arguments, starts tracing, runs.

use clap::Parser;

/// Coracle device agent.
#[derive(Debug, Parser)]
#[command(name = "coracle-agent", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(
        protocol = coracle_proto::PROTOCOL_VERSION,
        "coracle-agent has no daemon yet"
    );
}
