//! Finding the line of a key in the app text, for errors: the typed model and the YAML tree
//! keep no positions, but keys are never interpolated, so the text still shows them.

/// The 1-based line of the deepest key of `path` found in block style (`services`, `web`,
/// `environment`); sequence indexes are skipped. 0 when even the first key is missing.
pub fn line_of_path(text: &str, path: &[&str]) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut found = 0;
    // The block to search: lines [from, to) indented deeper than `parent_indent`.
    let (mut from, mut to, mut parent_indent) = (0, lines.len(), None::<usize>);
    for key in path.iter().filter(|k| k.parse::<usize>().is_err()) {
        let hit = (from..to).find(|&i| {
            let line = lines[i];
            let trimmed = line.trim_start().trim_start_matches("- ");
            let deeper = parent_indent.map_or(indent(line) == 0, |p| indent(line) > p);
            deeper && is_key_line(trimmed, key)
        });
        let Some(i) = hit else { break };
        found = i + 1;
        let own = indent(lines[i]);
        let end = (i + 1..to)
            .find(|&j| !lines[j].trim().is_empty() && indent(lines[j]) <= own)
            .unwrap_or(to);
        (from, to, parent_indent) = (i + 1, end, Some(own));
    }
    found
}

/// The first line at or after `from` (1-based) holding `needle`; else the first anywhere (a
/// value merged in from an anchor above); else `from`.
pub fn line_holding(text: &str, from: usize, needle: &str) -> usize {
    let find = |skip: usize| {
        text.lines()
            .enumerate()
            .skip(skip)
            .find(|(_, l)| l.contains(needle))
            .map(|(i, _)| i + 1)
    };
    find(from.saturating_sub(1))
        .or_else(|| find(0))
        .unwrap_or(from)
}

fn is_key_line(trimmed: &str, key: &str) -> bool {
    [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .any(|k| {
            trimmed
                .strip_prefix(k.as_str())
                .is_some_and(|r| r.starts_with(':'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
services:
  db:
    image: redis
    environment:
      A: 1
  web:
    image: app
    environment:
      - A=${X}
    deploy:
      resources:
        limits:
          cpus: 2
";

    #[test]
    fn keys_are_found_inside_their_parents_block() {
        assert_eq!(line_of_path(TEXT, &["services", "web", "environment"]), 8);
        assert_eq!(
            line_of_path(TEXT, &["services", "db", "environment", "A"]),
            5
        );
        assert_eq!(
            line_of_path(
                TEXT,
                &["services", "web", "deploy", "resources", "limits", "cpus"]
            ),
            13
        );
        // Not there: the deepest parent found.
        assert_eq!(line_of_path(TEXT, &["services", "web", "labels"]), 6);
        assert_eq!(
            line_of_path(TEXT, &["services", "web", "environment", "0"]),
            8
        );
        assert_eq!(line_of_path(TEXT, &["volumes"]), 0);
        assert_eq!(line_holding(TEXT, 8, "${X}"), 9);
    }
}
