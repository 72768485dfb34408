//! `healthcheck:` into the agent's `HealthCheck`: Docker's `CMD`, `CMD-SHELL`, a plain
//! string (`CMD-SHELL` as written), `NONE` and `disable: true`, and Coracle's probes that
//! need no process in the container, `[TCP, PORT]` and `[HTTP, PORT, PATH]`.

use coracle_proto::{HealthCheck, HealthProbe};

use super::model::{Healthcheck, StringOrList};
use super::units;

/// `start_interval` in ms, when given: a tuning entry (`HealthCheck` keeps its layout).
/// Without it the agent probes at `interval` throughout (Docker would use 5s during
/// `start_period`).
pub(super) fn start_interval(h: &Healthcheck) -> Result<Option<u32>, (&'static str, String)> {
    let Some(text) = &h.start_interval else {
        return Ok(None);
    };
    let err = |e: String| ("healthcheck", format!("start_interval: {e}"));
    let ms = units::duration_ms(text).map_err(err)?;
    u32::try_from(ms)
        .map(Some)
        .map_err(|_| err(format!("{ms} ms is too long")))
}

/// The service's check; `None` when it is switched off. The error is shown under
/// `healthcheck`.
pub(super) fn health(h: &Healthcheck) -> Result<Option<HealthCheck>, String> {
    if h.disable == Some(true) {
        return Ok(None);
    }
    // Docker: a string is the CMD-SHELL form as written (not split into words).
    let args = match h.test.clone() {
        StringOrList::String(script) => vec!["CMD-SHELL".to_string(), script],
        list => list.into_args(),
    };
    let port = |text: Option<&String>| -> Result<u16, String> {
        text.and_then(|p| p.parse().ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| "test needs a port between 1 and 65535".to_string())
    };
    let probe = match args.first().map(String::as_str) {
        // Docker's way to switch off a check the image defines.
        Some("NONE") => return Ok(None),
        Some("CMD") => HealthProbe::Exec(args[1..].to_vec()),
        // Coracle's probes that need no process in the container (cheaper on a Pi):
        // ["TCP", PORT] and ["HTTP", PORT, PATH].
        Some("TCP") => HealthProbe::Tcp {
            port: port(args.get(1))?,
        },
        Some("HTTP") => HealthProbe::Http {
            port: port(args.get(1))?,
            path: args.get(2).cloned().unwrap_or_else(|| "/".to_string()),
        },
        Some("CMD-SHELL") => {
            HealthProbe::Exec(vec!["/bin/sh".into(), "-c".into(), args[1..].join(" ")])
        }
        Some(_) => HealthProbe::Exec(vec!["/bin/sh".into(), "-c".into(), args.join(" ")]),
        None => return Err("test is empty".to_string()),
    };
    let ms = |v: &Option<String>, default: u64| -> Result<u32, String> {
        let ms = v
            .as_deref()
            .map(units::duration_ms)
            .transpose()?
            .unwrap_or(default);
        u32::try_from(ms).map_err(|_| format!("{ms} ms is too long"))
    };
    Ok(Some(HealthCheck {
        probe,
        interval_ms: ms(&h.interval, 30_000)?,
        timeout_ms: ms(&h.timeout, 30_000)?,
        retries: h.retries.unwrap_or(3),
        start_period_ms: ms(&h.start_period, 0)?,
    }))
}
