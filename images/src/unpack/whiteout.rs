//! OCI whiteout names (`.wh.<name>` hides `<name>` of lower layers, `.wh..wh..opq` makes a
//! directory opaque), checked so that a whiteout can only ever name one sibling inside the
//! layer being unpacked: `.wh...` (`..`), `.wh..` (`.`) or `.wh.` (empty) would otherwise turn
//! into a removal of the layer's parent, of its root or of a whole directory.

use std::path::{Component, Path};

const WHITEOUT_PREFIX: &str = ".wh.";
/// Marks its directory opaque.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// aufs' own metadata (`.wh..wh.plnk`, `.wh..wh.aufs`): not content; Docker skips it too.
const AUFS_META_PREFIX: &str = ".wh..wh.";

/// What an entry's path means for whiteouts.
#[derive(Debug, PartialEq, Eq)]
pub enum WhiteoutKind<'a> {
    /// An ordinary entry.
    None,
    /// `dir/.wh..wh..opq`: the parent directory hides what lower layers have in it.
    Opaque,
    /// `dir/.wh.name`: `dir/name` is deleted; holds `name`.
    Hide(&'a str),
    /// aufs metadata, skipped.
    AufsMeta,
}

/// Why a whiteout entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhiteoutProblem {
    /// `.wh.`, `.wh..` or `.wh...`: names nothing, the directory itself or its parent.
    NotASibling(String),
    /// `.wh.x/y`: a whiteout used as a directory.
    NotLast(String),
    /// The name after `.wh.` is not valid UTF-8, so it cannot be checked.
    NotUtf8,
}

impl std::fmt::Display for WhiteoutProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotASibling(hidden) => write!(
                f,
                "whiteout of {hidden:?} would delete outside the entry's own directory"
            ),
            Self::NotLast(component) => write!(
                f,
                "whiteout {component:?} is used as a directory (a whiteout must be the last component)"
            ),
            Self::NotUtf8 => f.write_str("whiteout name is not valid UTF-8"),
        }
    }
}

/// Classify a sanitized relative entry path.
pub fn classify(rel: &Path) -> Result<WhiteoutKind<'_>, WhiteoutProblem> {
    let mut components = rel.components().peekable();
    while let Some(component) = components.next() {
        let Component::Normal(part) = component else {
            continue;
        };
        let is_last = components.peek().is_none();
        let bytes = part.as_encoded_bytes();
        if !bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            continue;
        }
        let name = part.to_str().ok_or(WhiteoutProblem::NotUtf8)?;
        if !is_last {
            return Err(WhiteoutProblem::NotLast(name.to_string()));
        }
        if name == OPAQUE_MARKER {
            return Ok(WhiteoutKind::Opaque);
        }
        if name.starts_with(AUFS_META_PREFIX) {
            return Ok(WhiteoutKind::AufsMeta);
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
            return Err(WhiteoutProblem::NotASibling(hidden.to_string()));
        }
        return Ok(WhiteoutKind::Hide(hidden));
    }
    Ok(WhiteoutKind::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let cases: &[(&str, Result<WhiteoutKind, WhiteoutProblem>)] = &[
            ("etc/passwd", Ok(WhiteoutKind::None)),
            ("etc/.whatever", Ok(WhiteoutKind::None)),
            ("data/.wh.gone.txt", Ok(WhiteoutKind::Hide("gone.txt"))),
            (".wh.top", Ok(WhiteoutKind::Hide("top"))),
            ("data/.wh...hidden", Ok(WhiteoutKind::Hide("..hidden"))),
            ("data/dir/.wh..wh..opq", Ok(WhiteoutKind::Opaque)),
            (".wh..wh.plnk", Ok(WhiteoutKind::AufsMeta)),
            (".wh...", Err(WhiteoutProblem::NotASibling("..".into()))),
            ("a/.wh...", Err(WhiteoutProblem::NotASibling("..".into()))),
            ("a/.wh..", Err(WhiteoutProblem::NotASibling(".".into()))),
            ("a/.wh.", Err(WhiteoutProblem::NotASibling(String::new()))),
            ("a/.wh.x/y", Err(WhiteoutProblem::NotLast(".wh.x".into()))),
            (
                ".wh..wh.plnk/1.2",
                Err(WhiteoutProblem::NotLast(".wh..wh.plnk".into())),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(&classify(Path::new(raw)), want, "{raw}");
        }
    }
}
