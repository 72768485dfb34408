//! Syscall names → numbers for the architectures Coracle's agent runs on, from the
//! generated `table.rs`; and which names exist on any Linux architecture at all (a name no
//! architecture has is a typo in a profile).

/// "This architecture has no such syscall" in the table.
pub const NONE: u32 = u32::MAX;

/// An architecture the agent builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arch {
    X86_64,
    Aarch64,
    /// 32-bit ARM, EABI.
    Arm,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Arm];

    /// The name Docker profiles use in `includes.arches` (Go's `GOARCH`).
    pub fn go_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
            Arch::Arm => "arm",
        }
    }

    fn column(self) -> usize {
        match self {
            Arch::X86_64 => 0,
            Arch::Aarch64 => 1,
            Arch::Arm => 2,
        }
    }
}

impl core::fmt::Display for Arch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.go_name())
    }
}

/// The syscall's number on `arch`; `None` when that architecture has no such call.
pub fn number(arch: Arch, name: &str) -> Option<u32> {
    let table = super::table::SYSCALLS;
    let at = table.binary_search_by(|(n, _)| (*n).cmp(name)).ok()?;
    Some(table[at].1[arch.column()]).filter(|&nr| nr != NONE)
}

/// The syscall's name on `arch`, for messages and tests.
pub fn name(arch: Arch, nr: u32) -> Option<&'static str> {
    super::table::SYSCALLS
        .iter()
        .find(|(_, numbers)| numbers[arch.column()] == nr)
        .map(|(name, _)| *name)
}

/// True when some Linux architecture has a syscall of this name.
pub fn is_known(name: &str) -> bool {
    number(Arch::X86_64, name).is_some()
        || number(Arch::Aarch64, name).is_some()
        || number(Arch::Arm, name).is_some()
        || super::table::OTHER_ARCHES.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::table::{OTHER_ARCHES, SYSCALLS};

    #[test]
    fn tables_are_sorted_so_lookups_can_bisect() {
        assert!(SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(OTHER_ARCHES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn numbers_match_the_kernel_for_each_architecture() {
        let cases = [
            ("read", [0, 63, 3]),
            ("socket", [41, 198, 281]),
            ("clone", [56, 220, 120]),
            ("clone3", [435, 435, 435]),
            ("personality", [135, 92, 136]),
            ("io_uring_setup", [425, 425, 425]),
            ("mount", [165, 40, 21]),
        ];
        for (name, numbers) in cases {
            for arch in Arch::ALL {
                assert_eq!(
                    number(arch, name),
                    Some(numbers[arch.column()]),
                    "{name} on {arch}"
                );
            }
        }
        assert_eq!(number(Arch::Arm, "set_tls"), Some(0xf0005));
        assert_eq!(number(Arch::Arm, "sync_file_range2"), Some(341));
        assert_eq!(number(Arch::Aarch64, "open"), None);
        assert_eq!(number(Arch::X86_64, "_llseek"), None);
        assert_eq!(name(Arch::Aarch64, 198), Some("socket"));
    }

    #[test]
    fn names_of_other_architectures_are_known_and_typos_are_not() {
        for name in [
            "socketcall",
            "s390_runtime_instr",
            "arch_prctl",
            "mmap2",
            "waitpid",
        ] {
            assert!(is_known(name), "{name}");
        }
        for name in ["opne", "", "READ", "io_uring"] {
            assert!(!is_known(name), "{name}");
        }
    }
}
