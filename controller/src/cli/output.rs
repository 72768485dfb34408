//! How the CLI prints: `--json` (on every command that reads or changes something) prints
//! the API's answer as pretty JSON for scripts; the default is a table for people, with times
//! in the local time zone.

use serde::Serialize;

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` in the local time zone (the `TZ` variable or `/etc/localtime`, as
/// `date` reads them); `-` for no time.
pub fn local_time(unix_s: Option<i64>) -> String {
    let Some(unix_s) = unix_s else {
        return "-".into();
    };
    let Some(time) = libc::time_t::try_from(unix_s).ok() else {
        return unix_s.to_string();
    };
    // SAFETY: `tm` is plain data that `localtime_r` fills; both pointers are valid for the
    // call, and `localtime_r` (unlike `localtime`) keeps no shared buffer.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&time, &mut tm).is_null() {
            return unix_s.to_string();
        }
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_read_as_dates() {
        assert_eq!(local_time(None), "-");
        let text = local_time(Some(1_795_000_000));
        // 2026-11-18 in every time zone within a day of UTC.
        assert!(text.starts_with("2026-11-"), "{text}");
        assert_eq!(text.len(), "2026-11-18 07:06:40".len(), "{text}");
    }
}
