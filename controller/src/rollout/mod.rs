//! Rollouts. `engine` is the pure decision core (plain data in, a `Decision` out, no I/O,
//! no clock); the driver that stores rollouts and publishes desired states is not built yet.

pub mod engine;

pub use engine::{
    decide, parse_waves, wave_ends, Decision, DeviceHealth, Phase, RolloutPlan, RolloutView,
    Threshold, WaveSize, WaveSpecError,
};
