//! One tar entry at a time: check it, then create it inside the temp root.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::node;
use super::path::{ensure_parents, remove_existing, sanitize, ParentProblem};
use super::whiteout::{self, WhiteoutKind};
use super::{UnpackError, UnpackLimits};
use crate::digest::DigestHasher;
use crate::layer_index::{IndexEntry, LayerIndex};

/// Running totals checked against the limits.
#[derive(Default)]
struct Budget {
    bytes: u64,
    entries: u64,
}

/// `skip_recording` is set while file content is read, so the skeleton recorder keeps only
/// headers and padding.
pub(super) fn unpack_entries(
    tar: impl Read,
    root: &Path,
    limits: &UnpackLimits,
    skip_recording: &std::cell::Cell<bool>,
) -> Result<LayerIndex, UnpackError> {
    let mut archive = tar::Archive::new(tar);
    let mut unpacker = Unpacker {
        root,
        limits,
        skip_recording,
        index: LayerIndex::default(),
        budget: Budget::default(),
        dir_mtimes: Vec::new(),
        verified_parent: None,
        chown: is_root(),
        skipped_devices: 0,
    };
    for item in archive.entries().map_err(UnpackError::ReadTar)? {
        unpacker.entry(item.map_err(UnpackError::ReadTar)?)?;
    }
    unpacker.finish()
}

/// The state of one layer's unpacking, entry after entry.
struct Unpacker<'a> {
    root: &'a Path,
    limits: &'a UnpackLimits,
    skip_recording: &'a std::cell::Cell<bool>,
    index: LayerIndex,
    budget: Budget,
    /// Directories get their times last: creating entries inside them changes them.
    dir_mtimes: Vec<(PathBuf, u64)>,
    /// The parent directory last checked free of symlinks (consecutive entries share it).
    verified_parent: Option<PathBuf>,
    /// Root keeps owners (and may make device nodes).
    chown: bool,
    skipped_devices: u64,
}

/// What creating an entry left to do.
enum Created {
    /// Owner and time to set.
    Node,
    /// A hard link shares its source's inode, owner and times; a skipped device node
    /// is not there: nothing more to do either way.
    Done,
}

impl Unpacker<'_> {
    /// Checks one entry and creates it: path, limits, parents, whiteouts, then the node.
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let Some(rel) = self.entry_path(&entry)? else {
            return Ok(()); // the layer root itself
        };
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(UnpackError::ReadTar)?;
        if mode & 0o6000 != 0 && !self.limits.allow_setid && !kind.is_dir() {
            return Err(UnpackError::SetId { path: rel, mode });
        }
        let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        let mtime = header.mtime().unwrap_or(0);
        self.check_parents(&rel, kind)?;
        let target = self.root.join(&rel);
        // Whatever was at this path before is replaced below: it leaves the index.
        self.index.files.remove(rel.to_string_lossy().as_ref());
        if self.whiteout(&rel, &target)? {
            return Ok(());
        }
        if let Created::Done = self.create(&mut entry, &rel, &target, kind, mode)? {
            return Ok(());
        }
        let create = |source| UnpackError::CreateEntry {
            path: rel.clone(),
            source,
        };
        if self.chown {
            std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32))
                .map_err(create)?;
            if kind.is_file() && mode & 0o6000 != 0 {
                // chown clears setuid/setgid; put them back.
                fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(create)?;
            }
        }
        match kind.is_dir() {
            true => self.dir_mtimes.push((target, mtime)),
            false => node::set_mtime(&target, mtime).map_err(create)?,
        }
        Ok(())
    }

    /// The entry's path inside the layer, counted against the entry limit; `None` for the
    /// layer root itself.
    fn entry_path<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
    ) -> Result<Option<PathBuf>, UnpackError> {
        self.budget.entries += 1;
        if self.budget.entries > self.limits.max_entries {
            return Err(UnpackError::QuotaEntries {
                limit: self.limits.max_entries,
            });
        }
        let raw = entry.path().map_err(UnpackError::ReadTar)?.into_owned();
        let rel = sanitize(&raw).map_err(|problem| UnpackError::EntryPath {
            path: raw.clone(),
            problem,
        })?;
        Ok((!rel.as_os_str().is_empty()).then_some(rel))
    }

    /// Every parent of `rel` is a real directory inside the root (no symlink on the way).
    fn check_parents(&mut self, rel: &Path, kind: EntryType) -> Result<(), UnpackError> {
        // Consecutive entries share parents: skip the walk when this parent was just checked.
        if self.verified_parent.as_deref() != rel.parent() {
            ensure_parents(self.root, rel).map_err(|p| parent_error(rel, p))?;
            self.verified_parent = rel.parent().map(Path::to_path_buf);
        }
        // An entry that replaces a checked parent (e.g. a symlink over a dir) voids the check.
        if kind != EntryType::Directory
            && self
                .verified_parent
                .as_deref()
                .is_some_and(|p| p.starts_with(rel))
        {
            self.verified_parent = None;
        }
        Ok(())
    }

    /// Applies a whiteout or opaque marker; `true` when the entry was one.
    fn whiteout(&self, rel: &Path, target: &Path) -> Result<bool, UnpackError> {
        let create = |source| UnpackError::CreateEntry {
            path: rel.to_path_buf(),
            source,
        };
        match whiteout::classify(rel) {
            Ok(WhiteoutKind::None) => Ok(false),
            Ok(WhiteoutKind::Opaque) => {
                let dir = target
                    .parent()
                    .expect("a marker has a parent (the root at least)");
                node::mark_opaque(dir, self.limits.overlay_xattrs).map_err(create)?;
                Ok(true)
            }
            Ok(WhiteoutKind::Hide(hidden)) => {
                let whiteout = target.with_file_name(hidden);
                remove_existing(&whiteout, false).map_err(create)?;
                node::make_whiteout(&whiteout).map_err(create)?;
                Ok(true)
            }
            Ok(WhiteoutKind::AufsMeta) => Ok(true),
            Err(problem) => Err(UnpackError::Whiteout {
                path: rel.to_path_buf(),
                problem,
            }),
        }
    }

    /// Creates the entry's node at `target`, replacing what was there.
    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        target: &Path,
        kind: EntryType,
        mode: u32,
    ) -> Result<Created, UnpackError> {
        let create = |source| UnpackError::CreateEntry {
            path: rel.to_path_buf(),
            source,
        };
        let link_name = |entry: &tar::Entry<'_, R>| -> Result<PathBuf, UnpackError> {
            Ok(entry
                .link_name()
                .map_err(UnpackError::ReadTar)?
                .unwrap_or_default()
                .into_owned())
        };
        match kind {
            EntryType::Directory => {
                if !remove_existing(target, true).map_err(create)? {
                    fs::create_dir(target).map_err(create)?;
                }
                fs::set_permissions(target, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(create)?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let size = entry.size();
                self.budget.bytes = self.budget.bytes.saturating_add(size);
                if self.budget.bytes > self.limits.max_bytes {
                    return Err(UnpackError::QuotaBytes {
                        path: rel.to_path_buf(),
                        limit: self.limits.max_bytes,
                    });
                }
                remove_existing(target, false).map_err(create)?;
                self.skip_recording.set(true);
                let written = write_file(entry, target, mode);
                self.skip_recording.set(false);
                let sha256 = written.map_err(create)?;
                self.index.insert(rel, IndexEntry { size, sha256 });
            }
            EntryType::Symlink => {
                let link = link_name(entry)?;
                remove_existing(target, false).map_err(create)?;
                std::os::unix::fs::symlink(&link, target).map_err(create)?;
            }
            EntryType::Link => {
                let source = check_hardlink_target(self.root, rel, &link_name(entry)?)?;
                remove_existing(target, false).map_err(create)?;
                fs::hard_link(self.root.join(&source), target).map_err(create)?;
                if let Some(found) = self
                    .index
                    .files
                    .get(source.to_string_lossy().as_ref())
                    .copied()
                {
                    self.index.insert(rel, found);
                }
                return Ok(Created::Done); // shares the inode: owner and times are the source's
            }
            EntryType::Char | EntryType::Block => {
                return self.device_node(entry, rel, target, kind, mode)
            }
            EntryType::Fifo => {
                remove_existing(target, false).map_err(create)?;
                node::make_node(target, libc::S_IFIFO, mode, 0, 0).map_err(create)?;
            }
            other => {
                return Err(UnpackError::UnsupportedEntry {
                    path: rel.to_path_buf(),
                    kind: format!("{other:?}"),
                })
            }
        }
        Ok(Created::Node)
    }

    /// A character or block device node, when the limits allow them.
    fn device_node<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        rel: &Path,
        target: &Path,
        kind: EntryType,
        mode: u32,
    ) -> Result<Created, UnpackError> {
        if !self.limits.allow_devices {
            return Err(UnpackError::DeviceNode {
                path: rel.to_path_buf(),
            });
        }
        let create = |source| UnpackError::CreateEntry {
            path: rel.to_path_buf(),
            source,
        };
        let kind_bits = if kind == EntryType::Char {
            libc::S_IFCHR
        } else {
            libc::S_IFBLK
        };
        let header = entry.header();
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        remove_existing(target, false).map_err(create)?;
        match node::make_node(target, kind_bits, mode, major, minor) {
            Ok(()) => Ok(Created::Node),
            // Unprivileged (a controller reading layers for deltas): a node has no
            // content, so the layer is still whole for every other purpose.
            Err(e) if !self.chown && e.raw_os_error() == Some(libc::EPERM) => {
                self.skipped_devices += 1;
                Ok(Created::Done)
            }
            Err(e) => Err(create(e)),
        }
    }

    /// Directory times, last (creating entries inside them changed their mtime).
    fn finish(self) -> Result<LayerIndex, UnpackError> {
        if self.skipped_devices > 0 {
            tracing::debug!(
                skipped_devices = self.skipped_devices,
                "device nodes of the layer left out: creating them needs CAP_MKNOD"
            );
        }
        for (dir, mtime) in self.dir_mtimes.iter().rev() {
            node::set_mtime(dir, *mtime).map_err(|source| UnpackError::CreateEntry {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(self.index)
    }
}

fn parent_error(rel: &Path, problem: ParentProblem) -> UnpackError {
    match problem {
        ParentProblem::Symlink(through) => UnpackError::WriteThroughSymlink {
            path: rel.into(),
            through,
        },
        ParentProblem::NotDirectory(through) => UnpackError::ParentNotDirectory {
            path: rel.into(),
            through,
        },
        ParentProblem::Io(source) => UnpackError::CreateEntry {
            path: rel.into(),
            source,
        },
    }
}

/// A hardlink may only point at a file already unpacked in this layer.
fn check_hardlink_target(root: &Path, rel: &Path, raw: &Path) -> Result<PathBuf, UnpackError> {
    let refuse = |problem: String| UnpackError::HardlinkTarget {
        path: rel.into(),
        target: raw.into(),
        problem,
    };
    let source = sanitize(raw).map_err(|p| refuse(p.to_string()))?;
    if source.as_os_str().is_empty() {
        return Err(refuse("empty target".into()));
    }
    ensure_parents_exist_without_symlinks(root, &source).map_err(refuse)?;
    match fs::symlink_metadata(root.join(&source)) {
        Ok(meta) if meta.is_dir() => Err(refuse("target is a directory".into())),
        Ok(_) => Ok(source),
        Err(_) => Err(refuse("target is not in this layer".into())),
    }
}

fn ensure_parents_exist_without_symlinks(root: &Path, rel: &Path) -> Result<(), String> {
    let mut here = root.to_path_buf();
    for part in rel.parent().into_iter().flat_map(Path::components) {
        here.push(part);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{} is not a directory inside the layer",
                    here.display()
                ))
            }
            Err(_) => return Err("target is not in this layer".into()),
        }
    }
    Ok(())
}

/// Create a new file (never following a symlink) and copy the entry into it, hashing it.
fn write_file(
    entry: &mut impl Read,
    target: &Path,
    mode: u32,
) -> io::Result<crate::digest::Digest> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(target)?;
    let mut hasher = DigestHasher::default();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
    }
    file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    Ok(hasher.finish())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
