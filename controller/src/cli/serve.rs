//! `coracle serve`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::ServeConfig;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (overrides the config file's `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// TOML config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Use this external broker (mqtt://host:port or mqtts://host:port) instead of the
    /// embedded one.
    #[arg(long)]
    pub broker: Option<String>,
    /// With `--broker`: the URL devices dial, written into their bootstrap files (e.g. the
    /// external broker's TLS listener, mqtts://host:8883); default: the `--broker` URL.
    #[arg(long, requires = "broker")]
    pub broker_device_url: Option<String>,
    /// With `--broker` on a Mosquitto on this host: the directory `coracle broker
    /// mosquitto-config` wrote; device accounts are added and removed there.
    #[arg(long, requires = "broker")]
    pub mosquitto_dir: Option<PathBuf>,
    /// With `--broker`: PEM file of the CA that issued the broker's TLS certificate, when
    /// that is not the controller CA; bootstrap files carry it too.
    #[arg(long, requires = "broker")]
    pub broker_device_ca: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = args.broker {
        config.broker.external_url = Some(url);
    }
    if let Some(url) = args.broker_device_url {
        config.broker.device_url = Some(url);
    }
    if let Some(dir) = args.mosquitto_dir {
        config.broker.mosquitto_dir = Some(dir);
    }
    if let Some(path) = args.broker_device_ca {
        config.broker.device_ca_file = Some(path);
    }
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(crate::server::serve(config))?;
    Ok(())
}
