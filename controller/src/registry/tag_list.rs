//! Listing tags and repositories. The tags of a repository are the regular files in its
//! `tags/` directory: a directory there is a nested repository (`<name>/tags/x`), never a
//! tag. Pages of a tag list (`n`, `last`, `Link`) are cut by the pure [`tag_page`].

use super::{check_tag, io, Registry, RegistryError};

/// One page of a tag list: the tags, and the last of them when more follow (the `last`
/// of the next page's `Link`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPage {
    pub tags: Vec<String>,
    pub next_after: Option<String>,
}

/// The tags (sorted) after `last`, at most `n` of them.
pub fn tag_page(sorted: &[String], n: Option<usize>, last: Option<&str>) -> TagPage {
    let rest: Vec<String> = sorted
        .iter()
        .filter(|tag| last.is_none_or(|last| tag.as_str() > last))
        .cloned()
        .collect();
    let Some(n) = n else {
        return TagPage {
            tags: rest,
            next_after: None,
        };
    };
    let more = rest.len() > n;
    let tags: Vec<String> = rest.into_iter().take(n).collect();
    let next_after = if more { tags.last().cloned() } else { None };
    TagPage { tags, next_after }
}

impl Registry {
    /// Whether the repository holds (or held) a manifest.
    pub fn has_repository(&self, name: &str) -> bool {
        self.repos.join(name).join("manifests").is_dir()
    }

    /// Tags of one repository, sorted (bytewise, the order `last` pages by).
    pub fn tags(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        let unknown = || RegistryError::NameUnknown { name: name.into() };
        if !self.has_repository(name) {
            return Err(unknown());
        }
        let dir = self.repos.join(name).join("tags");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A repository whose manifests were all pushed by digest has no tags dir.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io("list tags", &dir)(err)),
        };
        let mut tags: Vec<String> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                e.file_type().ok()?.is_file().then_some(())?;
                e.file_name().into_string().ok()
            })
            .filter(|t| check_tag(t).is_ok())
            .collect();
        tags.sort();
        Ok(tags)
    }

    /// Every repository holding at least one manifest, sorted. Every directory is looked
    /// into, `tags` and `manifests` included: they may hold nested repositories.
    pub fn repositories(&self) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        let mut stack = vec![self.repos.clone()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(io("list repositories", &dir))?;
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let path = entry.path();
                if path.join("manifests").is_dir() {
                    if let Ok(rel) = path.strip_prefix(&self.repos) {
                        out.push(rel.to_string_lossy().to_string());
                    }
                }
                stack.push(path);
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// (n, last, the page, where the next page starts).
    type Case = (
        Option<usize>,
        Option<&'static str>,
        &'static [&'static str],
        Option<&'static str>,
    );

    #[test]
    fn tag_pages_follow_n_and_last() {
        let all = tags(&["a", "b", "c", "d"]);
        let cases: &[Case] = &[
            (None, None, &["a", "b", "c", "d"], None),
            (Some(2), None, &["a", "b"], Some("b")),
            (Some(2), Some("b"), &["c", "d"], None),
            (Some(4), None, &["a", "b", "c", "d"], None),
            (Some(0), None, &[], None),
            (None, Some("bb"), &["c", "d"], None),
            (Some(1), Some("d"), &[], None),
        ];
        for (n, last, want, next) in cases {
            let page = tag_page(&all, *n, *last);
            assert_eq!(page.tags, tags(want), "n={n:?} last={last:?}");
            assert_eq!(page.next_after.as_deref(), *next, "n={n:?} last={last:?}");
        }
    }
}
