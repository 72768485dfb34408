//! Device nodes the spec describes (OCI `linux.devices`), for real (root only): made with
//! exactly the given type, numbers, mode and owner, with no host node needed; in a user
//! namespace, where mknod of devices is refused, the host's node of the same path.

mod runtime_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use coracle_agent::runtime::spec::{Device, DeviceAccess, DeviceNode, IdMapping, NodeKind};
use runtime_support::Harness;

fn described(path: &str, kind: NodeKind, numbers: (u64, u64), mode: u32, owner: u32) -> Device {
    Device {
        host_path: path.into(),
        container_path: Some(path.into()),
        access: DeviceAccess::ALL,
        node: Some(DeviceNode {
            kind,
            major: numbers.0,
            minor: numbers.1,
            mode,
            uid: owner,
            gid: owner + 1,
        }),
    }
}

const STAT: &str = "stat -c '%n|%F|%t %T|%a|%u:%g'";

#[test]
#[ignore = "needs root"]
fn described_nodes_are_made_with_the_given_type_numbers_mode_and_owner() {
    let h = Harness::new();
    // None of these paths exists on the host: the nodes come from the spec alone.
    let paths = ["/dev/coracle-fuse", "/dev/coracle-blk", "/dev/coracle-fifo"];
    for path in paths {
        assert!(!Path::new(path).exists(), "{path} exists on the host");
    }
    let mut spec = h.spec(&format!("{STAT} {}", paths.join(" ")));
    spec.devices = vec![
        described(paths[0], NodeKind::Char, (10, 229), 0o640, 0),
        described(paths[1], NodeKind::Block, (7, 200), 0o600, 1000),
        described(paths[2], NodeKind::Fifo, (0, 0), 0o620, 2000),
    ];
    let (state, log) = h.run("described", &spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "/dev/coracle-fuse|character special file|a e5|640|0:1",
            "/dev/coracle-blk|block special file|7 c8|600|1000:1001",
            "/dev/coracle-fifo|fifo|0 0|620|2000:2001",
        ]
    );
    h.assert_clean();
}

#[test]
#[ignore = "needs root"]
fn in_a_user_namespace_a_described_device_is_the_hosts_node_and_a_fifo_is_made() {
    let h = Harness::new();
    // The host's node at the described path: a /dev/null twin with its own mode.
    let host_node = h.dir.path().join("null-twin");
    nix::sys::stat::mknod(
        &host_node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o606),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    // Exactly 0606 (mknod applied the umask): container root is "other" to it.
    std::fs::set_permissions(&host_node, std::fs::Permissions::from_mode(0o606)).unwrap();
    let mut spec = h.spec(&format!(
        "{STAT} /dev/twin /dev/coracle-fifo; echo x > /dev/twin && echo written"
    ));
    spec.user_namespace = Some(IdMapping::root_at(300_000, 65_536));
    let mut twin = described("/dev/twin", NodeKind::Char, (1, 3), 0o666, 0);
    twin.host_path = host_node;
    spec.devices = vec![
        twin,
        described("/dev/coracle-fifo", NodeKind::Fifo, (0, 0), 0o600, 0),
    ];
    let (state, log) = h.run("userns-dev", &spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    let lines: Vec<_> = log.lines().collect();
    // Host root owns the bound node: unmapped, so the overflow id inside.
    assert_eq!(
        lines[..2],
        [
            "/dev/twin|character special file|1 3|606|65534:65534",
            "/dev/coracle-fifo|fifo|0 0|600|0:1",
        ],
        "{log}"
    );
    assert_eq!(lines[2], "written", "{log}");
    h.assert_clean();
}
