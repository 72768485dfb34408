//! Compose's unit strings: durations (`1m30s`, `500ms`) and byte sizes (`512m`, `1g`).

/// Parses a compose duration into milliseconds.
pub fn duration_ms(text: &str) -> Result<u64, String> {
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut chars = text.trim().chars().peekable();
    if chars.peek().is_none() {
        return Err("empty duration".into());
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&next) = chars.peek() {
            if next.is_ascii_alphabetic() {
                unit.push(next);
                chars.next();
            } else {
                break;
            }
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("duration {text:?} has no number before {unit:?}"))?;
        let scale = match unit.as_str() {
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            other => return Err(format!("duration {text:?} has unknown unit {other:?}")),
        };
        total += (value * scale) as u64;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("duration {text:?} needs a unit (ms, s, m, h)"));
    }
    Ok(total)
}

/// Parses a byte size: a plain number of bytes or a number with b, k, m, g (powers of 1024).
pub fn bytes(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|r| !r.is_empty() && r.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&t);
    let (num, scale) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    let value: f64 = num.parse().map_err(|_| {
        format!("size {text:?} must be a number with an optional unit b, k, m or g")
    })?;
    if value < 0.0 {
        return Err(format!("size {text:?} is negative"));
    }
    Ok((value * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("30s"), Ok(30_000));
        assert_eq!(duration_ms("1m30s"), Ok(90_000));
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("1.5s"), Ok(1500));
        assert!(duration_ms("30").is_err());
        assert!(duration_ms("3d").is_err());
        assert!(duration_ms("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes("512m"), Ok(512 << 20));
        assert_eq!(bytes("1g"), Ok(1 << 30));
        assert_eq!(bytes("64MB"), Ok(64 << 20));
        assert_eq!(bytes("1000"), Ok(1000));
        assert!(bytes("lots").is_err());
    }
}
