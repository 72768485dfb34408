//! Mount propagation in real containers (root only): the OCI mount options `shared`,
//! `rshared`, `unbindable`… as the container's mountinfo shows them, and
//! `linux.rootfsPropagation` neither leaking the container's mounts to the host nor
//! unmounting the host's.

mod runtime_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coracle_agent::runtime::spec::{IdMapping, Mount, MountKind};
use coracle_agent::runtime::{ContainerId, Runtime};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use runtime_support::Harness;

fn spec_mount(
    destination: &str,
    kind: MountKind,
    source: Option<&Path>,
    options: &[&str],
) -> Mount {
    Mount {
        destination: destination.into(),
        kind,
        source: source.map(Path::to_path_buf),
        options: options.iter().map(|o| o.to_string()).collect(),
    }
}

/// The optional fields (`shared:N`, `master:N`, `unbindable`) of the mountinfo line for
/// `point`.
fn propagation_of(mountinfo: &str, point: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) != Some(&point) {
            return None;
        }
        let end = fields.iter().position(|f| *f == "-")?;
        Some(fields.get(6..end)?.join(" "))
    })
}

#[test]
#[ignore = "needs root"]
fn propagation_options_are_applied_after_the_mount() {
    let h = Harness::new();
    let data = h.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut spec = h.spec("cat /proc/self/mountinfo");
    spec.mounts.extend([
        spec_mount("/data", MountKind::Bind, Some(&data), &["rbind", "rshared"]),
        // `shared` given with the mount itself would be EINVAL.
        spec_mount("/scratch", MountKind::Tmpfs, None, &["shared", "size=1m"]),
        spec_mount(
            "/fixed",
            MountKind::Bind,
            Some(&data),
            &["bind", "runbindable"],
        ),
        spec_mount("/plain", MountKind::Tmpfs, None, &["size=1m"]),
    ]);
    let (state, log) = h.run("propagation", &spec);
    assert_eq!(state.exit_code, Some(0), "{log}");
    for (point, want) in [
        ("/data", "shared:"),
        ("/scratch", "shared:"),
        ("/fixed", "unbindable"),
    ] {
        let fields = propagation_of(&log, point).unwrap_or_else(|| panic!("{point}: {log}"));
        assert!(fields.contains(want), "{point}: {fields:?} in {log}");
    }
    // The default stays private: no optional fields at all.
    assert_eq!(propagation_of(&log, "/plain").as_deref(), Some(""));
    h.assert_clean();
}

/// A host mount made shared for the test, unmounted on drop (also when the test fails).
struct SharedMount(PathBuf);

impl SharedMount {
    fn new(path: &Path) -> Self {
        let flags = MsFlags::MS_BIND;
        mount(Some(path), path, None::<&str>, flags, None::<&str>).expect("bind onto itself");
        let guard = Self(path.to_owned());
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .expect("make shared");
        guard
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = umount2(&self.0.join("probe"), MntFlags::MNT_DETACH);
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

#[test]
#[ignore = "needs root"]
fn shared_or_partial_rootfs_propagation_sends_nothing_to_the_host_and_unmounts_nothing() {
    // `private` without `r` makes only `/` private: the mounts below stay host peers.
    for (name, root_shared) in [("rshared", true), ("private", false)] {
        let h = Harness::new();
        // The state dir (holding the rootfs mount point) under a shared host mount: without
        // the runtime's private parent, the container's rootfs would appear on the host.
        let state_side = SharedMount::new(h.dir.path());
        // A shared host mount with a submount elsewhere: detaching the old root inside the
        // container must not unmount the host's copy.
        let outside = tempfile::tempdir().unwrap();
        let outside_side = SharedMount::new(outside.path());
        let probe = outside.path().join("probe");
        std::fs::create_dir(&probe).unwrap();
        mount(
            Some("tmpfs"),
            &probe,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();

        let mut spec = h.spec("cat /proc/self/mountinfo; exec sleep 100");
        spec.rootfs_propagation = Some(name.into());
        let id: ContainerId = "partial".parse().unwrap();
        h.runtime.create(&id, &spec).expect("create");
        h.runtime.start(&id).expect("start");
        let deadline = Instant::now() + Duration::from_secs(10);
        let log = loop {
            let log = coracle_agent::runtime::log_time::text_of(
                &std::fs::read_to_string(h.runtime.log_path(&id)).unwrap_or_default(),
            );
            if log.contains(" / / ") || Instant::now() > deadline {
                break log;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let state_dir = h.dir.path().join("state").to_string_lossy().into_owned();
        h.kill_and_delete(&id);

        let root = propagation_of(&log, "/").unwrap_or_else(|| panic!("{name}: {log}"));
        assert_eq!(
            root.contains("shared:"),
            root_shared,
            "{name}: root {root:?}"
        );
        assert!(
            !host.contains(&state_dir),
            "{name}: a container mount reached the host: {host}"
        );
        let probe_text = probe.to_string_lossy().into_owned();
        assert!(
            host.contains(&format!(" {probe_text} ")),
            "{name}: the host lost its mount at {probe_text}"
        );
        drop(outside_side);
        drop(state_side);
        h.assert_clean();
    }
}

#[test]
#[ignore = "needs root"]
fn rslave_rootfs_propagation_shows_later_host_mounts_also_in_a_user_namespace() {
    for userns in [false, true] {
        let h = Harness::new();
        let outside = tempfile::tempdir().unwrap();
        let outside_side = SharedMount::new(outside.path());
        let probe = outside.path().join("probe");
        std::fs::create_dir(&probe).unwrap();
        let mut spec = h.spec(
            "i=0; while [ $i -lt 100 ] && ! grep -q ' /outside/probe ' /proc/self/mountinfo; \
             do sleep 0.1; i=$((i+1)); done; \
             grep -q ' /outside/probe ' /proc/self/mountinfo && echo seen || echo not-seen",
        );
        spec.rootfs_propagation = Some("rslave".into());
        spec.mounts.push(spec_mount(
            "/outside",
            MountKind::Bind,
            Some(outside.path()),
            &["rbind", "rslave"],
        ));
        if userns {
            spec.user_namespace = Some(IdMapping::root_at(300_000, 65_536));
        }
        let id: ContainerId = "rslave".parse().unwrap();
        h.runtime.create(&id, &spec).expect("create");
        h.runtime.start(&id).expect("start");
        // Mounted on the host after the container started.
        mount(
            Some("tmpfs"),
            &probe,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let state = h
            .runtime
            .wait(&id, Duration::from_secs(30))
            .expect("container exits");
        let log = coracle_agent::runtime::log_time::text_of(
            &std::fs::read_to_string(h.runtime.log_path(&id)).unwrap_or_default(),
        );
        h.runtime.delete(&id).expect("delete");
        assert_eq!(
            (state.exit_code, log.trim()),
            (Some(0), "seen"),
            "user namespace: {userns}"
        );
        drop(outside_side);
        h.assert_clean();
    }
}
