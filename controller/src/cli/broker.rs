//! `coracle broker mosquitto-config --out DIR`: what an external Mosquitto needs to carry
//! Coracle's protocol — a password file with the controller's account, an ACL giving the
//! controller every topic and each device only `coracle/v1/<its id>/#`, the controller CA and
//! broker certificate for TLS, and a `mosquitto.conf` tying them together. Devices are added
//! to the password file with `mosquitto_passwd` when they are enrolled (see the README).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::broker::acl::CONTROLLER_USER;
use crate::datadir::{write_private, write_public, DataDir};
use crate::secrets::Secrets;

#[derive(Debug, Args)]
pub struct BrokerArgs {
    #[command(subcommand)]
    command: BrokerCommand,
}

#[derive(Debug, Subcommand)]
enum BrokerCommand {
    /// Write mosquitto.conf, passwd, acl and TLS files for an external Mosquitto.
    MosquittoConfig {
        /// Directory to write into (created).
        #[arg(long)]
        out: PathBuf,
        /// TLS port devices connect to.
        #[arg(long, default_value_t = 8883)]
        tls_port: u16,
        /// Plain port on 127.0.0.1 for a controller on the same host (0: none).
        #[arg(long, default_value_t = 1883)]
        local_port: u16,
        /// Host name devices use for the broker (in its TLS certificate).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// The controller's data directory (its secrets are created if missing).
        #[arg(long, default_value = "coracle-data")]
        data_dir: PathBuf,
    },
}

/// The topic ACL: the controller reads and writes everything under the protocol prefix; a
/// device (user name = device id) only its own subtree.
pub fn mosquitto_acl() -> String {
    format!(
        "# Coracle: the controller sees every device; a device only its own topics.\n\
         user {CONTROLLER_USER}\ntopic readwrite coracle/v1/#\n\n\
         pattern readwrite coracle/v1/%u/#\n"
    )
}

pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let BrokerCommand::MosquittoConfig {
        out,
        tls_port,
        local_port,
        host,
        data_dir,
    } = args.command;
    let dir = DataDir::open(&data_dir)
        .with_context(|| format!("open data dir {}", data_dir.display()))?;
    let secrets = Secrets::load_or_create(&dir, &host).context("load controller secrets")?;
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("resolve {}", out.display()))?;

    let copy = |from: &Path, name: &str, private: bool| -> anyhow::Result<PathBuf> {
        let bytes = std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
        let to = out.join(name);
        let written = if private {
            write_private(&to, &bytes)
        } else {
            write_public(&to, &bytes)
        };
        written.with_context(|| format!("write {}", to.display()))?;
        Ok(to)
    };
    let ca = copy(&dir.ca_cert(), "ca.pem", false)?;
    let cert = copy(&secrets.broker_cert, "broker.pem", false)?;
    let key = copy(&secrets.broker_key, "broker.key", true)?;

    let acl = out.join("acl");
    write_public(&acl, mosquitto_acl().as_bytes())
        .with_context(|| format!("write {}", acl.display()))?;
    let passwd = out.join("passwd");
    write_private(&passwd, b"").with_context(|| format!("write {}", passwd.display()))?;
    let status = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&passwd)
        .arg(CONTROLLER_USER)
        .arg(&secrets.controller_mqtt_password)
        .status()
        .context("run mosquitto_passwd (Debian package mosquitto)")?;
    if !status.success() {
        bail!(
            "mosquitto_passwd could not add {CONTROLLER_USER} to {}",
            passwd.display()
        );
    }

    let local = if local_port == 0 {
        String::new()
    } else {
        format!("# The controller's own client, on this host only.\nlistener {local_port} 127.0.0.1\n\n")
    };
    let conf = format!(
        "# Written by `coracle broker mosquitto-config`.\n\
         per_listener_settings false\nallow_anonymous false\n\
         password_file {passwd}\nacl_file {acl}\npersistence true\n\n\
         {local}# Devices: TLS with the controller CA's broker certificate.\n\
         listener {tls_port}\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n",
        passwd = passwd.display(),
        acl = acl.display(),
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    );
    let conf_path = out.join("mosquitto.conf");
    write_public(&conf_path, conf.as_bytes())
        .with_context(|| format!("write {}", conf_path.display()))?;
    println!("wrote {}", conf_path.display());
    println!(
        "start: mosquitto -c {}\nserve:  coracle serve --broker mqtt://127.0.0.1:{local_port}\n\
         per device: mosquitto_passwd -b {} <device id> <mqtt password from its bootstrap file>, \
         then reload mosquitto (SIGHUP)",
        conf_path.display(),
        passwd.display()
    );
    Ok(())
}
