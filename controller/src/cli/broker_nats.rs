//! `coracle broker nats-config --out DIR --name NODE --route HOST:PORT ...`: the files one
//! nats-server node of a cluster needs to carry Coracle's protocol (`broker::nats_config`):
//! the node's config (JetStream, the controllers' native listener, the devices' MQTT
//! listener over TLS with the controller CA's broker certificate, cluster routes), the
//! accounts file with the controller's account and the TLS files. Run it once per node;
//! nodes on one host share DIR (one accounts file, one pid file each), so `coracle serve`
//! with `[broker] nats_dir = DIR` reloads them all when devices come and go.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::broker::acl::CONTROLLER_USER;
use crate::broker::nats_accounts::nats_hash;
use crate::broker::nats_config::{
    accounts_conf, node_conf, NatsNode, ACCOUNTS_FILE, TLS_PAIR_FILE, USERS_FILE,
};
use crate::datadir::{write_private, write_public, DataDir};
use crate::secrets::Secrets;

#[derive(Debug, Args)]
pub struct NatsConfigArgs {
    /// Directory to write into (created; shared by the nodes of one host).
    #[arg(long)]
    out: PathBuf,
    /// This node's name, unique in the cluster (its config is NAME.conf).
    #[arg(long, default_value = "n1")]
    name: String,
    /// The cluster's name.
    #[arg(long, default_value = "coracle")]
    cluster: String,
    /// host:port of the controllers' native listener (port -1: the OS picks).
    #[arg(long, default_value = "127.0.0.1:4222")]
    client_listen: String,
    /// TLS on the native listener too (controllers then use tls://).
    #[arg(long)]
    client_tls: bool,
    /// host:port of the devices' MQTT listener (TLS).
    #[arg(long, default_value = "0.0.0.0:8883")]
    mqtt_listen: String,
    /// host:port of this node's route listener.
    #[arg(long, default_value = "0.0.0.0:6222")]
    cluster_listen: String,
    /// host:port of a route listener of the cluster, every node's (repeat).
    #[arg(long = "route")]
    routes: Vec<String>,
    /// Host name devices use for the broker (in its TLS certificate).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The controller's data directory (its secrets are created if missing).
    #[arg(long, default_value = "coracle-data")]
    data_dir: PathBuf,
}

pub fn run(args: NatsConfigArgs) -> anyhow::Result<()> {
    let dir = DataDir::open(&args.data_dir)
        .with_context(|| format!("open data dir {}", args.data_dir.display()))?;
    let mut names = vec!["localhost".to_string()];
    if args.host != "localhost" {
        names.push(args.host.clone());
    }
    let secrets = Secrets::load_or_create(&dir, &names).context("load controller secrets")?;
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("resolve {}", out.display()))?;
    let ca = out.join("ca.pem");
    write_public(&ca, secrets.ca_pem.as_bytes())
        .with_context(|| format!("write {}", ca.display()))?;
    // The node's own certificate and key in one file, written at once: a node starting
    // while another node's config is written never reads a certificate without its key.
    let (cert, key) = crate::secrets::issue_tls_pair(&dir, &names)
        .context("issue the NATS nodes' TLS certificate")?;
    let pair = out.join(TLS_PAIR_FILE);
    write_private(&pair, format!("{cert}{key}").as_bytes())
        .with_context(|| format!("write {}", pair.display()))?;

    // The second node of a host finds the users file the first wrote: devices stay.
    let users = out.join(USERS_FILE);
    if !users.exists() {
        let hash =
            nats_hash(&secrets.controller_mqtt_password).context("hash the controller password")?;
        write_private(&users, format!("{CONTROLLER_USER} {hash}\n").as_bytes())
            .with_context(|| format!("write {}", users.display()))?;
        let accounts = out.join(ACCOUNTS_FILE);
        write_private(&accounts, accounts_conf(&hash, &[]).as_bytes())
            .with_context(|| format!("write {}", accounts.display()))?;
    }

    let node = NatsNode {
        dir: out.clone(),
        name: args.name.clone(),
        cluster: args.cluster,
        client_listen: args.client_listen.clone(),
        client_tls: args.client_tls,
        mqtt_listen: args.mqtt_listen.clone(),
        cluster_listen: args.cluster_listen,
        routes: args.routes,
    };
    let conf = out.join(format!("{}.conf", args.name));
    write_public(&conf, node_conf(&node).as_bytes())
        .with_context(|| format!("write {}", conf.display()))?;
    let scheme = if args.client_tls { "tls" } else { "nats" };
    println!("wrote {}", conf.display());
    println!(
        "start: nats-server -c {conf}\n\
         serve: coracle serve --broker mqtts://{host}:<mqtt port> with [broker] \
         nats_ingest = \"{scheme}://{client}\" and nats_dir = {out:?}",
        conf = conf.display(),
        host = args.host,
        client = args.client_listen,
        out = out.display().to_string(),
    );
    Ok(())
}
