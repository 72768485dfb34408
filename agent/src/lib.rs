//! Coracle agent: the device daemon. It receives signed desired state over MQTT, pulls
//! images, runs containers itself and reports health.
//!
//! Today the crate holds the command-line shell; the runtime (issue 3) and the daemon
//! (issue 6) grow here.

pub mod pull;
