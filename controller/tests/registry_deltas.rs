//! The delta endpoint with the agent's real puller: two versions of an image are pushed with
//! Debian's `skopeo`; a device holding v1 pulls v2 as a delta far smaller than the layer,
//! and the rebuilt layer's diff_id verifies. Bad delta requests get clear 4xx answers.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use coracle_agent::platform::this_device as host_platform;
use coracle_agent::pull::{Puller, RegistryClient, RegistryEndpoint};
use coracle_images::store::{Store, StoreConfig};
use coracle_images::Digest;
use support::image_layouts::{layer_tar, noise, oci_layout, push_to, sha};
use support::Controller;

fn push(controller: &Controller, layout: &Path, tag: &str) {
    push_to(controller, layout, "fleet/app", tag);
}

fn head_delta(controller: &Controller, target: &str, query: &str) -> u16 {
    head_delta_in(controller, "fleet/app", target, query)
}

fn head_delta_in(controller: &Controller, repository: &str, target: &str, query: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!(
        "http://{}/v2/{repository}/coracle/deltas/{target}?{query}",
        controller.registry
    );
    agent
        .head(&url)
        .header(
            "Authorization",
            &format!("Bearer {}", controller.admin_token()),
        )
        .call()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_device_holding_v1_pulls_v2_as_a_small_delta() {
    let controller = Controller::start();
    let work = controller.dir.path();
    let big = noise(4 << 20, 7);
    let mut big_v2 = big.clone();
    big_v2[1_000_000..1_000_100].copy_from_slice(&noise(100, 9));
    let v1_tar = layer_tar(&[("app", big), ("etc/version", b"1\n".to_vec())]);
    let v2_tar = layer_tar(&[("app", big_v2), ("etc/version", b"2\n".to_vec())]);
    let (v1, _) = oci_layout(&work.join("v1"), &v1_tar);
    let (v2, v2_layer_bytes) = oci_layout(&work.join("v2"), &v2_tar);
    push(&controller, &work.join("v1"), "1");
    push(&controller, &work.join("v2"), "2");

    let client = RegistryClient::new(RegistryEndpoint {
        base_url: format!("http://{}", controller.registry),
        ca_pem: None,
        token: coracle_agent::pull::PullToken::fixed(Some(controller.admin_token())),
    })
    .unwrap();
    let store = Store::open(
        &work.join("device"),
        StoreConfig {
            reserve_bytes: 0,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let puller = Puller {
        client: &client,
        store: &store,
        platform: host_platform(),
        delta_budget: 64 << 20,
    };
    let (_, first) = puller
        .pull("fleet/app", &v1.parse().unwrap(), &mut |_| {})
        .unwrap();
    assert_eq!(first.layers_full, 1);

    let (record, second) = puller
        .pull("fleet/app", &v2.parse().unwrap(), &mut |_| {})
        .unwrap();
    let v2_diff_id: Digest = sha(&v2_tar).parse().unwrap();
    assert_eq!(second.layers_from_delta, 1, "{second:?}");
    assert_eq!(second.layers_full, 0);
    assert!(store.has_layer(&v2_diff_id));
    assert_eq!(record.layers, vec![v2_diff_id]);
    assert!(
        second.blob_bytes * 20 < v2_layer_bytes,
        "delta {} bytes vs layer {v2_layer_bytes}",
        second.blob_bytes
    );
    eprintln!(
        "delta pull: {} bytes transferred; full v2 layer blob {v2_layer_bytes} bytes",
        second.blob_bytes
    );

    // Bad requests are refused with a clear 4xx; a device holding nothing useful gets 404.
    let v2_id = sha(&v2_tar);
    let v1_id = sha(&v1_tar);
    assert_eq!(
        head_delta(&controller, &v2_id, &format!("have={v1_id}")),
        200
    );
    assert_eq!(head_delta(&controller, &v2_id, "have=sha256:zz"), 400);
    assert_eq!(head_delta(&controller, &v2_id, ""), 400);
    let huge = vec![v1_id.as_str(); 300].join(",");
    assert_eq!(
        head_delta(&controller, &v2_id, &format!("have={huge}")),
        400
    );
    // A small layer's delta is the whole-layer kind (format 4: one patch over the old tar,
    // no digest in full), which the agent applied above knowing the layer it asked for.
    let delta = get_delta(&controller, &v2_id, &format!("have={v1_id}"));
    assert_eq!(
        delta[..2],
        coracle_images::delta::whole::WHOLE_MAGIC,
        "{} bytes",
        delta.len()
    );
    let unknown = sha(b"not a layer");
    assert_eq!(
        head_delta(&controller, &unknown, &format!("have={v1_id}")),
        400
    );
    assert_eq!(
        head_delta(&controller, &v2_id, &format!("have={unknown}")),
        404
    );
}

fn get_delta(controller: &Controller, target: &str, query: &str) -> Vec<u8> {
    let url = format!(
        "http://{}/v2/fleet/app/coracle/deltas/{target}?{query}",
        controller.registry
    );
    let mut resp = ureq::get(&url)
        .header(
            "Authorization",
            &format!("Bearer {}", controller.admin_token()),
        )
        .call()
        .unwrap();
    resp.body_mut().read_to_vec().unwrap()
}

fn api_get(controller: &Controller, path: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(&format!("http://{}{path}", controller.api))
        .header(
            "Authorization",
            &format!("Bearer {}", controller.admin_token()),
        )
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// The value of an unlabelled or labelled sample in `/metrics`.
fn metric(controller: &Controller, sample: &str) -> u64 {
    let text = api_get(controller, "/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {sample} in {text}"))
        .parse()
        .unwrap()
}

/// The delta entries of `repository:tag` in `GET /api/v1/images`.
fn tag_deltas(controller: &Controller, repository: &str, tag: &str) -> Vec<serde_json::Value> {
    let listing: serde_json::Value =
        serde_json::from_str(&api_get(controller, "/api/v1/images")).unwrap();
    listing
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == repository)
        .flat_map(|r| r["tags"].as_array().unwrap().iter())
        .find(|t| t["tag"] == tag)
        .map(|t| t["deltas"].as_array().unwrap().clone())
        .unwrap_or_default()
}

/// Waits (bounded) until every delta of the tag has left `queued`/`computing`.
fn wait_for_verdict(
    controller: &Controller,
    repository: &str,
    tag: &str,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let deltas = tag_deltas(controller, repository, tag);
        let pending = deltas.is_empty()
            || deltas.iter().any(|d| {
                ["queued", "computing", "not_planned"].contains(&d["state"].as_str().unwrap())
            });
        if !pending {
            return deltas;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{repository}:{tag} deltas still pending: {deltas:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_pushed_version_gets_its_delta_in_the_background_once() {
    let controller = Controller::start();
    let work = controller.dir.path().to_path_buf();
    // A repository whose layers are not tars: its delta fails, the worker goes on.
    let (_, _) = oci_layout(&work.join("bad1"), &noise(10_000, 3));
    let (_, _) = oci_layout(&work.join("bad2"), &noise(10_000, 4));
    push_to(&controller, &work.join("bad1"), "fleet/bad", "1");
    push_to(&controller, &work.join("bad2"), "fleet/bad", "2");

    let big = noise(4 << 20, 11);
    let mut big_v2 = big.clone();
    big_v2[2_000_000..2_000_100].copy_from_slice(&noise(100, 12));
    let v1_tar = layer_tar(&[("app", big), ("etc/version", b"1\n".to_vec())]);
    let v2_tar = layer_tar(&[("app", big_v2), ("etc/version", b"2\n".to_vec())]);
    let (v1, _) = oci_layout(&work.join("v1"), &v1_tar);
    let (v2, v2_layer_bytes) = oci_layout(&work.join("v2"), &v2_tar);
    push(&controller, &work.join("v1"), "1");
    push(&controller, &work.join("v2"), "2");
    let pushed = std::time::Instant::now();

    // No device has asked: the worker encodes the delta by itself.
    let deltas = wait_for_verdict(&controller, "fleet/app", "2");
    eprintln!(
        "background delta ready {} ms after the push: {deltas:?}",
        pushed.elapsed().as_millis()
    );
    assert_eq!(deltas.len(), 1);
    assert_eq!(deltas[0]["state"], "ready", "{deltas:?}");
    assert_eq!(deltas[0]["full_bytes"], v2_layer_bytes);
    let delta_bytes = deltas[0]["delta_bytes"].as_u64().unwrap();
    assert!(delta_bytes * 20 < v2_layer_bytes, "{delta_bytes}");
    let bad = wait_for_verdict(&controller, "fleet/bad", "2");
    assert_eq!(bad[0]["state"], "failed", "{bad:?}");
    assert!(
        bad[0]["error"].as_str().unwrap().contains("unpack base"),
        "{bad:?}"
    );
    assert_eq!(
        metric(&controller, "coracle_registry_deltas_encoded_total"),
        1
    );
    assert_eq!(
        metric(&controller, "coracle_registry_deltas_failed_total"),
        1
    );
    // A device asking for the failed pair gets the full layer (404), with no second encode.
    let (bad1_id, bad2_id) = (sha(&noise(10_000, 3)), sha(&noise(10_000, 4)));
    let asked = head_delta_in(
        &controller,
        "fleet/bad",
        &bad2_id,
        &format!("have={bad1_id}"),
    );
    assert_eq!(asked, 404);
    assert_eq!(
        metric(&controller, "coracle_registry_deltas_failed_total"),
        1
    );
    assert_eq!(
        metric(&controller, "coracle_registry_delta_queue_length"),
        0
    );
    assert!(metric(&controller, "coracle_registry_delta_bytes_saved_total") > 4_000_000);

    // A device holding v1 gets the delta from the cache: nothing is encoded again.
    let pull_v2 = |controller: &Controller, device: &str| {
        let client = RegistryClient::new(RegistryEndpoint {
            base_url: format!("http://{}", controller.registry),
            ca_pem: None,
            token: coracle_agent::pull::PullToken::fixed(Some(controller.admin_token())),
        })
        .unwrap();
        let store = Store::open(
            &work.join(device),
            StoreConfig {
                reserve_bytes: 0,
                ..StoreConfig::default()
            },
        )
        .unwrap();
        let puller = Puller {
            client: &client,
            store: &store,
            platform: host_platform(),
            delta_budget: 64 << 20,
        };
        puller
            .pull("fleet/app", &v1.parse().unwrap(), &mut |_| {})
            .unwrap();
        let (_, report) = puller
            .pull("fleet/app", &v2.parse().unwrap(), &mut |_| {})
            .unwrap();
        assert_eq!(report.layers_from_delta, 1, "{report:?}");
        assert_eq!(report.blob_bytes, delta_bytes);
    };
    pull_v2(&controller, "device-a");
    assert_eq!(
        metric(&controller, "coracle_registry_deltas_encoded_total"),
        1
    );
    assert_eq!(
        metric(
            &controller,
            "coracle_registry_delta_requests_total{served=\"encoded\"}"
        ),
        0
    );
    assert!(
        metric(
            &controller,
            "coracle_registry_delta_requests_total{served=\"cache\"}"
        ) >= 1
    );

    // After a restart the verdicts are still there: nothing is queued or encoded again.
    let controller = Controller::start_in(controller.stop());
    assert_eq!(
        tag_deltas(&controller, "fleet/app", "2")[0]["state"],
        "ready"
    );
    pull_v2(&controller, "device-b");
    assert_eq!(
        metric(&controller, "coracle_registry_deltas_encoded_total"),
        0
    );
    assert_eq!(
        metric(
            &controller,
            "coracle_registry_delta_requests_total{served=\"encoded\"}"
        ),
        0
    );
}

#[test]
fn concurrent_requests_for_one_delta_encode_it_once() {
    // No background workers: the devices' requests are the only encoders.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[registry]\nlisten = \"127.0.0.1:0\"\n[deltas]\nworkers = 0\n",
        support::data_dir(dir.path())
    );
    let controller = Controller::start_with_config(dir, &text);
    let work = controller.dir.path().to_path_buf();
    let big = noise(4 << 20, 21);
    let mut big_v2 = big.clone();
    big_v2[3_000_000..3_000_100].copy_from_slice(&noise(100, 22));
    let v1_tar = layer_tar(&[("app", big)]);
    let v2_tar = layer_tar(&[("app", big_v2)]);
    oci_layout(&work.join("v1"), &v1_tar);
    oci_layout(&work.join("v2"), &v2_tar);
    push(&controller, &work.join("v1"), "1");
    push(&controller, &work.join("v2"), "2");
    assert_eq!(
        tag_deltas(&controller, "fleet/app", "2")[0]["state"],
        "not_planned"
    );

    let (v1_id, v2_id) = (sha(&v1_tar), sha(&v2_tar));
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| head_delta(&controller, &v2_id, &format!("have={v1_id}"))))
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(statuses, [200; 4]);
    assert_eq!(
        metric(&controller, "coracle_registry_deltas_encoded_total"),
        1
    );
    let served = |how: &str| {
        metric(
            &controller,
            &format!("coracle_registry_delta_requests_total{{served=\"{how}\"}}"),
        )
    };
    assert_eq!(served("encoded"), 1);
    assert_eq!(served("waited") + served("cache"), 3);
    eprintln!(
        "4 concurrent requests: {} waited, {} from cache",
        served("waited"),
        served("cache")
    );
    assert_eq!(
        tag_deltas(&controller, "fleet/app", "2")[0]["state"],
        "ready"
    );
}
