//! Direct pulls from a LAN registry (issue 14 item 4): a desired state names a registry the
//! device reaches itself, with the pull credential sealed to the device's key. Against Debian's
//! `docker-registry` with htpasswd basic auth: the signed state as published carries no
//! password, the device opens the credential with its own key and pulls full layers directly;
//! another device's key cannot open it. Over TLS with a private CA and token auth as well.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use coracle_agent::platform::this_device as host_platform;
use coracle_agent::pull::{direct_client, DirectError, Puller};
use coracle_agent::sealing_key::SealingKey;
use coracle_images::store::{Store, StoreConfig};
use coracle_proto::sealed;
use coracle_proto::{
    codec, DesiredState, DeviceId, Generation, ImageRef, RegistryAccess, ServiceName, ServiceSpec,
    Signed, SigningKey,
};
use coracle_tests::fixtures;
use coracle_tests::registry::{write_htpasswd, RegistryOptions, TestRegistry};
use coracle_tests::registry_auth::{RegistryTls, TokenServer};

const USER: &str = "floor";
const PASSWORD: &str = "lan-pull-Secret-42";

fn public_key(key: &SealingKey) -> [u8; 32] {
    let hex = key.public_hex();
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A registry with basic auth holding busybox as `floor/app:1`; returns it, its host and
/// the pinned image.
fn lan_registry(dir: &std::path::Path) -> (TestRegistry, String, ImageRef) {
    let htpasswd = dir.join("htpasswd");
    write_htpasswd(&htpasswd, USER, PASSWORD).unwrap();
    let registry = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(htpasswd),
        ..RegistryOptions::default()
    })
    .unwrap();
    let (host, image) = push_busybox(&registry);
    (registry, host, image)
}

/// Pushes busybox as `floor/app:1` with the test's credential; the host and pinned image.
fn push_busybox(registry: &TestRegistry) -> (String, ImageRef) {
    let source = format!(
        "oci-archive:{}",
        fixtures::path("busybox-oci.tar").display()
    );
    let creds = format!("{USER}:{PASSWORD}");
    let digest = registry
        .push_with(&source, "floor/app:1", &["--dest-creds", &creds])
        .unwrap();
    let host = format!("127.0.0.1:{}", registry.port);
    let image: ImageRef = format!("{host}/floor/app@{digest}").parse().unwrap();
    (host, image)
}

/// Pulls `image` into a fresh store in `dir` through the device's direct client.
fn pull_directly(
    dir: &std::path::Path,
    access: &RegistryAccess,
    key: &SealingKey,
    device: &DeviceId,
    image: &ImageRef,
) -> Result<coracle_images::store::ImageRecord, coracle_agent::pull::PullError> {
    let client = direct_client(access, key, device).unwrap();
    let store = Store::open(&dir.join("store"), StoreConfig::default()).unwrap();
    let puller = Puller {
        client: &client,
        store: &store,
        platform: host_platform(),
        delta_budget: 64 << 20,
    };
    let (record, _) = puller.pull(&image.repository, &image.digest, &mut |_| {})?;
    assert!(record.layers.iter().all(|l| store.has_layer(l)));
    Ok(record)
}

fn desired_state(device: &DeviceId, image: &ImageRef, access: RegistryAccess) -> DesiredState {
    DesiredState {
        device: device.clone(),
        generation: Generation(1),
        services: vec![ServiceSpec::new(
            "app".parse::<ServiceName>().unwrap(),
            image.clone(),
        )],
        registries: vec![access],
    }
}

#[test]
fn device_unseals_its_credential_and_pulls_directly_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, host, image) = lan_registry(dir.path());
    let device: DeviceId = "floor-1".parse().unwrap();
    let key = SealingKey::load_or_create(&dir.path().join("state")).unwrap();

    // Controller side: seal to the reported key, sign, encode as published.
    let sealed_credentials = sealed::seal(
        &public_key(&key),
        &device,
        [0x5a; 32],
        format!("{USER}:{PASSWORD}").as_bytes(),
    )
    .unwrap();
    let access = RegistryAccess {
        host: host.clone(),
        url: registry.base_url(),
        ca_pem: None,
        sealed_credentials: Some(sealed_credentials),
    };
    let signing = SigningKey::from_bytes(&[3; 32]);
    let signed = Signed::sign(&desired_state(&device, &image, access), &signing);
    let published = codec::encode(&signed);
    assert!(!contains(&published, PASSWORD.as_bytes()));

    // Device side: verify, find the registry, unseal, pull.
    let received: Signed<DesiredState> = codec::decode(&published).unwrap();
    let state = received
        .verify(&signing.verifying_key(), &device, Generation(0))
        .unwrap();
    let wanted = &state.services[0].image;
    assert_eq!(wanted.registry, host);
    let access = state
        .registries
        .iter()
        .find(|a| a.host == wanted.registry)
        .unwrap();
    let client = direct_client(access, &key, &device).unwrap();
    assert!(!client.offers_deltas());
    assert!(!format!("{client:?}").contains(PASSWORD));
    let store = Store::open(&dir.path().join("store"), StoreConfig::default()).unwrap();
    let puller = Puller {
        client: &client,
        store: &store,
        platform: host_platform(),
        delta_budget: 64 << 20,
    };
    let (record, report) = puller
        .pull(&wanted.repository, &wanted.digest, &mut |_| {})
        .unwrap();
    assert_eq!(record.manifest_digest, wanted.digest);
    assert_eq!(report.layers_full, record.layers.len());
    assert_eq!(report.layers_from_delta, 0);
    assert!(record.layers.iter().all(|l| store.has_layer(l)));
}

#[test]
fn another_device_cannot_open_the_credential_and_anonymous_pulls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, host, image) = lan_registry(dir.path());
    let device: DeviceId = "floor-1".parse().unwrap();
    let key = SealingKey::load_or_create(&dir.path().join("state-1")).unwrap();
    let other = SealingKey::load_or_create(&dir.path().join("state-2")).unwrap();
    let access = RegistryAccess {
        host,
        url: registry.base_url(),
        ca_pem: None,
        sealed_credentials: Some(
            sealed::seal(&public_key(&key), &device, [0x11; 32], b"floor:x").unwrap(),
        ),
    };
    let err = direct_client(&access, &other, &device).unwrap_err();
    assert!(matches!(err, DirectError::Unseal { .. }), "{err}");

    // Without the credential the registry answers 401: nothing is pulled.
    let anonymous = RegistryAccess {
        sealed_credentials: None,
        ..access
    };
    let client = direct_client(&anonymous, &key, &device).unwrap();
    let store = Store::open(&dir.path().join("store"), StoreConfig::default()).unwrap();
    let puller = Puller {
        client: &client,
        store: &store,
        platform: host_platform(),
        delta_budget: 64 << 20,
    };
    let err = puller
        .pull(&image.repository, &image.digest, &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(
            err,
            coracle_agent::pull::PullError::Status { status: 401, .. }
        ),
        "{err}"
    );
}

/// A LAN registry as GHCR runs one: TLS with its own CA, and token auth. The device trusts
/// only the CA its access carries, and trades its unsealed credential for a bearer token at
/// the registry's token service; without the CA the pull is refused at the TLS handshake.
#[test]
fn device_pulls_over_tls_with_a_private_ca_and_token_auth() {
    let dir = tempfile::tempdir().unwrap();
    let tls = RegistryTls::create(dir.path()).unwrap();
    let tokens = TokenServer::start(dir.path(), USER, PASSWORD).unwrap();
    let registry = TestRegistry::start_with(&RegistryOptions {
        tls: Some(tls.server_pair()),
        auth_yaml: Some(tokens.registry_yaml()),
        ..RegistryOptions::default()
    })
    .unwrap();
    let (host, image) = push_busybox(&registry);
    assert!(registry.base_url().starts_with("https://"));
    let device: DeviceId = "floor-tls".parse().unwrap();
    let key = SealingKey::load_or_create(&dir.path().join("state")).unwrap();
    let seal = |secret: &str| {
        sealed::seal(
            &public_key(&key),
            &device,
            [0x42; 32],
            format!("{USER}:{secret}").as_bytes(),
        )
        .unwrap()
    };
    let access = RegistryAccess {
        host,
        url: registry.base_url(),
        ca_pem: Some(std::fs::read_to_string(&tls.ca).unwrap()),
        sealed_credentials: Some(seal(PASSWORD)),
    };

    let record = pull_directly(&dir.path().join("ok"), &access, &key, &device, &image).unwrap();
    assert_eq!(record.manifest_digest, image.digest);

    // A wrong credential: the token service's 401, nothing pulled.
    let wrong = RegistryAccess {
        sealed_credentials: Some(seal("wrong")),
        ..access.clone()
    };
    let err = pull_directly(&dir.path().join("wrong"), &wrong, &key, &device, &image).unwrap_err();
    let text = format!("{:#}", anyhow::Error::from(err));
    eprintln!("wrong credential refused: {text}");
    assert!(text.contains("401"), "{text}");

    // Without the private CA the registry's certificate is not trusted.
    let untrusted = RegistryAccess {
        ca_pem: None,
        ..access
    };
    let err =
        pull_directly(&dir.path().join("no-ca"), &untrusted, &key, &device, &image).unwrap_err();
    let text = format!("{:#}", anyhow::Error::from(err));
    eprintln!("unknown CA refused: {text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
}

#[test]
fn engine_pulls_a_direct_image_with_the_sealing_key_it_made_on_first_start() {
    use coracle_agent::engine::{EngineConfig, LinuxEngine};
    use coracle_agent::pull::RegistryEndpoint;
    use coracle_agent::runtime::cgroups::CgroupConfig;
    use coracle_agent::runtime::RuntimeConfig;
    use coracle_agent::supervisor::ContainerEngine;
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let (registry, host, image) = lan_registry(dir.path());
    let device: DeviceId = "floor-1".parse().unwrap();
    // The controller's registry is the LAN registry without credentials here: only the
    // direct client, with the unsealed credential, can pull from it.
    let engine = LinuxEngine::open(EngineConfig {
        data_dir: dir.path().join("data"),
        registry: RegistryEndpoint {
            base_url: registry.base_url(),
            ca_pem: None,
            token: Default::default(),
        },
        runtime: RuntimeConfig {
            state_dir: dir.path().join("run"),
            cgroup: CgroupConfig::default(),
            shim_binary: env!("CARGO_BIN_EXE_coracle-agent").into(),
        },
        store: StoreConfig {
            reserve_bytes: 0,
            ..StoreConfig::default()
        },
        delta_budget: 64 << 20,
        log_max_bytes: 1 << 20,
        log_keep: 2,
        network: coracle_agent::network::NetworkConfig {
            netns_dir: dir.path().join("netns"),
            ..coracle_agent::network::NetworkConfig::device(&dir.path().join("data"))
        },
    })
    .unwrap();
    let key_file = dir.path().join("data/state/sealing.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let reported = engine.sealing_key();
    assert_eq!(reported.len(), 64);

    let mut device_key = [0u8; 32];
    for (i, byte) in device_key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&reported[2 * i..2 * i + 2], 16).unwrap();
    }
    let access = RegistryAccess {
        host: host.clone(),
        url: registry.base_url(),
        ca_pem: None,
        sealed_credentials: Some(
            sealed::seal(
                &device_key,
                &device,
                [0x77; 32],
                format!("{USER}:{PASSWORD}").as_bytes(),
            )
            .unwrap(),
        ),
    };
    // Without its access the image's registry is tried anonymously over HTTPS: refused.
    assert!(engine.pull(&image, None, &mut |_| {}).is_err());
    engine
        .pull(&image, Some((&device, &access)), &mut |_| {})
        .unwrap();
    assert!(engine.images().unwrap().contains(&image.digest));
}
