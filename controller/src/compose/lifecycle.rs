//! The compose keys of a service's lifecycle: `init`, `stop_signal`, `stop_grace_period`
//! and `deploy.update_config` (`order`, `monitor`), into `Lifecycle` and `UpdateOrder`.

use coracle_proto::{signal_number, Lifecycle, NetworkMode, ServiceSpec, UpdateOrder};

use super::model::ComposeService;
use super::units;
use super::FieldResult;

/// The service's `Lifecycle`; an error names the compose key.
pub(super) fn lifecycle(s: &ComposeService) -> FieldResult<Lifecycle> {
    let stop_signal = s
        .stop_signal
        .as_ref()
        .map(|text| {
            let text = text.to_string();
            signal_number(&text).ok_or_else(|| {
                format!("{text:?} is not a signal (SIGTERM, TERM, USR1, a number 1 to 31)")
            })
        })
        .transpose()
        .map_err(|e| ("stop_signal", e))?;
    let stop_grace_ms = s
        .stop_grace_period
        .as_deref()
        .map(duration_ms)
        .transpose()
        .map_err(|e| ("stop_grace_period", e))?;
    let monitor = update_config(s).and_then(|u| u.monitor.as_deref());
    let min_uptime_ms = monitor
        .map(duration_ms)
        .transpose()
        .map_err(|e| ("deploy", format!("update_config.monitor: {e}")))?;
    Ok(Lifecycle {
        stop_signal,
        stop_grace_ms,
        init: s.init.unwrap_or(false),
        min_uptime_ms,
    })
}

/// `deploy.update_config.order`: `start-first` or `stop-first` as written. Unwritten, a
/// service updates `start-first` (the new container starts and passes its health check
/// while the old one serves) unless something it holds is exclusive: the device's network
/// (its ports would clash), a device, or a writable volume (two versions of a database on
/// one data dir would corrupt it).
pub(super) fn update_order(s: &ComposeService, spec: &ServiceSpec) -> FieldResult<UpdateOrder> {
    match update_config(s).and_then(|u| u.order.as_deref()) {
        None if holds_nothing_exclusive(spec) => Ok(UpdateOrder::StartFirst),
        None | Some("stop-first") => Ok(UpdateOrder::DownloadThenSwitch),
        Some("start-first") => Ok(UpdateOrder::StartFirst),
        Some(other) => Err((
            "deploy",
            format!("update_config.order: {other:?} is not start-first or stop-first"),
        )),
    }
}

fn holds_nothing_exclusive(spec: &ServiceSpec) -> bool {
    spec.network != NetworkMode::Host
        && spec.devices.is_empty()
        && spec.volumes.iter().all(|v| v.read_only)
}

fn update_config(s: &ComposeService) -> Option<&super::model::UpdateConfig> {
    s.deploy.as_ref()?.update_config.as_ref()
}

fn duration_ms(text: &str) -> Result<u32, String> {
    let ms = units::duration_ms(text)?;
    u32::try_from(ms).map_err(|_| format!("{text:?} is too long"))
}
