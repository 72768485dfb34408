//! Pulls from a real third-party OCI registry (Debian's docker-registry, filled by skopeo):
//! a layered image lands in the store, a cut link resumes with HTTP Range instead of starting
//! over, a corrupted blob is refused without storing anything, and a full disk is refused
//! before any download.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use coracle_agent::platform::this_device as host_platform;
use coracle_agent::pull::{PullError, Puller, RegistryClient, RegistryEndpoint};
use coracle_images::store::{Store, StoreConfig};
use coracle_images::Digest;
use coracle_tests::cut_proxy::CutProxy;
use coracle_tests::fixtures;
use coracle_tests::registry::TestRegistry;

fn client(base_url: String) -> RegistryClient {
    RegistryClient::new(RegistryEndpoint {
        base_url,
        ca_pem: None,
        token: Default::default(),
    })
    .unwrap()
}

fn store(dir: &std::path::Path, reserve_bytes: u64) -> Store {
    Store::open(
        dir,
        StoreConfig {
            reserve_bytes,
            ..StoreConfig::default()
        },
    )
    .unwrap()
}

fn push(registry: &TestRegistry, fixture: &str, repo_tag: &str) -> Digest {
    let source = format!("oci-archive:{}", fixtures::path(fixture).display());
    registry.push(&source, repo_tag).unwrap().parse().unwrap()
}

fn puller<'a>(client: &'a RegistryClient, store: &'a Store) -> Puller<'a> {
    Puller {
        client,
        store,
        platform: host_platform(),
        delta_budget: 64 << 20,
    }
}

fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
#[ignore = "needs root"] // overlay whiteouts of the layered image are device nodes + xattrs
fn pulls_a_layered_image_and_a_second_pull_costs_nothing() {
    let registry = TestRegistry::start().unwrap();
    let digest = push(&registry, "busybox-layers-oci.tar", "layers:1");
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), 0);
    let client = client(registry.base_url());
    let mut events = 0;
    let (record, report) = puller(&client, &store)
        .pull("layers", &digest, &mut |_| events += 1)
        .unwrap();
    assert_eq!(record.layers.len(), 4);
    assert_eq!(report.layers_full, 4);
    assert!(events > 0, "no progress reported");
    for layer in &record.layers {
        assert!(store.has_layer(layer));
    }
    let top = store.layer_path(&record.layers[3]);
    assert_eq!(
        std::fs::read_to_string(top.join("data/dir/b.txt")).unwrap(),
        "b\n"
    );
    // Only verified content remains: no partial files.
    assert_eq!(entries(&dir.path().join("partial")), 0);

    let (_, again) = puller(&client, &store)
        .pull("layers", &digest, &mut |_| {})
        .unwrap();
    assert_eq!(again.blob_bytes, 0);
}

#[test]
fn a_cut_link_resumes_where_it_stopped() {
    let registry = TestRegistry::start().unwrap();
    let digest = push(&registry, "busybox-oci.tar", "busybox:1");
    let upstream = format!("127.0.0.1:{}", registry.port).parse().unwrap();
    let proxy = CutProxy::start(upstream).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), 0);
    let client = client(format!("http://{}", proxy.addr));

    // Let the small config blob through, then cut the ~1.08 MB layer after 400 kB.
    let manifest = registry_manifest(&registry, &digest);
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let layer_size = manifest["layers"][0]["size"].as_u64().unwrap();
    proxy.arm(&format!("/blobs/{layer_digest}"), 400_000);
    let err = puller(&client, &store)
        .pull("busybox", &digest, &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(err, PullError::ReadBody { .. }),
        "{:#}",
        anyhow::Error::from(err)
    );
    let held = std::fs::metadata(dir.path().join("partial").join(&layer_digest[7..]))
        .unwrap()
        .len();
    assert!(
        held > 100_000,
        "only {held} bytes kept from the cut transfer"
    );
    assert_eq!(entries(&dir.path().join("layers")), 0);

    proxy.reset_count();
    let (record, report) = puller(&client, &store)
        .pull("busybox", &digest, &mut |_| {})
        .unwrap();
    assert!(store.has_layer(&record.layers[0]));
    assert_eq!(report.layers_full, 1);
    // The second attempt fetched only the missing tail (plus manifest, config, headers).
    let tail = layer_size - held;
    assert!(
        proxy.forwarded() < tail + 20_000,
        "forwarded {} bytes; the missing tail was {tail} of {layer_size}",
        proxy.forwarded()
    );
}

fn registry_manifest(registry: &TestRegistry, digest: &Digest) -> serde_json::Value {
    let url = format!("{}/v2/busybox/manifests/{digest}", registry.base_url());
    let body = ureq::get(&url)
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn a_corrupted_blob_is_refused_and_nothing_is_stored() {
    let registry = TestRegistry::start().unwrap();
    let digest = push(&registry, "busybox-oci.tar", "busybox:1");
    let manifest = registry_manifest(&registry, &digest);
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let data = registry.blob_data_path(&layer_digest[7..]);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), 0);
    let client = client(registry.base_url());
    let err = puller(&client, &store)
        .pull("busybox", &digest, &mut |_| {})
        .unwrap_err();
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(text.contains("hashes to"), "{text}");
    assert_eq!(entries(&dir.path().join("layers")), 0);
    assert_eq!(entries(&dir.path().join("partial")), 0);
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn a_full_disk_is_refused_before_downloading() {
    let registry = TestRegistry::start().unwrap();
    let digest = push(&registry, "busybox-oci.tar", "busybox:1");
    let dir = tempfile::tempdir().unwrap();
    // A reserve larger than any disk: the preflight must refuse.
    let store = store(dir.path(), u64::MAX / 4);
    let client = client(registry.base_url());
    let err = puller(&client, &store)
        .pull("busybox", &digest, &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, PullError::NotEnoughDisk { .. }), "{err:#?}");
    // The operator reads which image, how much it needs and where space is short.
    let text = format!("{:#}", anyhow::Error::from(err));
    let wanted = format!("not enough disk for image busybox@{digest}: need ");
    assert!(text.contains(&wanted), "{text}");
    let place = format!("MiB free on {}", dir.path().display());
    assert!(text.contains(&place), "{text}");
    assert_eq!(entries(&dir.path().join("partial")), 0);
    assert_eq!(entries(&dir.path().join("layers")), 0);
}

#[test]
fn an_unknown_digest_is_a_clear_http_error() {
    let registry = TestRegistry::start().unwrap();
    push(&registry, "busybox-oci.tar", "busybox:1");
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), 0);
    let client = client(registry.base_url());
    let missing: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
    let err = puller(&client, &store)
        .pull("busybox", &missing, &mut |_| {})
        .unwrap_err();
    match err {
        PullError::Status { status, url, .. } => {
            assert_eq!(status, 404);
            assert!(url.contains("/manifests/sha256:abab"), "{url}");
        }
        other => panic!("{other:#?}"),
    }
}
