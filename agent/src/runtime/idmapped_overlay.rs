//! The overlay rootfs of a user-namespace container: an overlayfs whose lower layers are
//! idmapped mounts, built by the shim (host root) as a detached mount for the init.
//!
//! Overlayfs takes a private clone of each layer's mount (`clone_private_mount`), which
//! before Linux 6.15 ("fs: allow detached mounts in clone_private_mount()") clones only
//! mounts attached in the caller's own mount namespace: on Debian 12's 6.1 (and, by the
//! same code, the Raspberry Pi's 6.6 and 6.12) a detached idmapped mount named as
//! `/proc/self/fd/N` is refused with `EINVAL` ("overlayfs: failed to clone lowerpath").
//! This build host's 6.18 accepts both. So the overlay is always built the way every
//! kernel accepts, on a scratch thread:
//! 1. the thread leaves the shim's mount namespace for a copy of its own (`unshare`), and
//!    makes that copy private, so nothing it mounts propagates back to the host;
//! 2. it attaches each idmapped layer over the layer's own directory, in that copy;
//! 3. it mounts the overlay (detached, `fsmount`) with those directories as lower dirs:
//!    the overlay keeps private clones of them, idmap included;
//! 4. the thread exits with the overlay's fd. Its mount namespace goes with it, and the
//!    attached layers with the namespace: nothing is left to unmount or clean up. The
//!    shim, single threaded otherwise, is so again once `build` returns (the thread is
//!    joined), and the container's init was cloned before.
//!
//! Always taking this path costs a thread and a copy of the shim's mount table and its
//! teardown (about 0.15 ms on this host, 21 mounts), so no kernel version is probed and no
//! fallback is kept.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::mount_api;
use super::userns::UserNsError;

/// Steps 1–4: the overlay over `layers` (lower dirs, top first, each with its idmapped
/// mount tree), writing to `upper` with `work`, as a detached mount.
pub fn build(
    layers: &[(PathBuf, OwnedFd)],
    upper: &Path,
    work: &Path,
) -> Result<OwnedFd, UserNsError> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("idmapped-overlay".into())
            .spawn_scoped(scope, || build_in_scratch_namespace(layers, upper, work))
            .map_err(UserNsError::SpawnBuilder)?
            .join()
            .unwrap_or(Err(UserNsError::BuilderPanicked))
    })
}

/// Runs on its own thread: what it does to its mount namespace stays with the thread.
fn build_in_scratch_namespace(
    layers: &[(PathBuf, OwnedFd)],
    upper: &Path,
    work: &Path,
) -> Result<OwnedFd, UserNsError> {
    // 1. A private copy of the mount namespace, for this thread only (CLONE_NEWNS
    //    unshares the thread's filesystem context too, not the process's).
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(UserNsError::ScratchNamespace)?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(UserNsError::ScratchNamespace)?;
    // 2. Each layer's idmapped tree over its directory, visible only here.
    for (dir, tree) in layers {
        mount_api::attach(tree, dir).map_err(|source| UserNsError::AttachLayer {
            path: dir.clone(),
            source,
        })?;
    }
    // 3. The overlay, resolving the lower dirs to the idmapped mounts on top of them.
    let lowerdir: Vec<String> = layers.iter().map(|(dir, _)| escape_lowerdir(dir)).collect();
    let options = [
        ("lowerdir", lowerdir.join(":")),
        ("upperdir", upper.to_string_lossy().into_owned()),
        ("workdir", work.to_string_lossy().into_owned()),
    ];
    mount_api::detached_overlay(&options).map_err(|source| UserNsError::MountOverlay {
        upper: upper.to_owned(),
        source,
    })
}

/// A lower dir as overlayfs parses it: `:` separates layers and `\` escapes.
fn escape_lowerdir(dir: &Path) -> String {
    let mut out = String::new();
    for c in dir.to_string_lossy().chars() {
        if c == ':' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_escapes_the_separator_and_the_escape() {
        let cases = [
            (
                "/var/lib/coracle/layers/sha256-ab/diff",
                "/var/lib/coracle/layers/sha256-ab/diff",
            ),
            ("/data/a:b", "/data/a\\:b"),
            ("/data/a\\b", "/data/a\\\\b"),
        ];
        for (dir, want) in cases {
            assert_eq!(escape_lowerdir(Path::new(dir)), want, "{dir}");
        }
    }
}
