//! Entry paths of a hostile tar: normalise to plain relative components or refuse, and walk
//! parents inside the layer without ever following a symlink.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

/// Why an entry path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    Absolute,
    ParentComponent,
    Empty,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Absolute => "absolute path",
            Self::ParentComponent => "path contains '..'",
            Self::Empty => "empty path",
        })
    }
}

/// `./a//b/` → `a/b`; `/a` and `a/../b` are refused. The layer root itself (`./`) gives an
/// empty path, which callers skip.
pub fn sanitize(raw: &Path) -> Result<PathBuf, PathProblem> {
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(PathProblem::ParentComponent),
            Component::RootDir | Component::Prefix(_) => return Err(PathProblem::Absolute),
        }
    }
    Ok(clean)
}

/// What stands in the way of creating an entry's parent directories.
#[derive(Debug)]
pub enum ParentProblem {
    /// A component is a symlink: writing below it could leave the layer.
    Symlink(PathBuf),
    /// A component is a file or other non-directory.
    NotDirectory(PathBuf),
    Io(io::Error),
}

/// Create the missing parent directories of `root/rel`, refusing symlinks on the way.
/// The root is a fresh temp dir only this process writes, so checking with `lstat` and then
/// creating is not racy.
pub fn ensure_parents(root: &Path, rel: &Path) -> Result<(), ParentProblem> {
    let mut here = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for part in parent.components() {
        here.push(part);
        match fs::symlink_metadata(&here) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(ParentProblem::Symlink(here)),
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(ParentProblem::NotDirectory(here)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .mode(0o755)
                .create(&here)
                .map_err(ParentProblem::Io)?,
            Err(e) => return Err(ParentProblem::Io(e)),
        }
    }
    Ok(())
}

/// Remove whatever is at `path` (a later tar entry replaces an earlier one). Directories are
/// kept when the new entry is a directory too (`keep_dir`).
pub fn remove_existing(path: &Path, keep_dir: bool) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            if keep_dir {
                return Ok(true);
            }
            fs::remove_dir_all(path)?;
            Ok(false)
        }
        Ok(_) => fs::remove_file(path).map(|()| false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_table() {
        let cases: &[(&str, Result<&str, PathProblem>)] = &[
            ("./a//b/", Ok("a/b")),
            ("a/./b", Ok("a/b")),
            ("./", Ok("")),
            ("/etc/passwd", Err(PathProblem::Absolute)),
            ("a/../../b", Err(PathProblem::ParentComponent)),
            ("..", Err(PathProblem::ParentComponent)),
        ];
        for (raw, want) in cases {
            let got = sanitize(Path::new(raw));
            assert_eq!(got, want.map(PathBuf::from), "{raw}");
        }
    }
}
