//! Platforms in OCI's spelling (`linux/arm64`, `linux/arm/v7`): the one this agent runs on,
//! reported to the controller so it can refuse images the device cannot run, and the one an
//! ELF program was built for, so a wrong-architecture image fails with that reason rather
//! than the kernel's bare "Exec format error".

use coracle_images::oci::Platform;

/// This device's platform: the one the agent is built for.
pub fn this_device() -> Platform {
    Platform::this_build()
}

pub use coracle_proto::agent_update::elf_platform;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_machines_map_to_oci_platforms() {
        for (machine, want) in [(62, "linux/amd64"), (183, "linux/arm64"), (40, "linux/arm")] {
            assert_eq!(
                elf_platform(&coracle_tests::elf::header(machine)),
                Some(want)
            );
        }
        assert_eq!(elf_platform(b"#!/bin/sh\necho not an elf\n"), None);
        assert_eq!(elf_platform(&coracle_tests::elf::header(9999)), None);
        assert_eq!(elf_platform(b"\x7fELF"), None);
    }

    #[test]
    fn this_device_is_the_platform_of_this_very_binary() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let this = this_device();
        // ELF knows no variants: arm/v7 is plain arm there.
        let expected = format!("{}/{}", this.os, this.architecture);
        assert_eq!(elf_platform(&exe[..20]), Some(expected.as_str()));
    }
}
