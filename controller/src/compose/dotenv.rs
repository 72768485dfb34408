//! Docker's `.env` syntax, for the `.env` beside an app, `--env-file` and a service's
//! `env_file:`: `KEY=VALUE` lines, `#` comments (whole lines, or after a space in an unquoted
//! value), an optional `export ` prefix, 'single quotes' taken literally, "double quotes" with
//! `\n`, `\t`, `\"`, `\\` escapes and line breaks, `${VAR}` interpolated in unquoted and
//! double-quoted values (earlier keys of the file first, then the caller's lookup). A bare
//! `KEY` takes its value from the lookup and is left out when that has none.

use super::interpolate::{interpolate, Lookup};

/// A line the parser could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DotenvError {
    pub line: usize,
    pub reason: String,
}

/// Parses an env file into `(KEY, VALUE)` pairs in file order (a later key wins).
pub fn parse(
    text: &str,
    outer: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, DotenvError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let line_no = index + 1;
        let error = |reason: String| DotenvError {
            line: line_no,
            reason,
        };
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim_start())),
            None => (line.trim(), None),
        };
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c == '#') {
            return Err(error(format!("{raw:?} is not KEY=VALUE")));
        }
        let Some(value) = value else {
            if let Some(v) = lookup_in(&pairs, outer, key) {
                pairs.push((key.to_string(), v));
            }
            continue;
        };
        let (text, expand) = if let Some(body) = value.strip_prefix('\'') {
            (
                quoted(body, '\'', &mut lines).ok_or_else(|| unclosed(line_no, key))?,
                false,
            )
        } else if let Some(body) = value.strip_prefix('"') {
            let raw = quoted(body, '"', &mut lines).ok_or_else(|| unclosed(line_no, key))?;
            (unescape(&raw), true)
        } else {
            (unquoted(value).to_string(), true)
        };
        let value = if expand {
            let get = |name: &str| lookup_in(&pairs, outer, name);
            interpolate(&text, &mut Lookup::new(&get)).map_err(|e| error(format!("{key}: {e}")))?
        } else {
            text
        };
        pairs.push((key.to_string(), value));
    }
    Ok(pairs)
}

fn lookup_in(
    pairs: &[(String, String)],
    outer: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> Option<String> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .or_else(|| outer(name))
}

fn unclosed(line: usize, key: &str) -> DotenvError {
    DotenvError {
        line,
        reason: format!("{key}: the quote is never closed"),
    }
}

/// An unquoted value: up to a ` #` comment, trailing spaces trimmed.
fn unquoted(value: &str) -> &str {
    let end = value
        .char_indices()
        .find(|&(i, c)| c == '#' && i > 0 && value[..i].ends_with([' ', '\t']))
        .map_or(value.len(), |(i, _)| i);
    value[..end].trim_end()
}

/// A quoted value from just after its opening quote, over further lines if needed, without
/// its closing quote (whatever follows it on the line is ignored, as a comment).
fn quoted<'a>(
    first: &str,
    quote: char,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
) -> Option<String> {
    let mut text = String::new();
    let mut current = first.to_string();
    loop {
        if let Some(end) = closing_quote(&current, quote) {
            text.push_str(&current[..end]);
            return Some(text);
        }
        text.push_str(&current);
        text.push('\n');
        current = lines.next()?.1.to_string();
    }
}

fn closing_quote(text: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if quote == '"' && c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        if c == quote && !escaped {
            return Some(i);
        }
        escaped = false;
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outer(name: &str) -> Option<String> {
        (name == "FROM_OUTSIDE").then(|| "outside".to_string())
    }

    #[test]
    fn docker_env_file_syntax() {
        let text = "\
# a comment
  # an indented comment

PLAIN=value
export EXPORTED=yes
SPACED = around  
COMMENTED=value # a comment
HASH=a#b
SINGLE='literal $PLAIN \\n # kept'
DOUBLE=\"line1\\nline2 \\\"q\\\" ${PLAIN}\"
MULTI=\"first
second\"
EMPTY=
REF=${PLAIN}-${FROM_OUTSIDE}
FROM_OUTSIDE
NOT_ANYWHERE
";
        let pairs = parse(text, &outer).unwrap();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PLAIN"), Some("value"));
        assert_eq!(get("EXPORTED"), Some("yes"));
        assert_eq!(get("SPACED"), Some("around"));
        assert_eq!(get("COMMENTED"), Some("value"));
        assert_eq!(get("HASH"), Some("a#b"));
        assert_eq!(get("SINGLE"), Some("literal $PLAIN \\n # kept"));
        assert_eq!(get("DOUBLE"), Some("line1\nline2 \"q\" value"));
        assert_eq!(get("MULTI"), Some("first\nsecond"));
        assert_eq!(get("EMPTY"), Some(""));
        assert_eq!(get("REF"), Some("value-outside"));
        assert_eq!(get("FROM_OUTSIDE"), Some("outside"));
        assert_eq!(get("NOT_ANYWHERE"), None);
    }

    #[test]
    fn bad_lines_name_their_line() {
        let cases = [
            ("A=1\nB='open\n", 2, "never closed"),
            ("A=1\nnot a key=1\n", 2, "KEY=VALUE"),
            ("A=${X:?needed}\n", 1, "required variable X"),
        ];
        for (text, line, reason) in cases {
            let err = parse(text, &outer).unwrap_err();
            assert_eq!(err.line, line, "{text}");
            assert!(err.reason.contains(reason), "{err}");
        }
    }
}
