//! Finding the old counterpart of a new file: same content anywhere, same path, or a similar
//! path (version numbers changed: `foo-1.2.dist-info/RECORD` → `foo-1.3.dist-info/RECORD`,
//! `libz.so.1.2.13` → `libz.so.1.3`), or the same file name in a moved directory.

use std::collections::HashMap;

use super::op::OldRef;
use crate::digest::Digest;
use crate::layer_index::LayerIndex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counterpart {
    /// Same bytes: copy the whole file.
    Identical(OldRef),
    /// A different version of the file: patch against it.
    Similar {
        from: OldRef,
        size: u64,
    },
    None,
}

/// Lookup tables over the files of all base layers (later bases shadow earlier ones).
#[derive(Debug, Default)]
pub struct OldFiles {
    by_digest: HashMap<Digest, OldRef>,
    by_path: HashMap<String, (OldRef, u64)>,
    by_shape: HashMap<String, Vec<(OldRef, u64)>>,
    by_name: HashMap<String, Vec<(OldRef, u64)>>,
    /// Per base, its file paths by number.
    paths: Vec<Vec<String>>,
}

impl OldFiles {
    pub fn new(bases: &[&LayerIndex]) -> Self {
        let mut files = Self::default();
        for (base, index) in bases.iter().enumerate() {
            let base = u16::try_from(base).expect("fewer than 65536 base layers");
            let mut paths = Vec::with_capacity(index.files.len());
            for (file, (path, entry)) in index.files.iter().enumerate() {
                let file = u32::try_from(file).expect("fewer than 2^32 files in a layer");
                let from = OldRef { base, file };
                paths.push(path.clone());
                files.by_digest.insert(entry.sha256, from);
                files.by_path.insert(path.clone(), (from, entry.size));
                files
                    .by_shape
                    .entry(shape(path))
                    .or_default()
                    .push((from, entry.size));
                files
                    .by_name
                    .entry(file_name(path).to_owned())
                    .or_default()
                    .push((from, entry.size));
            }
            files.paths.push(paths);
        }
        files
    }

    /// The path of an old file.
    pub fn path(&self, from: &OldRef) -> &str {
        &self.paths[usize::from(from.base)][from.file as usize]
    }

    /// The best old file to build `path` (of `size` bytes and `digest`) from.
    pub fn counterpart(&self, path: &str, size: u64, digest: &Digest) -> Counterpart {
        if let Some(from) = self.by_digest.get(digest) {
            return Counterpart::Identical(*from);
        }
        let similar = self
            .by_path
            .get(path)
            .cloned()
            .or_else(|| closest(self.by_shape.get(&shape(path)), size))
            .or_else(|| closest(self.by_name.get(file_name(path)), size));
        match similar {
            Some((from, size)) => Counterpart::Similar { from, size },
            None => Counterpart::None,
        }
    }
}

/// The candidate nearest in size (ties: the first, i.e. the lowest base).
fn closest(candidates: Option<&Vec<(OldRef, u64)>>, size: u64) -> Option<(OldRef, u64)> {
    candidates?
        .iter()
        .min_by_key(|(_, s)| s.abs_diff(size))
        .cloned()
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A path with every version-like run (digits, and dots between digits) replaced by `#`.
pub fn shape(path: &str) -> String {
    let chars: Vec<char> = path.chars().collect();
    let digit = |k: usize| chars.get(k).is_some_and(char::is_ascii_digit);
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < chars.len() {
        if digit(i) {
            while digit(i) || (chars.get(i) == Some(&'.') && digit(i + 1)) {
                i += 1;
            }
            out.push('#');
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_index::IndexEntry;

    #[test]
    fn shape_hides_version_numbers() {
        let cases = [
            ("numpy-1.26.3.dist-info/RECORD", "numpy-#.dist-info/RECORD"),
            ("numpy-1.26.4.dist-info/RECORD", "numpy-#.dist-info/RECORD"),
            ("usr/lib/libz.so.1.2.13", "usr/lib/libz.so.#"),
            ("bin/busybox", "bin/busybox"),
        ];
        for (path, want) in cases {
            assert_eq!(shape(path), want, "{path}");
        }
    }

    fn index(files: &[(&str, u64, &[u8])]) -> LayerIndex {
        let mut index = LayerIndex::default();
        for (path, size, content) in files {
            index.insert(
                std::path::Path::new(path),
                IndexEntry {
                    size: *size,
                    sha256: Digest::of(content),
                },
            );
        }
        index
    }

    #[test]
    fn counterpart_prefers_content_then_path_then_shape_then_name() {
        let old = index(&[
            ("a/same.txt", 3, b"abc"),
            ("bin/tool", 100, b"tool v1"),
            ("foo-1.2.dist-info/RECORD", 50, b"record v1"),
            ("old/dir/moved.py", 70, b"moved v1"),
        ]);
        let files = OldFiles::new(&[&old]);
        let r = |p: &str| OldRef {
            base: 0,
            file: old.files.keys().position(|k| k == p).unwrap() as u32,
        };
        let cases = [
            (
                "elsewhere/copy.txt",
                3,
                &b"abc"[..],
                Counterpart::Identical(r("a/same.txt")),
            ),
            (
                "bin/tool",
                110,
                b"tool v2",
                Counterpart::Similar {
                    from: r("bin/tool"),
                    size: 100,
                },
            ),
            (
                "foo-1.3.dist-info/RECORD",
                55,
                b"record v2",
                Counterpart::Similar {
                    from: r("foo-1.2.dist-info/RECORD"),
                    size: 50,
                },
            ),
            (
                "new/place/moved.py",
                71,
                b"moved v2",
                Counterpart::Similar {
                    from: r("old/dir/moved.py"),
                    size: 70,
                },
            ),
            ("brand/new.c", 10, b"new", Counterpart::None),
        ];
        for (path, size, content, want) in cases {
            assert_eq!(
                files.counterpart(path, size, &Digest::of(content)),
                want,
                "{path}"
            );
        }
    }
}
