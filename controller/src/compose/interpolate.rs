//! Compose's variable interpolation, as `docker compose` does it on the client: `$VAR`,
//! `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`,
//! `${VAR:+alt}`, `${VAR+alt}` (defaults, messages and alternatives interpolated in turn) and
//! `$$` for a literal `$`. Pure: variables come from a lookup the caller gives.

use std::collections::BTreeSet;

/// Why a template could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${VAR:?message}` / `${VAR?message}` with the variable missing (or empty for `:?`).
    #[error("required variable {name} is missing a value: {message}")]
    Required { name: String, message: String },
    /// A `$` that starts no variable (`$1`, `${}`, a `${` without `}`).
    #[error("invalid interpolation format in {text:?}: use $$ for a literal $")]
    Invalid { text: String },
}

/// Where variable values come from, and what was asked of it.
pub struct Lookup<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    /// Variables read while unset (Docker warns and uses an empty string).
    pub unset: BTreeSet<String>,
    /// Every variable a template named, set or not.
    pub named: BTreeSet<String>,
}

impl<'a> Lookup<'a> {
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Lookup {
            get,
            unset: BTreeSet::new(),
            named: BTreeSet::new(),
        }
    }

    fn value(&mut self, name: &str) -> Option<String> {
        self.named.insert(name.to_string());
        (self.get)(name)
    }
}

/// True when `text` holds anything interpolation would change (`$VAR`, `${…}`, `$$`, or an
/// invalid `$`).
pub fn has_template(text: &str) -> bool {
    text.contains('$')
}

/// Interpolates one string value.
pub fn interpolate(text: &str, lookup: &mut Lookup<'_>) -> Result<String, TemplateError> {
    let invalid = || TemplateError::Invalid {
        text: text.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body).ok_or_else(invalid)?;
            out.push_str(&braced(&body[..end], lookup).map_err(|e| match e {
                TemplateError::Invalid { .. } => invalid(),
                other => other,
            })?);
            rest = &body[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(invalid());
            }
            let name = &after[..len];
            out.push_str(&plain(name, lookup));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `$NAME` / `${NAME}`: the value, or empty (and recorded as unset).
fn plain(name: &str, lookup: &mut Lookup<'_>) -> String {
    lookup.value(name).unwrap_or_else(|| {
        lookup.unset.insert(name.to_string());
        String::new()
    })
}

/// The inside of `${…}`.
fn braced(body: &str, lookup: &mut Lookup<'_>) -> Result<String, TemplateError> {
    let len = name_len(body);
    let invalid = || TemplateError::Invalid {
        text: format!("${{{body}}}"),
    };
    if len == 0 {
        return Err(invalid());
    }
    let name = &body[..len];
    let rest = &body[len..];
    if rest.is_empty() {
        return Ok(plain(name, lookup));
    }
    let (empty_counts, op, word) = match rest.strip_prefix(':') {
        Some(r) => (true, r.chars().next(), r.get(1..).unwrap_or("")),
        None => (false, rest.chars().next(), rest.get(1..).unwrap_or("")),
    };
    let value = lookup.value(name);
    let set = match &value {
        Some(v) => !(empty_counts && v.is_empty()),
        None => false,
    };
    match op {
        Some('-') if set => Ok(value.unwrap_or_default()),
        Some('-') => interpolate(word, lookup),
        Some('?') if set => Ok(value.unwrap_or_default()),
        Some('?') => Err(TemplateError::Required {
            name: name.to_string(),
            message: interpolate(word, lookup)?,
        }),
        Some('+') if set => interpolate(word, lookup),
        Some('+') => Ok(String::new()),
        _ => Err(invalid()),
    }
}

/// The length of the variable name at the start of `text` (`[_A-Za-z][_A-Za-z0-9]*`).
fn name_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(*c == '_' || c.is_ascii_alphanumeric()))
        .map_or(text.len(), |(i, _)| i)
}

/// The index of the `}` closing a `${` whose body starts `body`, counting nested `${…}`.
fn closing_brace(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TAG" => Some("1.2".into()),
            "EMPTY" => Some(String::new()),
            "HOST" => Some("db".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, TemplateError> {
        interpolate(text, &mut Lookup::new(&env))
    }

    #[test]
    fn interpolation_follows_docker_compose() {
        let cases = [
            ("app:$TAG", "app:1.2"),
            ("app:${TAG}", "app:1.2"),
            ("${UNSET}", ""),
            ("${UNSET:-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${UNSET-dflt}", "dflt"),
            ("${EMPTY-dflt}", ""),
            ("${TAG:-dflt}", "1.2"),
            ("${TAG:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("${TAG:?must be set}", "1.2"),
            ("${EMPTY?must be set}", ""),
            ("$$SENSOR_PORT", "$SENSOR_PORT"),
            ("a $$ b $${X}", "a $ b ${X}"),
            ("${UNSET:-${HOST}:5432}", "db:5432"),
            ("${UNSET:-${ALSO_UNSET:-x}}y", "xy"),
            ("${UNSET:-a}}", "a}"),
            ("$TAG-suffix", "1.2-suffix"),
            ("${UNSET:-$$}", "$"),
            ("no dollars", "no dollars"),
        ];
        for (text, want) in cases {
            assert_eq!(run(text).as_deref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn a_missing_required_variable_names_it_and_the_message() {
        for text in ["${DB_PASSWORD:?set it}", "${DB_PASSWORD?set it}"] {
            assert_eq!(
                run(text),
                Err(TemplateError::Required {
                    name: "DB_PASSWORD".into(),
                    message: "set it".into()
                })
            );
        }
        assert!(matches!(
            run("${EMPTY:?x}"),
            Err(TemplateError::Required { .. })
        ));
    }

    #[test]
    fn a_dollar_that_starts_no_variable_is_refused() {
        for text in ["5$", "$1", "${}", "${TAG", "${TAG:x}", "${1A}", "${TAG!}"] {
            assert!(
                matches!(run(text), Err(TemplateError::Invalid { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn the_lookup_records_named_and_unset_variables() {
        let mut lookup = Lookup::new(&env);
        interpolate("${TAG} ${UNSET} ${OTHER:-x} $$NOT", &mut lookup).unwrap();
        assert_eq!(
            lookup.named.iter().collect::<Vec<_>>(),
            ["OTHER", "TAG", "UNSET"]
        );
        assert_eq!(lookup.unset.iter().collect::<Vec<_>>(), ["UNSET"]);
    }
}
