//! The fleet simulator: N devices that speak the real protocol over real MQTT connections,
//! without containers. `device` is the pure per-device reaction; `fleet` runs them.

pub mod device;
pub mod fleet;
pub mod session;

pub use device::{fails, Outgoing, SimDevice, BROKEN_MARKER};
pub use fleet::{BootstrapError, Credentials, DeviceSpec, Fleet, FleetConfig, FleetStats};

/// The fleet sizes a benchmark was given on its command line; `default` alone without any.
pub fn fleet_sizes_from_args(default: usize) -> anyhow::Result<Vec<usize>> {
    use anyhow::Context;
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().with_context(|| format!("fleet size {a:?}")))
        .collect::<anyhow::Result<_>>()?;
    Ok(if sizes.is_empty() {
        vec![default]
    } else {
        sizes
    })
}
