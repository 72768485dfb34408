//! Command-line surface of `coracle`: argument types and dispatch to one module per verb group.

mod image_delta;

use clap::{Parser, Subcommand};

/// Coracle controller and operator CLI.
#[derive(Debug, Parser)]
#[command(name = "coracle", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with images and layers.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Delta layers between two versions of a layer.
    Delta {
        #[command(subcommand)]
        command: image_delta::DeltaCommand,
    },
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Image {
                command: ImageCommand::Delta { command },
            } => command.run(),
        }
    }
}
