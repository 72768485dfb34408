//! Failed creates leave no zombie shims behind (issue 15): the runtime reaps the shim it
//! spawned when the shim reports a failure, since no `delete` will (root only). Alone in
//! its test binary, so no other test's shims are children of this process meanwhile.

mod runtime_support;

use std::fs;

use coracle_agent::runtime::spec::Rootfs;
use coracle_agent::runtime::{ContainerId, Runtime};
use runtime_support::Harness;

/// Children of this process that are zombies (exited, never waited for).
fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            out.push(pid);
        }
    }
    out
}

#[test]
#[ignore = "needs root"]
fn failed_creates_leave_no_zombie_shims() {
    let h = Harness::new();
    assert_eq!(
        zombie_children(),
        Vec::<i32>::new(),
        "zombies before the test"
    );
    let id: ContainerId = "broken".parse().unwrap();
    for _ in 0..5 {
        let mut spec = h.spec("true");
        spec.rootfs = Rootfs::Directory(h.dir.path().join("no-such-rootfs"));
        let err = h.runtime.create(&id, &spec).unwrap_err().to_string();
        assert!(err.contains("mount rootfs"), "{err}");
    }
    // `create` returned only after the shim's report ended, and reaped it: nothing to wait for.
    assert_eq!(zombie_children(), Vec::<i32>::new(), "zombie shims remain");
    h.assert_clean();
}
