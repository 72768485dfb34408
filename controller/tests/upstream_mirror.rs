//! Deploying images from other registries: the controller pulls them from a real upstream
//! (Debian's `docker-registry`, with htpasswd basic auth or over TLS with its own CA), stores
//! them in its own registry and pins the upstream digest; a device pulls from the controller.
//! A wrong or missing credential fails the deploy with the registry's 401, and nothing of
//! that deploy is stored or published.
#![allow(clippy::unwrap_used)]

mod support;
mod upstream;

use std::path::Path;

use coracle_proto::{Bootstrap, Generation};
use coracle_tests::registry::{write_htpasswd, RegistryOptions, TestRegistry};
use coracle_tests::registry_auth::RegistryTls;
use sha2::{Digest as _, Sha256};
use support::{api, Controller};
use upstream::{
    busybox, controller_with, deploy, desired_state, login, own_registry, PASSWORD, USER,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_image_is_mirrored_pinned_and_pulled_from_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd, USER, PASSWORD).unwrap();
    let upstream = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(htpasswd),
        ..RegistryOptions::default()
    })
    .unwrap();
    let creds = format!("{USER}:{PASSWORD}");
    let digest = upstream
        .push_with(&busybox(), "team/app:1", &["--dest-creds", &creds])
        .unwrap();
    let host = format!("127.0.0.1:{}", upstream.port);
    let controller = controller_with(&format!(
        "[[registries]]\nhost = \"{host}\"\ninsecure = true\n"
    ));
    let boot = controller.enrol("pi-mirror");
    let image = format!("{host}/team/app:1");
    let mirror_repo = format!("mirror/127.0.0.1-{}/team/app", upstream.port);

    // No login, then a wrong password: the registry's 401, naming host and image; nothing
    // stored, nothing published.
    for password in [None, Some("wrong-password")] {
        if let Some(password) = password {
            login(&controller, &host, password);
        }
        let err = deploy(&controller, &boot.device.to_string(), &image).unwrap_err();
        let text = format!("{err:#}");
        eprintln!("refused as expected: {text}");
        let answered = format!("registry {host} answered 401 to GET manifest team/app:1");
        assert!(text.contains(&answered), "{text}");
        assert!(
            text.contains("UNAUTHORIZED"),
            "the registry's own answer: {text}"
        );
        assert!(
            !text.contains(PASSWORD) && !text.contains("wrong-password"),
            "{text}"
        );
        assert_eq!(
            own_registry(&controller, &format!("{mirror_repo}/tags/list")).0,
            404
        );
        let device: serde_json::Value = api(&controller)
            .get("device", &format!("/devices/{}", boot.device))
            .unwrap();
        assert!(device["device"]["desired_generation"].is_null(), "{device}");
    }
    let login_file = controller
        .data_dir()
        .join(format!("registry-logins/{host}.toml"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&login_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The right password: mirrored under the upstream digest and pinned.
    login(&controller, &host, PASSWORD);
    let answer = deploy(&controller, &boot.device.to_string(), &image).unwrap();
    assert_eq!(answer.generation, Generation(1));
    let (status, stored) = own_registry(&controller, &format!("{mirror_repo}/manifests/1"));
    assert_eq!((status, stored.as_deref()), (200, Some(digest.as_str())));
    let state = desired_state(&controller, &boot).await;
    let pinned = &state.services[0].image;
    assert_eq!(pinned.to_string(), format!("{mirror_repo}@{digest}"));
    assert!(
        pinned.registry.is_empty(),
        "devices pull from the controller"
    );

    // A device pulls it from the controller with its pull token, as any image.
    pull_as_device(&controller, &boot, &mirror_repo, &digest);

    // The next version, mirrored like a push: the registry's delta workers take the new tag
    // against the one before it (an update size appears once they are done).
    let layers = format!(
        "oci-archive:{}",
        support::fixture("busybox-layers-oci.tar").display()
    );
    upstream
        .push_with(&layers, "team/app:2", &["--dest-creds", &creds])
        .unwrap();
    let answer = deploy(
        &controller,
        &boot.device.to_string(),
        &format!("{host}/team/app:2"),
    );
    assert_eq!(answer.unwrap().generation, Generation(2));
    let api = api(&controller);
    let update = support::eventually("the delta workers to take the mirrored tag", || {
        let images: serde_json::Value = api.get("images", "/images").ok()?;
        let repo = images
            .as_array()?
            .iter()
            .find(|r| r["name"] == mirror_repo.as_str())?;
        let tag = repo["tags"].as_array()?.iter().find(|t| t["tag"] == "2")?;
        assert_eq!(tag["previous"], "1", "{tag}");
        tag["update_bytes"].as_u64()
    })
    .await;
    assert!(update > 0);
}

fn pull_as_device(controller: &Controller, boot: &Bootstrap, repository: &str, digest: &str) {
    use coracle_agent::platform::this_device as host_platform;
    use coracle_agent::pull::{Puller, RegistryClient, RegistryEndpoint};
    let client = RegistryClient::new(RegistryEndpoint {
        base_url: format!("http://{}", controller.registry),
        ca_pem: None,
        token: coracle_agent::pull::PullToken::fixed(boot.registry_token.clone()),
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = coracle_images::store::Store::open(dir.path(), Default::default()).unwrap();
    let puller = Puller {
        client: &client,
        store: &store,
        platform: host_platform(),
        delta_budget: 64 << 20,
    };
    let (record, _) = puller
        .pull(repository, &digest.parse().unwrap(), &mut |_| {})
        .unwrap();
    assert_eq!(record.layers.len(), 1);
}

/// Builds an OCI layout holding an index `multi` with linux/amd64 and linux/arm64 entries
/// (the busybox fixture, its config relabelled per platform); returns the layout dir.
fn multi_arch_layout(dir: &Path) -> std::path::PathBuf {
    let layout = dir.join("layout");
    let archive = std::fs::File::open(support::fixture("busybox-oci.tar")).unwrap();
    tar::Archive::new(archive).unpack(&layout).unwrap();
    let blobs = layout.join("blobs/sha256");
    let put = |bytes: &[u8]| {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        serde_json::json!({"digest": format!("sha256:{hex}"), "size": bytes.len()})
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_hex = index["manifests"][0]["digest"].as_str().unwrap()[7..].to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&manifest_hex)).unwrap()).unwrap();
    let config_hex = manifest["config"]["digest"].as_str().unwrap()[7..].to_string();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&config_hex)).unwrap()).unwrap();
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let mut config = config.clone();
        config["architecture"] = arch.into();
        let config_desc = put(&serde_json::to_vec(&config).unwrap());
        let mut manifest = manifest.clone();
        manifest["config"]["digest"] = config_desc["digest"].clone();
        manifest["config"]["size"] = config_desc["size"].clone();
        let mut entry = put(&serde_json::to_vec(&manifest).unwrap());
        entry["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
        entry["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        entries.push(entry);
    }
    let multi = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let mut top = put(&serde_json::to_vec(&multi).unwrap());
    top["mediaType"] = "application/vnd.oci.image.index.v1+json".into();
    top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "multi"});
    let layout_index = serde_json::json!({"schemaVersion": 2, "manifests": [top]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&layout_index).unwrap(),
    )
    .unwrap();
    layout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_over_tls_is_mirrored_for_the_fleets_platforms() {
    let dir = tempfile::tempdir().unwrap();
    let tls = RegistryTls::create(dir.path()).unwrap();
    let ca = tls.ca.clone();
    let upstream = TestRegistry::start_with(&RegistryOptions {
        tls: Some(tls.server_pair()),
        ..RegistryOptions::default()
    })
    .unwrap();
    let layout = multi_arch_layout(dir.path());
    let source = format!("oci:{}:multi", layout.display());
    let digest = upstream.push_with(&source, "multi:1", &["--all"]).unwrap();
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap(),
    )
    .unwrap();
    let child = |arch: &str| {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let host = format!("127.0.0.1:{}", upstream.port);

    // Without the private CA the registry's certificate is refused, naming the host.
    let untrusting = controller_with("");
    let boot = untrusting.enrol("pi-untrusting");
    let err = deploy(
        &untrusting,
        &boot.device.to_string(),
        &format!("{host}/multi:1"),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains(&host), "{err:#}");
    drop(untrusting);

    let controller = controller_with(&format!(
        "[fleet]\nplatforms = [\"linux/arm64\"]\n[[registries]]\nhost = \"{host}\"\nca_file = {ca:?}\n"
    ));
    let boot = controller.enrol("pi-arm64");
    deploy(
        &controller,
        &boot.device.to_string(),
        &format!("{host}/multi:1"),
    )
    .unwrap();
    let repo = format!("mirror/127.0.0.1-{}/multi", upstream.port);
    let (status, stored) = own_registry(&controller, &format!("{repo}/manifests/1"));
    assert_eq!((status, stored.as_deref()), (200, Some(digest.as_str())));
    let arm64 = child("arm64");
    assert_eq!(
        own_registry(&controller, &format!("{repo}/manifests/{arm64}")),
        (200, Some(arm64.clone()))
    );
    let amd64 = child("amd64");
    assert_eq!(
        own_registry(&controller, &format!("{repo}/manifests/{amd64}")).0,
        404,
        "a platform the fleet does not run is not mirrored"
    );
    let state = desired_state(&controller, &boot).await;
    assert_eq!(
        state.services[0].image.to_string(),
        format!("{repo}@{digest}")
    );
}
