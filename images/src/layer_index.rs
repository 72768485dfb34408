//! The per-layer file index kept beside each unpacked layer: path → size and sha256 of every
//! regular file. The delta encoder and the device use it to find old counterparts of files.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub size: u64,
    pub sha256: Digest,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerIndex {
    /// Relative paths (no leading `/`), sorted.
    pub files: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerIndexError {
    #[error("read layer index {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse layer index {path}")]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("index layer dir {path}")]
    Walk {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LayerIndex {
    pub fn insert(&mut self, path: &Path, entry: IndexEntry) {
        self.files
            .insert(path.to_string_lossy().into_owned(), entry);
    }

    /// Sum of file sizes (hardlinks counted once per path).
    pub fn total_size(&self) -> u64 {
        self.files.values().map(|e| e.size).sum()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an index always serialises")
    }

    pub fn load(path: &Path) -> Result<Self, LayerIndexError> {
        let bytes = std::fs::read(path).map_err(|source| LayerIndexError::Read {
            path: path.into(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| LayerIndexError::Parse {
            path: path.into(),
            source,
        })
    }

    /// Index an unpacked layer directory by reading every regular file (for layers that
    /// arrived without an index, e.g. `--from-dir` on the command line).
    pub fn scan(root: &Path) -> Result<Self, LayerIndexError> {
        let mut index = Self::default();
        let mut stack = vec![root.to_path_buf()];
        let walk_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LayerIndexError::Walk { path, source }
        };
        while let Some(dir) = stack.pop() {
            for item in std::fs::read_dir(&dir).map_err(walk_err(&dir))? {
                let item = item.map_err(walk_err(&dir))?;
                let path = item.path();
                let kind = item.file_type().map_err(walk_err(&path))?;
                if kind.is_dir() {
                    stack.push(path);
                } else if kind.is_file() {
                    let (sha256, size) =
                        crate::digest::digest_file(&path).map_err(walk_err(&path))?;
                    let rel = path
                        .strip_prefix(root)
                        .expect("walked paths are below the root");
                    index.insert(rel, IndexEntry { size, sha256 });
                }
            }
        }
        Ok(index)
    }
}
