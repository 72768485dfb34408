//! Host paths as the policy compares them: lexically normalised (no `.`, no `..`, no
//! repeated or trailing `/`), and "under" a prefix only component by component, so
//! `/srv/data` covers `/srv/data/x` but not `/srv/database`. Pure: the controller never
//! sees the device's file system, so symlinks on the device are not followed here (see
//! docs/architecture/controller.md, policy/).

/// `path` normalised, or `None` when it is not absolute. `..` above the root stays at the
/// root, as the kernel resolves it: `/srv/../../etc` is `/etc`.
pub fn normalise(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Whether the normalised `path` is `prefix` or below it (`prefix` normalised too).
pub fn is_under(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_removes_dots_and_repeated_slashes() {
        let cases = [
            ("/", Some("/")),
            ("//", Some("/")),
            ("/srv/data/", Some("/srv/data")),
            ("/srv//data/./x", Some("/srv/data/x")),
            ("/srv/data/../../etc", Some("/etc")),
            ("/../..", Some("/")),
            ("/srv/data/..", Some("/srv")),
            ("srv/data", None),
            ("", None),
            ("/a\0b", None),
        ];
        for (path, want) in cases {
            assert_eq!(normalise(path).as_deref(), want, "{path:?}");
        }
    }

    #[test]
    fn under_is_component_wise() {
        assert!(is_under("/srv/data", "/srv/data"));
        assert!(is_under("/srv/data/x/y", "/srv/data"));
        assert!(!is_under("/srv/database", "/srv/data"));
        assert!(!is_under("/srv", "/srv/data"));
        assert!(!is_under("/", "/srv"));
        assert!(is_under("/anything", "/"));
        assert!(is_under("/", "/"));
    }
}
