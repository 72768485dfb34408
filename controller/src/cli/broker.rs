//! `coracle broker mosquitto-config --out DIR`: what an external Mosquitto needs to carry
//! Coracle's protocol — a password file with the controller's account, an ACL giving the
//! controller every topic and each device only `coracle/v1/<its id>/#`, the controller CA and
//! broker certificate for TLS, and a `mosquitto.conf` tying them together. Devices are added
//! to the password file when they are enrolled: by `coracle serve --mosquitto-dir DIR`
//! (`broker::mosquitto`), or by hand with `mosquitto_passwd` (see the README).
//!
//! Mosquitto enforces what the bootstrap file gives a device: the controller enrols devices
//! with `BrokerAuth::Password`, so the devices' TLS listener checks the password file and
//! asks for no client certificate; it takes the client id from the user name, so one device
//! cannot push another off the broker by connecting with its client id.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::broker::acl::CONTROLLER_USER;
use crate::broker::mosquitto::{PASSWD_FILE, PID_FILE};
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
        /// Address the TLS listener binds (default: every address).
        #[arg(long)]
        tls_bind: Option<std::net::IpAddr>,
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
    /// Write one nats-server cluster node's config, accounts and TLS files.
    NatsConfig(super::broker_nats::NatsConfigArgs),
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

/// Where the generated files are, and the listeners to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MosquittoLayout {
    pub dir: PathBuf,
    pub tls_port: u16,
    pub tls_bind: Option<std::net::IpAddr>,
    /// Plain loopback port for the controller; 0 for none.
    pub local_port: u16,
}

/// The `mosquitto.conf` for `layout`: global password file and ACL (no anonymous clients),
/// persistence in the same directory, the controller's plain loopback listener and the
/// devices' TLS listener (password auth, no client certificate, client id = user name).
pub fn mosquitto_conf(layout: &MosquittoLayout) -> String {
    let path = |name: &str| layout.dir.join(name).display().to_string();
    let local = if layout.local_port == 0 {
        String::new()
    } else {
        format!(
            "# The controller's own client, on this host only.\nlistener {} 127.0.0.1\n\n",
            layout.local_port
        )
    };
    let bind = layout
        .tls_bind
        .map(|ip| format!(" {ip}"))
        .unwrap_or_default();
    format!(
        "# Written by `coracle broker mosquitto-config`.\n\
         per_listener_settings false\nallow_anonymous false\n\
         password_file {passwd}\nacl_file {acl}\n\
         persistence true\npersistence_location {dir}/\n\
         # `coracle serve --mosquitto-dir` reloads Mosquitto through it after account changes.\n\
         pid_file {pid}\n\n\
         {local}\
         # Devices: TLS with the controller CA's broker certificate. A device logs in with the\n\
         # user name and password of its bootstrap file (no client certificate), and its\n\
         # client id is replaced by its user name, so it cannot take over another's session.\n\
         listener {port}{bind}\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
         tls_version tlsv1.2\nrequire_certificate false\nuse_username_as_clientid true\n",
        passwd = path(PASSWD_FILE),
        pid = path(PID_FILE),
        acl = path("acl"),
        dir = layout.dir.display(),
        port = layout.tls_port,
        ca = path("ca.pem"),
        cert = path("broker.pem"),
        key = path("broker.key"),
    )
}

pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let (out, tls_port, tls_bind, local_port, host, data_dir) = match args.command {
        BrokerCommand::MosquittoConfig {
            out,
            tls_port,
            tls_bind,
            local_port,
            host,
            data_dir,
        } => (out, tls_port, tls_bind, local_port, host, data_dir),
        BrokerCommand::NatsConfig(args) => return super::broker_nats::run(args),
    };
    let dir = DataDir::open(&data_dir)
        .with_context(|| format!("open data dir {}", data_dir.display()))?;
    let mut names = vec!["localhost".to_string()];
    if host != "localhost" {
        names.push(host.clone());
    }
    let secrets = Secrets::load_or_create(&dir, &names).context("load controller secrets")?;
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
    copy(&dir.ca_cert(), "ca.pem", false)?;
    copy(&secrets.tls_cert, "broker.pem", false)?;
    copy(&secrets.tls_key, "broker.key", true)?;

    let acl = out.join("acl");
    write_public(&acl, mosquitto_acl().as_bytes())
        .with_context(|| format!("write {}", acl.display()))?;
    let passwd = out.join(PASSWD_FILE);
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

    let layout = MosquittoLayout {
        dir: out.clone(),
        tls_port,
        tls_bind,
        local_port,
    };
    let conf = mosquitto_conf(&layout);
    let conf_path = out.join("mosquitto.conf");
    write_public(&conf_path, conf.as_bytes())
        .with_context(|| format!("write {}", conf_path.display()))?;
    println!("wrote {}", conf_path.display());
    println!(
        "then: chown -R mosquitto: {out}\n\
         start: mosquitto -c {conf}\n\
         serve: coracle serve --broker mqtt://127.0.0.1:{local_port} \
         --broker-device-url mqtts://{host}:{tls_port} --mosquitto-dir {out}\n\
         (without --mosquitto-dir, per device: mosquitto_passwd -b {passwd} <device id> \
         <mqtt password from its bootstrap file>, then reload mosquitto with SIGHUP)",
        out = out.display(),
        conf = conf_path.display(),
        passwd = passwd.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(local_port: u16) -> MosquittoLayout {
        MosquittoLayout {
            dir: PathBuf::from("/etc/mosquitto/coracle"),
            tls_port: 8883,
            tls_bind: Some("10.0.0.2".parse().unwrap()),
            local_port,
        }
    }

    #[test]
    fn conf_enforces_password_auth_on_the_device_listener() {
        let conf = mosquitto_conf(&layout(1883));
        for line in [
            "allow_anonymous false",
            "password_file /etc/mosquitto/coracle/passwd",
            "acl_file /etc/mosquitto/coracle/acl",
            "persistence_location /etc/mosquitto/coracle/",
            "pid_file /etc/mosquitto/coracle/mosquitto.pid",
            "listener 1883 127.0.0.1",
            "listener 8883 10.0.0.2",
            "require_certificate false",
            "use_username_as_clientid true",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line:?} missing:\n{conf}");
        }
        // The device listener's settings follow its `listener` line, not the controller's.
        let tls = conf.find("listener 8883").unwrap();
        assert!(conf.find("use_username_as_clientid").unwrap() > tls);
        assert!(conf.find("cafile").unwrap() > tls);
    }

    #[test]
    fn conf_without_a_local_port_has_only_the_tls_listener() {
        let conf = mosquitto_conf(&layout(0));
        assert_eq!(conf.matches("listener ").count(), 1, "{conf}");
    }
}
