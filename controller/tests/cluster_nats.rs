//! Two `coracle serve` replicas on PostgreSQL and a three-node nats-server cluster (Debian's
//! 2.9, JetStream on), devices on different nodes through NATS's MQTT interface over TLS.
//! NATS's MQTT has no shared subscriptions, so the replicas take health, reported states
//! and events through a NATS queue group on the native protocol; presence, commands and
//! desired states stay on MQTT. Shown: every device online on both replicas, the ingest
//! split between them, the per-device permissions (no reading or forging another device's
//! topics), last wills and retained messages across nodes, and a rollout completed after
//! the replica driving it is SIGKILLed. With radosgw installed (Debian's Ceph), the
//! replicas also keep their blobs on object storage: the rollout's image is pushed to one
//! replica, written through to the bucket, and pinned from it.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coracle_controller::broker::acl::CONTROLLER_USER;
use coracle_controller::object_store::{ObjectStore, S3Config};
use coracle_proto::{Bootstrap, TopicKind};
use coracle_tests::radosgw::{RadosGw, ACCESS_KEY, SECRET_KEY};
use coracle_tests::sim::{Fleet, FleetConfig, FleetStats};
use rumqttc::{Incoming, QoS, SubscribeReasonCode};
use support::nats::{nats_server_installed, NatsCluster};
use support::replica::{
    assert_ingest_split, enrol, fleet_stream, kill_the_driver_mid_rollout, wait_presence, Replica,
};
use support::{connect, connect_device, device_options, next_matching};

const NODES: usize = 3;
const DEVICES: usize = 6;

/// The simulated devices of node `node`: every third bootstrap, over TLS.
fn fleet_on(cluster: &NatsCluster, node: usize, boots: &[Bootstrap]) -> Fleet {
    let mine: Vec<Bootstrap> = boots.iter().skip(node).step_by(NODES).cloned().collect();
    let port = cluster.nodes[node].mqtt.port();
    let mut config =
        FleetConfig::from_bootstraps("127.0.0.1", port, &mine, Duration::from_secs(1)).unwrap();
    config.tls_ca_pem = Some(mine[0].ca_pem.clone());
    Fleet::start(config)
}

/// MQTT options of the controller's user on `node` (full permissions), as a probe.
fn controller_probe(
    cluster: &NatsCluster,
    node: usize,
    data: &std::path::Path,
    id: &str,
) -> rumqttc::MqttOptions {
    let ca = std::fs::read_to_string(data.join("ca.pem")).unwrap();
    let password = std::fs::read_to_string(data.join("controller-mqtt.password")).unwrap();
    device_options(
        cluster.nodes[node].mqtt,
        &ca,
        id,
        CONTROLLER_USER,
        password.trim(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_share_a_nats_cluster_and_a_rollout_survives_its_driver() {
    if !nats_server_installed() {
        eprintln!("skipped: nats-server is not installed (Debian's nats-server package)");
        return;
    }
    let Some(store_url) = coracle_tests::postgres::shared_database().unwrap() else {
        eprintln!("skipped: PostgreSQL is not installed (Debian's postgresql package)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (data, nats_dir) = (dir.path().join("data"), dir.path().join("nats"));
    let started = Instant::now();
    // The object store first: dropped (its processes stopped) however the test ends.
    let gateway = RadosGw::start().unwrap();
    let cluster = NatsCluster::start(&data, &nats_dir, NODES, true);
    // NATS creates its MQTT streams (replicated on the three nodes) on the first MQTT
    // connection; until then a node refuses MQTT clients.
    for node in 0..NODES {
        let deadline = Instant::now() + support::replica::WAIT;
        while connect(controller_probe(&cluster, node, &data, "probe"))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "MQTT on node {node} never came up"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "cluster of {NODES} serving MQTT after {:?}",
        started.elapsed()
    );

    let bucket = gateway.as_ref().map(|gateway| {
        let config = S3Config {
            endpoint: gateway.endpoint.clone(),
            bucket: "fleet".into(),
            region: "us-east-1".into(),
            access_key: ACCESS_KEY.into(),
            secret_key: Some(SECRET_KEY.into()),
            secret_key_file: None,
            presign_expiry_s: 900,
            redirect: true,
        };
        let store = ObjectStore::new(&config).unwrap();
        store.create_bucket().unwrap();
        (config, store)
    });
    let blobs_section = bucket.as_ref().map_or(String::new(), |(config, _)| {
        format!(
            "\n[blobs.s3]\nendpoint = {:?}\nbucket = {:?}\naccess_key = {:?}\nsecret_key = {:?}\nredirect = true",
            config.endpoint, config.bucket, config.access_key, SECRET_KEY
        )
    });

    // Replica i speaks MQTT to node i and takes its telemetry from node i's queue group.
    let section = |i: usize| {
        format!(
            "external_url = \"mqtts://127.0.0.1:{}\"\nnats_ingest = {:?}\nnats_dir = {:?}{blobs_section}",
            cluster.nodes[i].mqtt.port(),
            cluster.client_url(i, true),
            nats_dir,
        )
    };
    let mut replicas = vec![Replica::start(dir.path(), "a", &store_url, &section(0))];
    replicas.push(Replica::start(dir.path(), "b", &store_url, &section(1)));

    // Devices enrolled through either replica get their NATS accounts (every node reloaded).
    let boots: Vec<Bootstrap> = (0..DEVICES)
        .map(|i| enrol(&replicas[i % 2].api(), &format!("harbour-{i}"), "harbour"))
        .collect();
    let ids: Vec<_> = boots.iter().map(|b| b.device.clone()).collect();
    let mut fleets: Vec<Fleet> = (0..NODES).map(|n| fleet_on(&cluster, n, &boots)).collect();
    for replica in &replicas {
        wait_presence(replica, &ids, true).await;
    }
    eprintln!(
        "{DEVICES} devices on {NODES} nodes online on both replicas after {:?}",
        started.elapsed()
    );

    // The ingest is split between the replicas by the queue group.
    let streams: Vec<_> = replicas
        .iter()
        .map(|r| fleet_stream(r.api, &r.data))
        .collect();
    let stats: Vec<Arc<FleetStats>> = fleets.iter().map(|f| f.stats.clone()).collect();
    let published = move || {
        stats
            .iter()
            .map(|s| s.published.load(Ordering::Relaxed))
            .sum()
    };
    let (split, window) = assert_ingest_split(&replicas, &streams, published).await;
    eprintln!("telemetry split {split:?} of {window} messages");

    // Last wills cross the cluster: node 3's devices vanish, both replicas see them offline.
    let on_last: Vec<_> = ids.iter().skip(NODES - 1).step_by(NODES).cloned().collect();
    fleets.pop().unwrap().stop().await;
    for replica in &replicas {
        wait_presence(replica, &on_last, false).await;
    }
    fleets.push(fleet_on(&cluster, NODES - 1, &boots));
    for replica in &replicas {
        wait_presence(replica, &ids, true).await;
    }

    // Enrolling the spies reloads every node: the rollout after it shows the devices'
    // subscriptions survived the reloads.
    permissions_hold(&cluster, &replicas, &data).await;

    // The app: with object storage, an image pushed to replica a (its blobs written through
    // to the bucket) and pinned by tag; without, a digest nobody pulls.
    let image = match &bucket {
        Some((_, store)) => {
            let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
            let manifest = support::push_fixture_to(&replicas[0].registry, &token, "library/app:1");
            let key = format!("blobs/sha256/{}", manifest.trim_start_matches("sha256:"));
            assert!(
                store.head(&key).unwrap().is_some(),
                "the pushed manifest {manifest} is not in the bucket"
            );
            eprintln!("library/app:1 ({manifest}) pushed to replica a and in the bucket");
            "library/app:1".to_string()
        }
        None => format!("example/web@sha256:{}", "b".repeat(64)),
    };
    let id = kill_the_driver_mid_rollout(&mut replicas, &streams, &store_url, &image).await;
    eprintln!("rollout {id} completed; total {:?}", started.elapsed());

    // The desired state the controllers published stays retained on every node: a client
    // that subscribes afterwards on node 3 gets it.
    let (probe, mut events) = connect(controller_probe(&cluster, 2, &data, "retained-probe"))
        .await
        .unwrap();
    let desired = TopicKind::Desired.for_device(&ids[0]);
    probe.subscribe(&desired, QoS::AtLeastOnce).await.unwrap();
    let body = next_matching(&mut events, |i| match i {
        Incoming::Publish(p) if p.topic == desired && p.retain => Some(p.payload.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert!(!body.is_empty());
    for fleet in fleets {
        fleet.stop().await;
    }
}

/// The return codes of the next SUBACK.
async fn suback(events: &mut rumqttc::EventLoop) -> Vec<SubscribeReasonCode> {
    next_matching(events, |i| match i {
        Incoming::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await
    .unwrap()
}

/// A device (two enrolled outside the fleet's tag) cannot subscribe to another device's
/// topics, nor publish on them; its own subscription works.
async fn permissions_hold(cluster: &NatsCluster, replicas: &[Replica], data: &std::path::Path) {
    let spy = enrol(&replicas[0].api(), "spy-a", "quay");
    let victim = enrol(&replicas[1].api(), "spy-b", "quay");
    let node = cluster.nodes[2].mqtt;
    // The account appears once every node reloaded: retry until it logs in.
    let deadline = Instant::now() + support::replica::WAIT;
    let (client, mut events) = loop {
        match connect_device(node, &spy).await {
            Ok(connected) => break connected,
            Err(err) => assert!(Instant::now() < deadline, "spy-a never logged in: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for topic in [
        TopicKind::Desired.for_device(&victim.device),
        TopicKind::Desired.for_all_devices(),
        TopicKind::Health.for_device(&victim.device),
    ] {
        client.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
        let codes = suback(&mut events).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Failure], "{topic}");
    }
    client
        .subscribe(TopicKind::Desired.for_device(&spy.device), QoS::AtLeastOnce)
        .await
        .unwrap();
    let codes = suback(&mut events).await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    // An observer with every permission, on another node, watches both devices' progress.
    let (observer, mut seen) = connect(controller_probe(cluster, 1, data, "observer"))
        .await
        .unwrap();
    for device in [&victim.device, &spy.device] {
        observer
            .subscribe(TopicKind::Progress.for_device(device), QoS::AtMostOnce)
            .await
            .unwrap();
        suback(&mut seen).await;
    }
    // The forged message goes first; the spy's own message after it, on the same
    // connection and route, so had the forgery passed it would arrive first.
    let forged = TopicKind::Progress.for_device(&victim.device);
    let own = TopicKind::Progress.for_device(&spy.device);
    client
        .publish(&forged, QoS::AtMostOnce, false, "forged")
        .await
        .unwrap();
    client
        .publish(&own, QoS::AtMostOnce, false, "own")
        .await
        .unwrap();
    let driver = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let first = next_matching(&mut seen, |i| match i {
        Incoming::Publish(p) => Some(p.topic.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(first, own, "a device published on another device's topic");
    driver.abort();
    drop(client);
}
