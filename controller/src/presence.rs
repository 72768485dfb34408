//! The offline sweep: every few seconds, devices silent for longer than `offline_after`
//! (about three health intervals) are marked offline and announced like a last will would
//! be. A health sample marks them online again (see `ingest`).

use std::sync::Arc;
use std::time::Duration;

use crate::fleet_events::{FleetEvent, FleetEvents};
use crate::store::{now_unix, Store};

/// Runs the sweep forever.
pub async fn run(store: Arc<Store>, notify: FleetEvents, offline_after: Duration) {
    let period = (offline_after / 3).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let cutoff = now_unix() - offline_after.as_secs() as i64;
        match tokio::task::block_in_place(|| store.mark_silent_offline(cutoff)) {
            Ok(silent) => {
                for device in silent {
                    tracing::info!(device = %device, silent_s = offline_after.as_secs(), "device marked offline: no heartbeat");
                    notify.send(FleetEvent::Presence {
                        device,
                        online: false,
                    });
                }
            }
            Err(err) => {
                tracing::warn!(error = %crate::api::error::error_chain(&err), "offline sweep failed")
            }
        }
    }
}
