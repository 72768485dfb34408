//! Which cgroup hierarchies are mounted where, read from `/proc/self/mountinfo`: pure v1
//! (one hierarchy per controller), hybrid (v1 hierarchies and a unified cgroup2 mount
//! holding no controllers that matter, as on this project's build host) or pure v2 (one
//! cgroup2 mount: Debian 12, Raspberry Pi OS). [`CgroupMounts::parse`] is pure, so every
//! layout is table-tested from mountinfo text; only [`CgroupMounts::read`] does I/O.

use std::path::{Path, PathBuf};

use super::{CgroupError, CgroupVersion};

/// Where the kernel tells a process about its mounts.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The system's cgroup layout, by what is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    V1,
    Hybrid,
    V2,
}

/// One v1 hierarchy: its mount point and the controllers bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    pub path: PathBuf,
    pub controllers: Vec<String>,
}

/// The cgroup mounts of this mount namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    pub v1: Vec<V1Mount>,
    /// The (first) cgroup2 mount.
    pub v2: Option<PathBuf>,
}

impl CgroupMounts {
    /// Reads this process's mountinfo.
    pub fn read() -> Result<Self, CgroupError> {
        let path = PathBuf::from(MOUNTINFO);
        std::fs::read_to_string(&path)
            .map(|text| Self::parse(&text))
            .map_err(|source| CgroupError::ReadFile { path, source })
    }

    /// The cgroup mounts named in mountinfo text; lines that do not parse are skipped.
    pub fn parse(mountinfo: &str) -> Self {
        let mut mounts = Self::default();
        for line in mountinfo.lines() {
            // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let (Some(point), Some(fstype)) = (before.split(' ').nth(4), after.split(' ').next())
            else {
                continue;
            };
            let path = PathBuf::from(unescape(point));
            match fstype {
                "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(path),
                "cgroup" => {
                    let options = after.split(' ').nth(2).unwrap_or_default();
                    let controllers = options
                        .split(',')
                        .filter(|o| !NOT_CONTROLLERS.contains(o) && !o.contains('='))
                        .map(str::to_owned)
                        .collect();
                    mounts.v1.push(V1Mount { path, controllers });
                }
                _ => {}
            }
        }
        mounts
    }

    /// The layout, or `None` when no cgroup filesystem is mounted at all.
    pub fn layout(&self) -> Option<CgroupLayout> {
        match (self.v1.is_empty(), &self.v2) {
            (true, None) => None,
            (true, Some(_)) => Some(CgroupLayout::V2),
            (false, None) => Some(CgroupLayout::V1),
            (false, Some(_)) => Some(CgroupLayout::Hybrid),
        }
    }

    /// How containers get cgroups under `root`: v2 when `root` is the cgroup2 mount or a
    /// cgroup inside it, v1 when v1 hierarchies are mounted in `root`; `None` when `root`
    /// is neither (not a cgroup tree, as far as mountinfo tells).
    pub fn version_at(&self, root: &Path) -> Option<CgroupVersion> {
        if self.v2.as_deref().is_some_and(|v2| root.starts_with(v2)) {
            return Some(CgroupVersion::V2);
        }
        self.v1
            .iter()
            .any(|m| m.path.parent() == Some(root))
            .then_some(CgroupVersion::V1)
    }
}

/// Options of a v1 mount that are not controller names.
const NOT_CONTROLLERS: &[&str] = &["rw", "ro", "xattr", "noprefix", "clone_children"];

/// Mount points in mountinfo escape space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This project's build host (Debian 12 userland, hybrid: v1 controllers, cgroup2 at
    /// `unified` with only hugetlb).
    const HYBRID: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
37 31 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
";

    /// Debian 12 / Raspberry Pi OS with systemd: one cgroup2 mount.
    const PURE_V2: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
28 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
";

    /// An old distribution without systemd's unified mount.
    const PURE_V1: &str = "\
31 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:9 - tmpfs tmpfs rw,mode=755
36 31 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup memory rw,memory
38 31 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup pids rw,pids
";

    #[test]
    fn layouts_are_told_apart_by_what_is_mounted() {
        let cases = [
            (HYBRID, Some(CgroupLayout::Hybrid)),
            (PURE_V2, Some(CgroupLayout::V2)),
            (PURE_V1, Some(CgroupLayout::V1)),
            ("30 1 254:1 / / rw - ext4 /dev/vda1 rw\n", None),
            ("", None),
            ("garbage\n - \n", None),
        ];
        for (text, want) in cases {
            assert_eq!(CgroupMounts::parse(text).layout(), want, "{text}");
        }
    }

    #[test]
    fn mounts_name_their_paths_and_v1_controllers() {
        let hybrid = CgroupMounts::parse(HYBRID);
        assert_eq!(hybrid.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let v1: Vec<(&Path, Vec<&str>)> = hybrid
            .v1
            .iter()
            .map(|m| {
                let controllers = m.controllers.iter().map(String::as_str).collect();
                (m.path.as_path(), controllers)
            })
            .collect();
        assert_eq!(
            v1,
            [
                (Path::new("/sys/fs/cgroup/systemd"), vec![]),
                (Path::new("/sys/fs/cgroup/memory"), vec!["memory"]),
                (
                    Path::new("/sys/fs/cgroup/cpu,cpuacct"),
                    vec!["cpu", "cpuacct"]
                ),
            ]
        );
        assert_eq!(
            CgroupMounts::parse(PURE_V2).v2,
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn version_at_a_root_follows_the_mounts() {
        let v = |text: &str, root: &str| CgroupMounts::parse(text).version_at(Path::new(root));
        let cases = [
            (HYBRID, "/sys/fs/cgroup", Some(CgroupVersion::V1)),
            (HYBRID, "/sys/fs/cgroup/unified", Some(CgroupVersion::V2)),
            (
                HYBRID,
                "/sys/fs/cgroup/unified/agent.slice",
                Some(CgroupVersion::V2),
            ),
            (PURE_V2, "/sys/fs/cgroup", Some(CgroupVersion::V2)),
            (
                PURE_V2,
                "/sys/fs/cgroup/system.slice",
                Some(CgroupVersion::V2),
            ),
            (PURE_V2, "/sys/fs", None),
            (PURE_V2, "/tmp/fake-tree", None),
            (PURE_V1, "/sys/fs/cgroup", Some(CgroupVersion::V1)),
            (PURE_V1, "/sys/fs/cgroup/memory", None),
            ("", "/sys/fs/cgroup", None),
        ];
        for (text, root, want) in cases {
            assert_eq!(v(text, root), want, "{root} in\n{text}");
        }
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let text = "40 31 0:40 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            CgroupMounts::parse(text).v2,
            Some(PathBuf::from("/mnt/my cgroups"))
        );
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}
