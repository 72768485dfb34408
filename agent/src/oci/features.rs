//! `features`: what this runtime implements, as the runtime-spec `features.md` document
//! describes it (tools read it to decide what to put in a bundle).

use super::state::OCI_VERSION;

/// The features document.
pub fn document() -> serde_json::Value {
    let capabilities: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "nosuid", "nodev", "noexec", "relatime", "strictatime",
                         "bind", "rbind", "shared", "rshared", "slave", "rslave", "private",
                         "rprivate", "unbindable", "runbindable"],
        "linux": {
            "namespaces": ["mount", "pid", "uts", "ipc", "network", "cgroup", "user"],
            "capabilities": capabilities,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false,
                       "rdma": false},
            "seccomp": {"enabled": true, "actions": [], "operators": [], "archs": []},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
        },
        "annotations": {
            "org.opencontainers.runtime-spec.features.runtime.name": "coracle-runc",
            "org.opencontainers.runtime-spec.features.runtime.version": env!("CARGO_PKG_VERSION"),
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn features_name_every_hook_and_known_capabilities() {
        let doc = super::document();
        assert_eq!(doc["hooks"].as_array().map(Vec::len), Some(6));
        let caps = doc["linux"]["capabilities"].as_array().unwrap();
        assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"), "{caps:?}");
    }
}
