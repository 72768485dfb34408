//! Blobs on S3-compatible object storage (`[blobs.s3]`) against a real radosgw (Debian's
//! Ceph, `coracle_tests::radosgw`): pushes written through to the bucket, a second
//! controller with an empty data dir serving them, devices redirected to pre-signed URLs
//! without their token, expired URLs refused, and the errors of a wrong secret, a missing
//! bucket and a stopped store. Skipped, with a message, when radosgw is not installed.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use coracle_agent::platform::this_device as host_platform;
use coracle_agent::pull::{PullToken, Puller, RegistryClient, RegistryEndpoint};
use coracle_controller::object_store::{ObjectStore, S3Config};
use coracle_images::store::{Store, StoreConfig};
use coracle_tests::cut_proxy::CutProxy;
use coracle_tests::radosgw::{RadosGw, ACCESS_KEY, SECRET_KEY};
use support::fake_agent::fake_agent;
use support::image_layouts::{layer_tar, noise, oci_layout, push_to, sha};
use support::Controller;

fn s3_config(
    endpoint: &str,
    bucket: &str,
    secret: &str,
    redirect: bool,
    expiry_s: u64,
) -> S3Config {
    S3Config {
        endpoint: endpoint.into(),
        bucket: bucket.into(),
        region: "us-east-1".into(),
        access_key: ACCESS_KEY.into(),
        secret_key: Some(secret.into()),
        secret_key_file: None,
        presign_expiry_s: expiry_s,
        redirect,
    }
}

/// The `[blobs.s3]` section of `config`.
fn section(config: &S3Config) -> String {
    format!(
        "\n[blobs.s3]\nendpoint = {:?}\nbucket = {:?}\naccess_key = {:?}\nsecret_key = {:?}\npresign_expiry_s = {}\nredirect = {}\n",
        config.endpoint,
        config.bucket,
        config.access_key,
        config.secret_key.as_deref().unwrap(),
        config.presign_expiry_s,
        config.redirect
    )
}

/// A controller in a new temp dir writing its blobs through to `config`'s bucket.
fn controller_on(config: &S3Config) -> Controller {
    let dir = tempfile::tempdir().unwrap();
    let text = Controller::config_text(dir.path(), "", "", "") + &section(config);
    Controller::start_with_config(dir, &text)
}

/// The controller's own S3 client on `config`'s bucket.
fn store_of(config: &S3Config) -> ObjectStore {
    ObjectStore::new(config).unwrap()
}

/// A new bucket on the gateway.
fn bucket(config: &S3Config) -> ObjectStore {
    let store = store_of(config);
    store.create_bucket().unwrap();
    store
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo must be installed (.ci/packages.txt)")
}

fn pull(controller: &Controller, repo_tag: &str, into: &Path) -> std::process::Output {
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("coracle:{}", controller.admin_token()),
        &format!("docker://{}/{repo_tag}", controller.registry),
        &format!("oci:{}:1", into.display()),
    ])
}

/// The digests of the image's manifest, config and layers in the registry.
fn blob_digests(controller: &Controller, repo_tag: &str) -> Vec<String> {
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &format!("coracle:{}", controller.admin_token()),
        &format!("docker://{}/{repo_tag}", controller.registry),
    ]);
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for layer in manifest["layers"].as_array().unwrap() {
        digests.push(layer["digest"].as_str().unwrap().to_string());
    }
    digests
}

fn key(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// Waits for `done`, polling, at most `timeout`.
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent()
}

fn basic(controller: &Controller) -> String {
    use base64::Engine as _;
    let pair = format!("coracle:{}", controller.admin_token());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[test]
fn pushed_blobs_reach_the_bucket_and_a_second_controller_serves_them() {
    let Some(gateway) = RadosGw::start().unwrap() else {
        return;
    };
    let config = s3_config(&gateway.endpoint, "shared", SECRET_KEY, false, 900);
    let store = bucket(&config);
    let first = controller_on(&config);
    let manifest = support::push_fixture(&first, "library/app:1");

    let mut digests = blob_digests(&first, "library/app:1");
    digests.push(manifest.clone());
    for digest in &digests {
        let size = store.head(&key(digest)).unwrap();
        assert!(size.is_some_and(|s| s > 0), "{digest} not in the bucket");
    }
    // An agent release is stored the same way: every blob in the data dir is in the bucket.
    let build = first.dir.path().join("agent-arm64");
    std::fs::write(&build, fake_agent(183, "0.3.0")).unwrap();
    let out = first.cli(&["agent", "release", build.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let blobs = std::fs::read_dir(first.data_dir().join("blobs/sha256")).unwrap();
    let local: Vec<String> = blobs
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(local.len() > digests.len(), "no release blobs: {local:?}");
    for hex in &local {
        let size = store.head(&format!("blobs/sha256/{hex}")).unwrap();
        assert!(size.is_some(), "local blob {hex} not in the bucket");
    }

    // A replica with an empty data dir on the same bucket pins the tag for a deploy (its
    // platform check reads the manifest and config from the bucket)...
    let second = controller_on(&config);
    second.enrol("pi-replica");
    let app = second.dir.path().join("app.yml");
    std::fs::write(
        &app,
        "services:\n  web:\n    image: library/app:1\n    command: [\"/bin/sleep\", \"300\"]\n",
    )
    .unwrap();
    let out = second.cli(&["deploy", app.to_str().unwrap(), "--device", "pi-replica"]);
    assert!(out.status.success(), "{out:?}");
    let shown = second.cli(&["device", "show", "pi-replica"]);
    let detail: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(detail["device"]["desired_generation"], 1, "{detail}");
    // ...and serves the same image to skopeo.
    let back = second.dir.path().join("back");
    let out = pull(&second, "library/app:1", &back);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"].as_str().unwrap(), manifest);
    for digest in &digests {
        let hex = digest.trim_start_matches("sha256:");
        assert!(back.join("blobs/sha256").join(hex).is_file(), "{digest}");
        // The replica cached what it fetched.
        assert!(
            second.data_dir().join("blobs/sha256").join(hex).is_file(),
            "{digest}"
        );
    }
}

#[test]
fn devices_follow_the_redirect_without_their_token_and_expired_urls_are_refused() {
    let Some(gateway) = RadosGw::start().unwrap() else {
        return;
    };
    // The controller (and so every pre-signed URL) reaches the gateway through a proxy
    // that keeps what each client sent.
    let proxy = CutProxy::start(gateway.addr).unwrap();
    let config = s3_config(
        &format!("http://{}", proxy.addr),
        "redirects",
        SECRET_KEY,
        true,
        3,
    );
    bucket(&config);
    let controller = controller_on(&config);
    support::push_fixture(&controller, "library/app:1");
    let digests = blob_digests(&controller, "library/app:1");
    let token = controller.admin_token();

    // The agent's own client: the blob comes from the bucket, verified against its digest.
    let client = RegistryClient::new(RegistryEndpoint {
        base_url: format!("http://{}", controller.registry),
        ca_pem: None,
        token: PullToken::fixed(Some(token.clone())),
    })
    .unwrap();
    let config_digest = digests[0].parse().unwrap();
    client.small_blob("library/app", &config_digest).unwrap();

    // The agent's puller: v1 whole, then v2 as a delta the controller encodes on request
    // and writes through to the bucket; every blob comes through a redirect.
    let work = controller.dir.path();
    let big = noise(2 << 20, 7);
    let mut big_v2 = big.clone();
    big_v2[500_000..500_100].copy_from_slice(&noise(100, 9));
    let (v1_tar, v2_tar) = (layer_tar(&[("app", big)]), layer_tar(&[("app", big_v2)]));
    let (v1, _) = oci_layout(&work.join("v1"), &v1_tar);
    let (v2, _) = oci_layout(&work.join("v2"), &v2_tar);
    push_to(&controller, &work.join("v1"), "fleet/app", "1");
    push_to(&controller, &work.join("v2"), "fleet/app", "2");
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
    puller
        .pull("fleet/app", &v1.parse().unwrap(), &mut |_| {})
        .unwrap();
    let (_, report) = puller
        .pull("fleet/app", &v2.parse().unwrap(), &mut |_| {})
        .unwrap();
    assert_eq!(report.layers_from_delta, 1, "{report:?}");
    let (v1_id, v2_id) = (sha(&v1_tar).parse().unwrap(), sha(&v2_tar).parse().unwrap());
    let offer = client
        .delta_offer("fleet/app", &v2_id, &[v1_id])
        .unwrap()
        .unwrap();
    let delta_key = key(&offer.digest.to_string());
    assert!(
        store_of(&config).head(&delta_key).unwrap().is_some(),
        "delta not in the bucket"
    );

    let seen = proxy.requests_seen();
    assert!(
        seen.contains(&format!("GET /redirects/{delta_key}?X-Amz-")),
        "delta not redirected"
    );
    assert!(
        seen.contains("X-Amz-Signature="),
        "no pre-signed GET reached the store"
    );
    assert!(
        !seen.contains(&token),
        "the registry token was sent to the object store"
    );

    // skopeo follows the redirect too.
    let back = controller.dir.path().join("back");
    let out = pull(&controller, "library/app:1", &back);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Neither the agent nor skopeo sent registry credentials to the store (the
    // controller's own requests carry SigV4 authorizations only).
    let seen = proxy.requests_seen().to_ascii_lowercase();
    assert!(
        !seen.contains("authorization: bearer"),
        "a bearer token reached the store"
    );
    assert!(
        !seen.contains("authorization: basic"),
        "basic credentials reached the store"
    );

    // The URL works now (a Range too: a cut download resumes through it) and is refused
    // once its 3 s are over.
    let resp = http()
        .get(format!(
            "http://{}/v2/library/app/blobs/{}",
            controller.registry, digests[1]
        ))
        .header("Authorization", basic(&controller))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 307);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(http().get(&location).call().unwrap().status().as_u16(), 200);
    let mut part = http()
        .get(&location)
        .header("Range", "bytes=0-9")
        .call()
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.body_mut().read_to_vec().unwrap().len(), 10);
    wait_for(
        "the pre-signed URL to expire",
        Duration::from_secs(60),
        || http().get(&location).call().unwrap().status().as_u16() == 403,
    );
}

#[test]
fn a_wrong_secret_a_missing_bucket_and_a_stopped_store_fail_with_their_causes() {
    let Some(mut gateway) = RadosGw::start().unwrap() else {
        return;
    };
    let good = s3_config(&gateway.endpoint, "errors", SECRET_KEY, true, 900);
    bucket(&good);

    for (config, cause) in [
        (
            s3_config(&gateway.endpoint, "errors", "not-the-secret", true, 900),
            "refused the credentials of access key coracle-test (SignatureDoesNotMatch)",
        ),
        (
            s3_config(&gateway.endpoint, "no-such-bucket", SECRET_KEY, true, 900),
            "bucket no-such-bucket does not exist",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let text = Controller::config_text(dir.path(), "", "", "") + &section(&config);
        let file = dir.path().join("coracle.toml");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_coracle"))
            .args(["serve", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(cause), "{stderr}");
    }

    let controller = controller_on(&good);
    support::push_fixture(&controller, "library/app:1");
    gateway.stop_gateway();

    // Blobs this controller holds are still served (streamed instead of redirected).
    let back = controller.dir.path().join("back");
    let out = pull(&controller, "library/app:1", &back);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A new blob cannot be stored: the error names the store, and the blob is not recorded.
    let body = b"a blob pushed while the object store is down";
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body))
    );
    let url = format!(
        "http://{}/v2/library/app/blobs/uploads/?digest={digest}",
        controller.registry
    );
    let mut resp = http()
        .post(&url)
        .header("Authorization", basic(&controller))
        .send(&body[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    let text = resp.body_mut().read_to_string().unwrap();
    assert!(text.contains("is unreachable"), "{text}");
    let head = http()
        .head(format!(
            "http://{}/v2/library/app/blobs/{digest}",
            controller.registry
        ))
        .header("Authorization", basic(&controller))
        .call()
        .unwrap();
    assert!(head.status().as_u16() >= 400, "{}", head.status());
    let hex = digest.trim_start_matches("sha256:");
    assert!(!controller
        .data_dir()
        .join("blobs/sha256")
        .join(hex)
        .exists());

    // A controller starting while the store is down starts (it warns) and answers.
    let late = controller_on(&good);
    let ping = http()
        .get(format!("http://{}/v2/", late.registry))
        .header("Authorization", basic(&late))
        .call()
        .unwrap();
    assert_eq!(ping.status().as_u16(), 200);
}

#[test]
fn blobs_stored_before_the_bucket_was_configured_are_copied_to_it() {
    let Some(gateway) = RadosGw::start().unwrap() else {
        return;
    };
    let config = s3_config(&gateway.endpoint, "backfill", SECRET_KEY, true, 900);
    let store = bucket(&config);
    // A controller on local disk only, then the same data dir with the bucket configured.
    let before = Controller::start();
    let manifest = support::push_fixture(&before, "library/app:1");
    let mut digests = blob_digests(&before, "library/app:1");
    digests.push(manifest);
    let dir = before.stop();
    let text = Controller::config_text(dir.path(), "", "", "") + &section(&config);
    let after = Controller::start_with_config(dir, &text);
    wait_for(
        "the local blobs in the bucket",
        Duration::from_secs(60),
        || {
            digests
                .iter()
                .all(|d| store.head(&key(d)).unwrap().is_some())
                && store.head("repos/library/app/tags/1").unwrap().is_some()
        },
    );
    // So a replica with an empty data dir serves them.
    let replica = controller_on(&config);
    let back = replica.dir.path().join("back");
    let out = pull(&replica, "library/app:1", &back);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(after);
}
