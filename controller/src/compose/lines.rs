//! Finding the line of a key in the app text, for errors: the typed model and the YAML tree
//! keep no positions, but keys are never interpolated, so the text still shows them.

/// The 1-based line of the deepest key of `path` found in block style (`services`, `web`,
/// `environment`); a sequence index selects that `- ` item of a block sequence (skipped when
/// the sequence is in flow style). 0 when even the first key is missing.
pub fn line_of_path(text: &str, path: &[&str]) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut found = 0;
    // The block to search: lines [from, to) indented deeper than `parent_indent`.
    let (mut from, mut to, mut parent_indent) = (0, lines.len(), None::<usize>);
    for key in path {
        if let Ok(index) = key.parse::<usize>() {
            // The items of a block sequence: `- ` lines at the block's shallowest dash.
            let is_item = |i: &usize| lines[*i].trim_start().starts_with('-');
            let Some(dash) = (from..to).filter(is_item).map(|i| indent(lines[i])).min() else {
                continue;
            };
            let mut items = (from..to).filter(|i| is_item(i) && indent(lines[*i]) == dash);
            let Some(i) = items.nth(index) else { break };
            found = i + 1;
            let end = (i + 1..to)
                .find(|&j| !lines[j].trim().is_empty() && indent(lines[j]) <= dash)
                .unwrap_or(to);
            // The item's first key shares the dash's line.
            (from, to) = (i, end);
            continue;
        }
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
            9
        );
        assert_eq!(line_of_path(TEXT, &["volumes"]), 0);
        // Sequence items of a block list, and keys inside them.
        let items = "services:\n  web:\n    volumes:\n      - a:/a\n      - type: bind\n        bind:\n          propagation: shared\n      - type: tmpfs\n";
        let at = |path: &[&str]| line_of_path(items, path);
        assert_eq!(at(&["services", "web", "volumes", "0"]), 4);
        assert_eq!(at(&["services", "web", "volumes", "1", "type"]), 5);
        assert_eq!(
            at(&["services", "web", "volumes", "1", "bind", "propagation"]),
            7
        );
        assert_eq!(at(&["services", "web", "volumes", "2", "type"]), 8);
        assert_eq!(at(&["services", "web", "volumes", "3"]), 3);
        let flow = "services:\n  web:\n    volumes: [a:/a, {type: tmpfs}]\n";
        assert_eq!(
            line_of_path(flow, &["services", "web", "volumes", "1", "type"]),
            3
        );
        assert_eq!(line_holding(TEXT, 8, "${X}"), 9);
    }
}
