//! The fleet simulator: N devices that speak the real protocol over real MQTT connections,
//! without containers. `device` is the pure per-device reaction; `fleet` runs them.

pub mod device;
pub mod fleet;
pub mod session;

pub use device::{fails, Outgoing, SimDevice, BROKEN_MARKER};
pub use fleet::{BootstrapError, Credentials, DeviceSpec, Fleet, FleetConfig, FleetStats};
