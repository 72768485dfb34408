//! `--log FILE` / `--log-format text|json`: where a caller (podman, containerd's shim)
//! reads the runtime's error after a failed verb. Lines are appended in runc's shapes:
//! `time="…" level=error msg="…"` or `{"level":"error","msg":"…","time":"…"}`.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// The two formats runc offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The log file given on the command line, if any.
#[derive(Debug, Clone)]
pub struct LogFile {
    pub path: Option<PathBuf>,
    pub format: LogFormat,
}

impl LogFile {
    /// Appends one line at `level`; a log file that cannot be written is not worth
    /// failing the verb for (the message goes to stderr as well).
    pub fn write(&self, level: &str, msg: &str) {
        let Some(path) = &self.path else { return };
        let line = format_line(self.format, level, msg, &rfc3339_now());
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

fn format_line(format: LogFormat, level: &str, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            let line = serde_json::json!({"level": level, "msg": msg, "time": time});
            format!("{line}\n")
        }
        LogFormat::Text => format!("time={time:?} level={level} msg={msg:?}\n"),
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` (UTC), without a date library.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_164_800 + 3_661), "2024-02-29T01:01:01Z");
    }

    #[test]
    fn lines_take_runc_s_shapes() {
        let json = format_line(LogFormat::Json, "error", "boom \"x\"", "T");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (value["level"].as_str(), value["msg"].as_str()),
            (Some("error"), Some("boom \"x\""))
        );
        let text = format_line(LogFormat::Text, "error", "boom", "T");
        assert_eq!(text, "time=\"T\" level=error msg=\"boom\"\n");
    }
}
