//! End-to-end, issue 16 item 1: an app on its own networks, as Compose runs it, on a real
//! agent in its test host's network namespace. `web` publishes a port on every device
//! address and another on loopback only; `api` is on `front` and on the internal `back`
//! (with an alias) and checks from inside: service names resolve and answer across each
//! network, its `/etc/hosts` and `/etc/resolv.conf` carry `extra_hosts`, `dns`,
//! `dns_search` and `dns_opt`, and it reaches the machine outside. `lonely`, on `back` only,
//! can reach neither `web` (by name or address: the networks are isolated) nor the outside
//! (`back` is internal). The test itself, in another namespace, gets the page through the
//! published port. Root only; takes turns on the test network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::apps::wait_for_probe;
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::image::{build_layout, busybox_files};
use coracle_tests::e2e::{http_get, wait_until};
use coracle_tests::netns::TestNetwork;

/// What every service's `/www/index.html` says.
const PAGE: &str = "coracle-net-page";

/// An HTTP GET of `/` to `host port` with busybox `nc`, bounded by `timeout` (busybox's
/// static `wget` cannot run in an image without glibc's NSS modules), its answer and exit
/// status in `/out/FILE`.
fn get(host: &str, port: &str, file: &str) -> String {
    format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | $$B timeout 5 $$B nc {host} {port} > /out/{file} 2>&1; \
         echo \"exit $$?\" >> /out/{file}"
    )
}

/// `api`'s checks (for `busybox sh`; `$$` is a literal `$` after compose interpolation). Its
/// hosts file is copied once web and db have answered: services start in any order, and the
/// agent rewrites every hosts file as each one comes.
fn api_probe(outside: (&str, &str)) -> String {
    format!(
        "B=/bin/busybox; until {web} && $$B grep -q {PAGE} /out/api_web; do $$B sleep 1; done; \
         until {db} && $$B grep -q {PAGE} /out/api_db; do $$B sleep 1; done; \
         $$B cat /etc/hosts > /out/api_hosts; $$B cat /etc/resolv.conf > /out/api_resolv; \
         {outside}; $$B touch /out/api_done; exec $$B sleep 3600",
        web = get("web", "80", "api_web"),
        db = get("rest-db", "5432", "api_db"),
        outside = get(outside.0, outside.1, "api_outside"),
    )
}

/// `lonely`'s checks: web by name, by the address `api` saw, and the outside.
fn lonely_probe(outside: (&str, &str)) -> String {
    format!(
        "B=/bin/busybox; until [ -f /out/api_done ]; do $$B sleep 1; done; {by_name}; \
         WEB=$$($$B awk '$$2 == \"web\" {{print $$1}}' /out/api_hosts); echo \"$$WEB\" > /out/lonely_web_ip; \
         {by_ip}; {outside}; $$B touch /out/lonely_done; exec $$B sleep 3600",
        by_name = get("web", "80", "lonely_by_name"),
        by_ip = get("$$WEB", "80", "lonely_by_ip"),
        outside = get(outside.0, outside.1, "lonely_outside"),
    )
}

fn app(dir: &Path, outside: (&str, &str)) -> PathBuf {
    let compose = format!(
        r#"services:
  web:
    image: hello:1
    command: ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
    networks: [front]
    ports:
      - "8080:80"
      - target: 80
        published: "8081"
        host_ip: 127.0.0.1
  api:
    image: hello:1
    command: ["/bin/busybox", "sh", "-c", "{api}"]
    volumes: ["out:/out"]
    networks:
      front:
      back:
        aliases: [rest]
    extra_hosts: ["printer.lan:192.168.1.50"]
    dns: [10.213.0.1]
    dns_search: corp.example
    dns_opt: ["ndots:2"]
  db:
    image: hello:1
    command: ["/bin/busybox", "httpd", "-f", "-p", "5432", "-h", "/www"]
    networks:
      back:
        aliases: [rest-db]
  lonely:
    image: hello:1
    command: ["/bin/busybox", "sh", "-c", "{lonely}"]
    volumes: ["out:/out"]
    networks: [back]
networks:
  front:
  back:
    internal: true
"#,
        api = api_probe(outside).replace('"', "\\\""),
        lonely = lonely_probe(outside).replace('"', "\\\""),
    );
    let path = dir.join("app.yml");
    std::fs::write(&path, compose).unwrap();
    path
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
#[ignore = "needs root"]
fn an_app_gets_its_networks_names_ports_and_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    let files = busybox_files(PAGE, vec![]).unwrap();
    let image = build_layout(&dir.path().join("img"), "1", &files).unwrap();
    controller.push(&image.source, "hello:1").unwrap();
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-net", dir.path()).unwrap();
    let agent = Agent::start("pi-net", &host, dir.path(), &bootstrap).unwrap();
    let outside = controller.registry.split_once(':').unwrap();
    controller
        .deploy(&app(dir.path(), outside), "pi-net")
        .unwrap();

    let out = agent.data_dir.join("volumes/out");
    wait_for_probe(
        &controller,
        "pi-net",
        &out.join("lonely_done"),
        Duration::from_secs(120),
    )
    .unwrap();

    // Service names and aliases answer across each network api shares.
    assert!(read(&out, "api_web").contains(PAGE), "web's page");
    assert!(read(&out, "api_db").contains(PAGE), "db's page");
    let hosts = read(&out, "api_hosts");
    for name in [
        "\tweb",
        "\tdb rest-db",
        "\tapi rest",
        "192.168.1.50\tprinter.lan",
    ] {
        assert!(
            hosts.contains(name),
            "{name:?} missing from api's hosts:\n{hosts}"
        );
    }
    assert!(
        hosts.contains("\tlonely"),
        "api shares back with lonely:\n{hosts}"
    );
    let resolv = read(&out, "api_resolv");
    for line in [
        "nameserver 10.213.0.1",
        "search corp.example",
        "options ndots:2",
    ] {
        assert!(resolv.contains(line), "{line:?} missing from:\n{resolv}");
    }
    // front is not internal: the registry outside (TLS) answers, with an alert to the
    // plain request.
    let outside = read(&out, "api_outside");
    assert!(
        outside.contains("exit 0") && outside.len() > "exit 0\n".len(),
        "{outside:?}"
    );

    // lonely (back only) reaches web neither by name nor by address, nor the outside.
    let by_name = read(&out, "lonely_by_name");
    assert!(by_name.contains("bad address"), "{by_name}");
    let web_ip = read(&out, "lonely_web_ip");
    assert!(
        web_ip.trim().starts_with("172."),
        "web's address: {web_ip:?}"
    );
    let by_ip = read(&out, "lonely_by_ip");
    assert!(
        !by_ip.contains("exit 0") && !by_ip.contains(PAGE),
        "{by_ip}"
    );
    let lonely_outside = read(&out, "lonely_outside");
    assert!(
        lonely_outside.contains("exit ") && !lonely_outside.contains("exit 0"),
        "an internal network reached the outside: {lonely_outside:?}"
    );

    // The published port answers at the device's address from another namespace (this
    // test's); the loopback-only one does not.
    wait_until("the published port", Duration::from_secs(30), || {
        let page = http_get(host.addr, 8080, "/").map_err(|e| format!("{e:#}"))?;
        page.contains(PAGE).then_some(()).ok_or(page)
    })
    .unwrap();
    assert!(
        http_get(host.addr, 8081, "/").is_err(),
        "127.0.0.1:8081 was published on every address"
    );
    let inside = host
        .run(|| http_get(std::net::Ipv4Addr::LOCALHOST, 8081, "/").map_err(|e| format!("{e:#}")))
        .unwrap();
    assert!(
        inside.unwrap().contains(PAGE),
        "127.0.0.1:8081 on the device"
    );

    // `coracle top` names each service and counts the traffic of its own namespace: the
    // pages this test fetched through the published port went out of `web`.
    for _ in 0..30 {
        http_get(host.addr, 8080, "/").unwrap();
    }
    wait_until(
        "coracle top to show web's traffic",
        Duration::from_secs(60),
        || {
            let text = controller
                .cli(&["top", "pi-net", "--json"])
                .map_err(|e| format!("{e:#}"))?;
            let rows: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let rows = rows.as_array().ok_or_else(|| text.clone())?;
            let mut names: Vec<&str> = rows.iter().filter_map(|r| r["service"].as_str()).collect();
            names.sort_unstable();
            let web = rows.iter().find(|r| r["service"] == "web");
            let sent = web.and_then(|w| w["net_tx_kib"].as_u64()).unwrap_or(0);
            match names == ["api", "db", "lonely", "web"] && sent >= 4 {
                true => Ok(()),
                false => Err(text),
            }
        },
    )
    .unwrap();
    let table = controller.cli(&["top", "pi-net"]).unwrap();
    assert!(
        table.contains("lonely") && table.contains("NET OUT"),
        "{table}"
    );
    let fleet = controller.cli(&["top"]).unwrap();
    assert!(fleet.contains("pi-net"), "{fleet}");
}
