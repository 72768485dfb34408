//! The API and the registry over HTTPS with the controller's certificate (issue 17): the
//! real `coracle serve` with `tls = true` on both listeners. The CLI reaches the API over
//! HTTPS with the data dir's CA and `api.url` says `https://`; bootstrap files carry an
//! `https://` registry URL; skopeo pushes verifying the certificate; a device-like client
//! (the agent's own puller) with nothing but its bootstrap file pulls the image; a client
//! without the controller CA fails its handshake with a clear error, and plain HTTP to an
//! HTTPS port gets no answer.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use coracle_agent::platform::this_device as host_platform;
use coracle_agent::pull::{Puller, RegistryClient, RegistryEndpoint};
use coracle_images::store::{Store, StoreConfig};
use coracle_images::Digest;
use support::Controller;

/// Pushes the busybox fixture as `repo_tag` with skopeo, verifying the registry's
/// certificate against the controller CA (`--dest-cert-dir`); returns the manifest digest.
fn push_verified(controller: &Controller, repo_tag: &str) -> Digest {
    let work = controller.dir.path();
    let certs = work.join("skopeo-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("ca.crt"), controller.ca_pem()).unwrap();
    let digest_file = work.join("digest");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-cert-dir"])
        .arg(&certs)
        .arg("--dest-creds")
        .arg(format!("coracle:{}", controller.admin_token().trim()))
        .arg("--digestfile")
        .arg(&digest_file)
        .arg(format!(
            "oci-archive:{}",
            support::fixture("busybox-oci.tar").display()
        ))
        .arg(format!("docker://{}/{repo_tag}", controller.registry))
        .output()
        .expect("skopeo must be installed (.ci/packages.txt)");
    assert!(
        out.status.success(),
        "skopeo push over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(digest_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn device_store(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreConfig {
            reserve_bytes: 0,
            ..StoreConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn a_device_with_its_bootstrap_ca_pulls_over_tls_and_the_cli_speaks_https() {
    let controller = Controller::start_tls();
    assert_eq!(
        controller.api_url(),
        format!("https://{}", controller.api),
        "api.url"
    );

    // The CLI enrols over HTTPS, trusting the data dir's CA.
    let boot = controller.enrol("pi-tls");
    assert_eq!(
        boot.registry_url,
        format!("https://127.0.0.1:{}", controller.registry.port())
    );
    let listed = controller.cli(&["device", "ls"]);
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("pi-tls"));

    let digest = push_verified(&controller, "hello:1");
    // A device reads only what its desired state names: deploy the image to it (over HTTPS).
    let app = controller.dir.path().join("app.yml");
    std::fs::write(
        &app,
        "services:\n  web:\n    image: hello:1\n    command: [\"/bin/sleep\", \"300\"]\n",
    )
    .unwrap();
    let deployed = controller.cli(&["deploy", app.to_str().unwrap(), "--device", "pi-tls"]);
    assert!(deployed.status.success(), "{deployed:?}");

    // The device knows only its bootstrap file: URL, CA bundle, pull token.
    let client = RegistryClient::new(RegistryEndpoint {
        base_url: boot.registry_url.clone(),
        ca_pem: Some(boot.ca_pem.clone()),
        token: coracle_agent::pull::PullToken::fixed(boot.registry_token.clone()),
    })
    .unwrap();
    let store = device_store(&controller.dir.path().join("device"));
    let puller = Puller {
        client: &client,
        store: &store,
        platform: host_platform(),
        delta_budget: 64 << 20,
    };
    let (record, report) = puller.pull("hello", &digest, &mut |_| {}).unwrap();
    assert_eq!(record.manifest_digest, digest);
    assert!(!record.layers.is_empty());
    assert!(record.layers.iter().all(|l| store.has_layer(l)));
    assert_eq!(report.layers_full, record.layers.len(), "{report:?}");
}

#[test]
fn a_client_without_the_controller_ca_fails_its_handshake() {
    let controller = Controller::start_tls();
    let boot = controller.enrol("pi-other-ca");
    let digest = push_verified(&controller, "hello:1");

    // Another CA (a self-signed certificate for the same address), and the public roots.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    for (what, ca_pem) in [
        ("another CA", Some(other.cert.pem())),
        ("the public roots", None),
    ] {
        let client = RegistryClient::new(RegistryEndpoint {
            base_url: boot.registry_url.clone(),
            ca_pem,
            token: coracle_agent::pull::PullToken::fixed(boot.registry_token.clone()),
        })
        .unwrap();
        let err = client.manifest("hello", &digest).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::new(err));
        eprintln!("{what}: {chain}");
        assert!(chain.contains(&boot.registry_url), "{what}: {chain}");
        assert!(chain.contains("UnknownIssuer"), "{what}: {chain}");
    }

    // The CLI pointed at the API without the controller CA (a data dir without ca.pem).
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_coracle"))
        .args(["device", "ls", "--api", &controller.api_url(), "--token"])
        .arg(controller.admin_token().trim())
        .arg("--data-dir")
        .arg(elsewhere.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");

    // Plain HTTP to an HTTPS port is not answered.
    let plain = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    for addr in [controller.api, controller.registry] {
        let answer = plain.get(format!("http://{addr}/v2/")).call();
        assert!(answer.is_err(), "plain HTTP answered on {addr}: {answer:?}");
    }
}

#[test]
fn serve_refuses_plain_http_off_loopback_without_the_tls_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (loopback, wildcard) = ("127.0.0.1:0", "0.0.0.0:0");
    for (api, registry, setting) in [
        (wildcard, loopback, "api.tls"),
        (loopback, wildcard, "registry.tls"),
    ] {
        let config = dir.path().join("serve.toml");
        let text = format!(
            "data_dir = {:?}\n[api]\nlisten = \"{api}\"\n[registry]\nlisten = \"{registry}\"\n",
            support::data_dir(dir.path())
        );
        std::fs::write(&config, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_coracle"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{setting}: started: {stderr}");
        assert!(stderr.contains(setting), "{setting}: {stderr}");
        assert!(stderr.contains(wildcard), "{setting}: {stderr}");
    }
}
