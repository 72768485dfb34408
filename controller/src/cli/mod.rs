//! The `coracle` command line: `serve` runs the controller; the other subcommands are the
//! operator's CLI and talk to the controller's HTTP API.

mod admin;
mod agent;
mod api_client;
mod app_context;
mod backup;
mod broker;
mod broker_nats;
mod deploy;
mod deploy_wait;
mod device;
mod exec;
pub mod exit;
mod image_delta;
mod image_removal;
mod image_store;
mod output;
mod progress;
mod raw_terminal;
mod registry_login;
mod rollout;
mod serve;
mod service;
mod token;
mod top;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use api_client::ApiClient;

/// Coracle controller and operator CLI.
#[derive(Debug, Parser)]
#[command(
    name = "coracle",
    version,
    about,
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict, 5 controller unreachable.\n\
                  Environment: CORACLE_DATA_DIR, CORACLE_API, CORACLE_TOKEN stand for --data-dir, --api, --token."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: broker, registry, API.
    Serve(serve::ServeArgs),
    /// Enrol, list, tag and remove devices.
    Device(device::DeviceArgs),
    /// Deploy an app (compose file) to one device, or roll it out to tagged devices.
    Deploy(deploy::DeployArgs),
    /// List, show, pause, resume, abort and roll back rollouts.
    Rollout(rollout::RolloutArgs),
    /// Over-the-air updates of the device agent: release, ls, rollout.
    Agent(agent::AgentArgs),
    /// Configuration for an external MQTT broker.
    Broker(broker::BrokerArgs),
    /// Credentials for the upstream registries deploys pull images from.
    Registry(registry_login::RegistryArgs),
    /// API tokens with a scope (read, deploy, admin) for automation.
    Token(token::TokenArgs),
    /// Who did what: deploys, rollouts, devices, tokens, rotations.
    Audit(token::AuditArgs),
    /// The admin token: `admin rotate`.
    Admin(admin::AdminArgs),
    /// A service's log on a device: the last lines, or streamed (-f, --since, --timestamps).
    Logs(service::LogsArgs),
    /// Run a command in a service's container on a device (-i stdin, -t terminal).
    Exec(exec::ExecArgs),
    /// Restart a service on a device.
    Restart(service::RestartArgs),
    /// What the fleet (busiest first) or one device's services use now.
    Top(top::TopArgs),
    /// Write a backup of the controller (database, keys, images) while it serves.
    Backup(backup::BackupArgs),
    /// Restore a backup into a new data directory.
    Restore(backup::RestoreArgs),
    /// Work with images and layers.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Delta layers between two versions of a layer.
    Delta {
        #[command(subcommand)]
        command: image_delta::DeltaCommand,
    },
    #[command(flatten)]
    Store(image_store::StoreCommand),
    #[command(flatten)]
    Removal(image_removal::RemovalCommand),
}

/// How CLI commands reach the API.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The controller's data directory (for its API URL and admin token).
    #[arg(
        long,
        global = true,
        env = "CORACLE_DATA_DIR",
        default_value = "coracle-data"
    )]
    pub data_dir: PathBuf,
    /// API base URL, e.g. https://127.0.0.1:8080 (default: read from the data dir).
    #[arg(long, global = true, env = "CORACLE_API")]
    pub api: Option<String>,
    /// Admin token or API token (default: the data dir's admin token).
    #[arg(long, global = true, env = "CORACLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's answer as JSON (for scripts) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Device(args) => device::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Rollout(args) => rollout::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Broker(args) => broker::run(args),
        Command::Registry(args) => registry_login::run(args),
        Command::Token(args) => token::run(args),
        Command::Audit(args) => token::run_audit(args),
        Command::Admin(args) => admin::run(args),
        Command::Logs(args) => service::run_logs(args),
        Command::Exec(args) => exec::run(args),
        Command::Restart(args) => service::run_restart(args),
        Command::Top(args) => top::run(args),
        Command::Backup(args) => backup::run_backup(args),
        Command::Restore(args) => backup::run_restore(args),
        Command::Image {
            command: ImageCommand::Delta { command },
        } => command.run(),
        Command::Image {
            command: ImageCommand::Removal(command),
        } => command.run(),
        Command::Image {
            command: ImageCommand::Store(command),
        } => command.run(),
    }
}
