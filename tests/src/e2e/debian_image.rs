//! Images as people run them, built from Debian packages with `mmdebstrap` (a `minbase`
//! rootfs plus the packages a test names): setuid binaries (`su`, `passwd`, `chage`),
//! device nodes in `/dev`, hard links and tens of MB, none of which busybox images have.
//! A rootfs takes a minute or more and Debian's mirror to build, so each package list is
//! built once into a cache dir (`$CORACLE_IMAGE_CACHE`, else `/var/cache/coracle/images`)
//! and reused by later runs on the machine.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// The rootfs tar of Debian 12 minbase with `packages`, built or taken from the cache.
pub fn debian_rootfs(packages: &[&str]) -> anyhow::Result<PathBuf> {
    let cache = std::env::var_os("CORACLE_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/coracle/images"));
    std::fs::create_dir_all(&cache).with_context(|| format!("create {}", cache.display()))?;
    let mut sorted = packages.to_vec();
    sorted.sort_unstable();
    let name = format!("bookworm-minbase-{}.tar", sorted.join("-"));
    let path = cache.join(&name);
    if path.is_file() {
        return Ok(path);
    }
    let partial = cache.join(format!(".{name}.{}", std::process::id()));
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--format=tar", "--quiet"]);
    if !sorted.is_empty() {
        cmd.arg(format!("--include={}", sorted.join(",")));
    }
    cmd.arg("bookworm").arg(&partial);
    let out = cmd
        .output()
        .context("run mmdebstrap (Debian package mmdebstrap; .ci/packages.txt installs it)")?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "mmdebstrap bookworm with {sorted:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::rename(&partial, &path)
        .with_context(|| format!("move {} into place", partial.display()))?;
    Ok(path)
}

/// `tar` with the contents of the files in `replace` swapped (same headers otherwise, sizes
/// fixed up): the next version of an app image, as a rebuild that changed a few files.
pub fn with_replaced_files(tar: &[u8], replace: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    let mut builder = tar::Builder::new(Vec::with_capacity(tar.len()));
    let mut replaced = 0;
    for entry in archive.entries().context("read rootfs tar")? {
        let mut entry = entry.context("read rootfs tar entry")?;
        let path = entry.path().context("entry path")?.into_owned();
        let mut header = entry.header().clone();
        let clean = path.to_string_lossy().trim_start_matches("./").to_string();
        if let Some((_, contents)) = replace.iter().find(|(p, _)| *p == clean) {
            header.set_size(contents.len() as u64);
            header.set_cksum();
            builder
                .append_data(&mut header, &path, *contents)
                .with_context(|| format!("write {clean}"))?;
            replaced += 1;
            continue;
        }
        match entry.header().entry_type() {
            tar::EntryType::Link | tar::EntryType::Symlink => {
                let link = entry.link_name().context("link name")?.unwrap_or_default();
                builder
                    .append_link(&mut header, &path, link)
                    .with_context(|| format!("write link {clean}"))?;
            }
            _ => builder
                .append_data(&mut header, &path, &mut entry)
                .with_context(|| format!("write {clean}"))?,
        }
    }
    if replaced != replace.len() {
        bail!(
            "only {replaced} of the {} files to replace are in the rootfs",
            replace.len()
        );
    }
    builder.into_inner().context("finish rootfs tar")
}
