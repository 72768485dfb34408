//! An image for another architecture fails to start with that reason, naming both platforms,
//! rather than the kernel's bare "Exec format error" (root only).

mod runtime_support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use coracle_agent::platform::this_device;
use coracle_agent::runtime::{ContainerId, Runtime, RuntimeError};
use runtime_support::Harness;

#[test]
#[ignore = "needs root"]
fn a_program_of_another_architecture_fails_to_start_naming_both_platforms() {
    let h = Harness::new();
    // arm64 on every other machine, amd64 on an arm64 one.
    let this = this_device().to_string();
    let (machine, foreign) = if this == "linux/arm64" {
        (62, "linux/amd64")
    } else {
        (183, "linux/arm64")
    };
    for init in [false, true] {
        // With `init: true` the error comes from the init's child, through the same pipe.
        let mut spec = h.spec("unused");
        spec.init = init;
        let bin = Harness::upper_of(&spec).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("server"), coracle_tests::elf::header(machine)).unwrap();
        std::fs::set_permissions(bin.join("server"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        spec.process.args = vec!["/bin/server".into()];

        let id: ContainerId = "foreign".parse().unwrap();
        h.runtime.create(&id, &spec).unwrap();
        let err = h.runtime.start(&id).unwrap_err();
        let RuntimeError::StartFailed { reason, .. } = &err else {
            panic!("expected a failed start, got {err}");
        };
        assert!(reason.contains(foreign), "{reason}");
        assert!(reason.contains(&this), "{reason}");
        assert!(reason.contains("another architecture"), "{reason}");
        assert!(reason.contains("/bin/server"), "{reason}");
        assert!(
            reason.to_lowercase().contains("exec format error"),
            "{reason}"
        );
        // The init exited after reporting; once the shim has recorded that, nothing is left.
        let state = h.runtime.wait(&id, Duration::from_secs(10)).unwrap();
        assert_ne!(state.exit_code, Some(0), "{state:?}");
        h.runtime.delete(&id).unwrap();
    }
    h.assert_clean();
}
