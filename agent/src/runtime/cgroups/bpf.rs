//! The two bpf(2) calls the cgroup v2 device allow-list needs: load a
//! BPF_PROG_TYPE_CGROUP_DEVICE program and attach it to a cgroup directory. Raw syscalls
//! through libc (no libbpf); the program itself comes from `device_bpf`.
//!
//! The attachment holds the program: its fd is closed right after, and removing the
//! cgroup detaches and frees it, so there is nothing else to clean up.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;

use super::device_bpf::Insn;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Programs on ancestors keep running too (a device must pass all of them), and a
/// parent's policy cannot be replaced from below.
const BPF_F_ALLOW_MULTI: u32 = 2;
/// Verifier log kept when a load fails (only then: it costs 64 KiB).
const LOG_BYTES: usize = 64 << 10;

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// A refused load: the errno and what the verifier said.
#[derive(Debug)]
pub struct LoadFailure {
    pub errno: Errno,
    pub verifier_log: String,
}

/// Loads a device program; the kernel's verifier checks it here.
pub fn load_device_program(insns: &[Insn]) -> Result<OwnedFd, LoadFailure> {
    match load(insns, None) {
        Ok(fd) => Ok(fd),
        Err(errno) => {
            let mut log = vec![0u8; LOG_BYTES];
            let again = load(insns, Some(&mut log));
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            // The verifier's last lines say why; keep those.
            let start = end.saturating_sub(2000);
            let text = String::from_utf8_lossy(&log[start..end]).trim().to_owned();
            again.map_err(|_| LoadFailure {
                errno,
                verifier_log: text,
            })
        }
    }
}

fn load(insns: &[Insn], log: Option<&mut Vec<u8>>) -> Result<OwnedFd, Errno> {
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..14].copy_from_slice(b"coracle_device");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| Errno::E2BIG)?,
        insns: insns.as_ptr() as usize as u64,
        license: license.as_ptr() as usize as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..ProgLoadAttr::default()
    };
    if let Some(log) = log {
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as usize as u64;
    }
    // SAFETY: `attr` is a valid, zero-padded bpf_attr of the size passed; the instruction
    // array, license string and log buffer it points to outlive the call (the kernel
    // copies the first two and writes at most `log_size` bytes into the third).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    let fd = Errno::result(ret)? as libc::c_int;
    // SAFETY: BPF_PROG_LOAD returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches `program` to the cgroup v2 directory `cgroup` as its device filter.
pub fn attach_device_program(cgroup: &Path, program: &OwnedFd) -> Result<(), std::io::Error> {
    let dir = File::open(cgroup)?;
    let attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr for BPF_PROG_ATTACH of the size passed, and the
    // fds it names stay open for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    Errno::result(ret).map(drop).map_err(std::io::Error::from)
}
