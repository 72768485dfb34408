//! The cgroup code against fake v1 and v2 trees in a temp dir (no root needed): version
//! detection, directory layout, the limit files written, missing controllers refused (or,
//! when the operator allowed it, reported as conditions), a root with no hierarchy refused.
//! The real path is covered by the root tests in `runtime_limits.rs`.

use std::fs;
use std::path::Path;

use coracle_agent::runtime::cgroups::{
    detect_version, CgroupConfig, CgroupError, CgroupVersion, Condition, ContainerCgroup,
};
use coracle_agent::runtime::spec::Resources;
use coracle_agent::runtime::ContainerId;

fn resources() -> Resources {
    Resources {
        memory_max: Some(64 << 20),
        memory_swap: None,
        memory_reservation: Some(32 << 20),
        cpu_millicores: Some(250),
        pids_max: Some(50),
        io_weight: Some(100),
        ..Resources::default()
    }
}

/// Pre-creates `dir` with empty `files`, as the kernel would on mkdir.
fn kernel_dir(dir: &Path, files: &[&str]) {
    fs::create_dir_all(dir).expect("fake cgroup dir");
    for f in files {
        fs::write(dir.join(f), "").expect("fake cgroup file");
    }
}

#[test]
fn v2_tree_gets_unified_limit_files_and_controllers_enabled_when_missing_ones_are_allowed() {
    let root = tempfile::tempdir().unwrap();
    // A Pi kernel without the memory controller.
    fs::write(
        root.path().join("cgroup.controllers"),
        "cpuset cpu io pids\n",
    )
    .unwrap();
    fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
    kernel_dir(&root.path().join("coracle"), &["cgroup.subtree_control"]);
    kernel_dir(
        &root.path().join("coracle/web"),
        &["cpu.max", "pids.max", "io.weight", "cgroup.procs"],
    );
    assert_eq!(detect_version(root.path()).unwrap(), CgroupVersion::V2);

    let config = CgroupConfig {
        root: root.path().into(),
        parent: "coracle".into(),
        allow_missing_controllers: true,
    };
    let id: ContainerId = "web".parse().unwrap();
    let (cgroup, conditions) = ContainerCgroup::create(&config, &id, &resources(), &[]).unwrap();
    let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
    assert_eq!(cgroup.paths(), [root.path().join("coracle/web")]);
    assert_eq!(read("cgroup.subtree_control"), "+cpu +pids +io +cpuset");
    assert_eq!(
        read("coracle/cgroup.subtree_control"),
        "+cpu +pids +io +cpuset"
    );
    assert_eq!(read("coracle/web/cpu.max"), "25000 100000");
    assert_eq!(read("coracle/web/pids.max"), "50");
    assert_eq!(read("coracle/web/io.weight"), "default 100");
    // A temp dir is no cgroup2 filesystem: no device program can be attached there.
    assert_eq!(
        conditions,
        [
            Condition::MissingController {
                controller: "memory".into()
            },
            Condition::MissingController {
                controller: "devices".into()
            }
        ]
    );
    cgroup.join(4242).unwrap();
    assert_eq!(read("coracle/web/cgroup.procs"), "4242");
}

#[test]
fn v1_tree_gets_one_dir_per_hierarchy_and_reports_missing_ones_when_allowed() {
    let root = tempfile::tempdir().unwrap();
    // memory, cpu, pids mounted; no blkio hierarchy at all.
    kernel_dir(
        &root.path().join("memory/coracle/db"),
        &[
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.oom_control",
        ],
    );
    kernel_dir(
        &root.path().join("cpu/coracle/db"),
        &["cpu.cfs_period_us", "cpu.cfs_quota_us"],
    );
    kernel_dir(&root.path().join("pids/coracle/db"), &["pids.max"]);
    assert_eq!(detect_version(root.path()).unwrap(), CgroupVersion::V1);

    let config = CgroupConfig {
        root: root.path().into(),
        parent: "coracle".into(),
        allow_missing_controllers: true,
    };
    let id: ContainerId = "db".parse().unwrap();
    let (cgroup, conditions) = ContainerCgroup::create(&config, &id, &resources(), &[]).unwrap();
    let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
    assert_eq!(
        read("memory/coracle/db/memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read("memory/coracle/db/memory.memsw.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read("memory/coracle/db/memory.soft_limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(read("cpu/coracle/db/cpu.cfs_quota_us"), "25000");
    assert_eq!(read("pids/coracle/db/pids.max"), "50");
    assert_eq!(cgroup.paths().len(), 3);
    assert!(
        conditions.contains(&Condition::MissingController {
            controller: "blkio".into()
        }),
        "{conditions:?}"
    );
    assert!(
        conditions.contains(&Condition::MissingController {
            controller: "devices".into()
        }),
        "{conditions:?}"
    );

    fs::write(
        root.path().join("memory/coracle/db/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    )
    .unwrap();
    assert_eq!(cgroup.oom_kills(), 1);
}

#[test]
fn v1_missing_limit_file_is_a_condition_not_an_error() {
    let root = tempfile::tempdir().unwrap();
    // A kernel without swap accounting has no memsw file.
    kernel_dir(
        &root.path().join("memory/coracle/app"),
        &["memory.limit_in_bytes"],
    );
    kernel_dir(
        &root.path().join("devices/coracle/app"),
        &["devices.deny", "devices.allow"],
    );
    let config = CgroupConfig {
        root: root.path().into(),
        parent: "coracle".into(),
        allow_missing_controllers: false,
    };
    let only_memory = Resources {
        memory_max: Some(1 << 20),
        ..Resources::default()
    };
    let (_, conditions) =
        ContainerCgroup::create(&config, &"app".parse().unwrap(), &only_memory, &[]).unwrap();
    assert!(conditions.contains(&Condition::MissingFile {
        controller: "memory".into(),
        file: "memory.memsw.limit_in_bytes".into()
    }));
}

#[test]
fn unwritable_limit_is_an_error_naming_file_and_value() {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("cgroup.controllers"), "pids\n").unwrap();
    fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
    kernel_dir(&root.path().join("coracle"), &["cgroup.subtree_control"]);
    // A directory where the kernel file should be makes the write fail.
    fs::create_dir_all(root.path().join("coracle/x/pids.max")).unwrap();
    let config = CgroupConfig {
        root: root.path().into(),
        parent: "coracle".into(),
        allow_missing_controllers: false,
    };
    let only_pids = Resources {
        pids_max: Some(5),
        ..Resources::default()
    };
    let err = ContainerCgroup::create(&config, &"x".parse().unwrap(), &only_pids, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("pids.max") && err.contains("\"5\""), "{err}");
}

#[test]
fn a_limit_whose_controller_is_missing_refuses_the_container_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    // v2 without the memory controller, and a memory limit asked for.
    fs::write(root.path().join("cgroup.controllers"), "cpu pids\n").unwrap();
    fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
    kernel_dir(&root.path().join("coracle"), &["cgroup.subtree_control"]);
    let config = CgroupConfig {
        root: root.path().into(),
        parent: "coracle".into(),
        allow_missing_controllers: false,
    };
    let memory = Resources {
        memory_max: Some(1 << 20),
        ..Resources::default()
    };
    let err = ContainerCgroup::create(&config, &"db".parse().unwrap(), &memory, &[]).unwrap_err();
    assert!(
        matches!(&err, CgroupError::MissingController { controller, .. } if controller == "memory"),
        "{err:?}"
    );
    assert!(err.to_string().contains("memory controller"), "{err}");
    assert!(!root.path().join("coracle/db").exists());
}

#[test]
fn a_cgroup_root_with_no_hierarchy_is_an_error_even_when_missing_controllers_are_allowed() {
    let empty = tempfile::tempdir().unwrap();
    let missing = empty.path().join("no-such-cgroup-root");
    for root in [empty.path().to_path_buf(), missing] {
        let config = CgroupConfig {
            root: root.clone(),
            parent: "coracle".into(),
            allow_missing_controllers: true,
        };
        let err = ContainerCgroup::create(&config, &"app".parse().unwrap(), &resources(), &[])
            .unwrap_err();
        assert!(
            matches!(&err, CgroupError::NoHierarchy { root: r } if *r == root),
            "{err:?}"
        );
        assert!(matches!(
            detect_version(&root),
            Err(CgroupError::NoHierarchy { .. })
        ));
        assert!(!root.join("coracle").exists());
    }
}
