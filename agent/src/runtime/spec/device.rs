//! The devices a container gets, as plain data: host nodes passed through, nodes described
//! by the spec, and the device cgroup access each is allowed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A device node made visible in the container: the host's, or one described (`node`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Path on the host, e.g. `/dev/i2c-1`. For a described node, the host node bound
    /// instead when the container may not create nodes (user namespace).
    pub host_path: PathBuf,
    /// Path in the container; the host path when `None`.
    pub container_path: Option<String>,
    /// What the container may do with it (compose's `:rwm`); all of it when absent.
    #[serde(default)]
    pub access: DeviceAccess,
    /// The node to create, as an OCI bundle's `linux.devices` gives it; `None` copies the
    /// host node's type, numbers and mode.
    #[serde(default)]
    pub node: Option<DeviceNode>,
}

/// A device node given by type, numbers, mode and owner rather than copied from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    pub kind: NodeKind,
    pub major: u64,
    pub minor: u64,
    /// Permission bits (runc's default when OCI leaves `fileMode` out: 0666).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Access the device cgroup allows to devices by type and number, without a node in /dev
/// (OCI `linux.resources.devices` allow rules): the node may come later, by mknod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCgroupRule {
    /// `'c'`, `'b'` or `'a'` (both).
    pub kind: char,
    /// `None`: any major.
    pub major: Option<u64>,
    /// `None`: any minor.
    pub minor: Option<u64>,
    pub access: DeviceAccess,
}

/// What a device node is: OCI's `c` and `u` are both character devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    Char,
    Block,
    Fifo,
}

impl NodeKind {
    /// The device cgroup's type letter; `None` for a FIFO, which no device rule governs.
    pub fn cgroup_type(self) -> Option<char> {
        match self {
            Self::Char => Some('c'),
            Self::Block => Some('b'),
            Self::Fifo => None,
        }
    }
}

/// The device cgroup's access bits for one device: read, write, mknod (`r`, `w`, `m`).
/// Enforced by the devices cgroup (v1 `devices.allow`) or its eBPF program (v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAccess {
    pub read: bool,
    pub write: bool,
    pub mknod: bool,
}

impl Default for DeviceAccess {
    fn default() -> Self {
        Self::ALL
    }
}

impl DeviceAccess {
    /// `rwm`: what the standard devices (null, zero, tty, …) get.
    pub const ALL: Self = Self {
        read: true,
        write: true,
        mknod: true,
    };

    /// Nothing: the device exists in the container but cannot be used.
    pub const NONE: Self = Self {
        read: false,
        write: false,
        mknod: false,
    };

    /// Reads a non-empty subset of `rwm` (any order; a repeated letter counts once).
    pub fn parse(text: &str) -> Option<Self> {
        let mut access = Self::NONE;
        for c in text.chars() {
            match c {
                'r' => access.read = true,
                'w' => access.write = true,
                'm' => access.mknod = true,
                _ => return None,
            }
        }
        (!text.is_empty()).then_some(access)
    }

    /// The letters, in `rwm` order, as cgroup v1's `devices.allow` takes them.
    pub fn letters(&self) -> String {
        [(self.read, 'r'), (self.write, 'w'), (self.mknod, 'm')]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, c)| *c)
            .collect()
    }
}
