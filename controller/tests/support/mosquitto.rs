//! Debian's Mosquitto as the controller's external broker, from the files
//! `coracle broker mosquitto-config` writes, with device accounts added by hand.

use std::path::Path;
use std::process::Command;

use coracle_proto::Bootstrap;
use coracle_tests::mosquitto::Mosquitto;

/// Runs the `coracle` CLI on the data dir `data`.
pub fn coracle(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coracle"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// `coracle broker mosquitto-config` into `mq` for the data dir `data`, without the
/// controller's plain listener (the test's Mosquitto has its own), plus `extra` arguments.
pub fn mosquitto_config(data: &Path, mq: &Path, extra: &[&str]) {
    let mut args = vec![
        "broker",
        "mosquitto-config",
        "--out",
        mq.to_str().unwrap(),
        "--local-port",
        "0",
    ];
    args.extend_from_slice(extra);
    let out = coracle(data, &args);
    assert!(out.status.success(), "{out:?}");
}

/// Mosquitto with the generated password file and ACL on its plain loopback listener, and
/// with `tls_port`, the generated TLS files on a TLS listener. The files are private to the
/// test's user, so Mosquitto keeps that user instead of dropping to `mosquitto`.
pub fn start_mosquitto(mq: &Path, tls_port: Option<u16>) -> Mosquitto {
    let file = |name: &str| mq.join(name).display().to_string();
    let tls = tls_port
        .map(|port| {
            format!(
                "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate false\n",
                file("ca.pem"),
                file("broker.pem"),
                file("broker.key")
            )
        })
        .unwrap_or_default();
    Mosquitto::start(&format!(
        "per_listener_settings false\nallow_anonymous false\npassword_file {}\nacl_file {}\nuser {}\n{tls}",
        file("passwd"),
        file("acl"),
        std::env::var("USER").unwrap_or_else(|_| "root".into())
    ))
    .unwrap()
}

/// Adds `device`'s account to Mosquitto's password file and has it reload.
pub fn add_account(mq: &Path, broker: &Mosquitto, device: &Bootstrap) {
    add_accounts(mq, broker, std::slice::from_ref(device));
}

/// Adds the devices' accounts in one `mosquitto_passwd -U` pass and one reload.
pub fn add_accounts(mq: &Path, broker: &Mosquitto, devices: &[Bootstrap]) {
    let plain_file = mq.join("new.passwd");
    let plain: String = devices
        .iter()
        .map(|d| format!("{}:{}\n", d.device, super::password(d)))
        .collect();
    std::fs::write(&plain_file, plain).unwrap();
    let status = Command::new("mosquitto_passwd")
        .arg("-U")
        .arg(&plain_file)
        .status()
        .unwrap();
    assert!(status.success());
    let mut passwd = std::fs::read_to_string(mq.join("passwd")).unwrap_or_default();
    if !passwd.is_empty() && !passwd.ends_with('\n') {
        passwd.push('\n');
    }
    passwd.push_str(&std::fs::read_to_string(&plain_file).unwrap());
    std::fs::write(mq.join("passwd"), passwd).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
}
