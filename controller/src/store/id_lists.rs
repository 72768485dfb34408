//! Statements about a list of devices: `IN (…)` lists and multi-row inserts, a statement
//! per chunk of devices instead of a round trip per device.

use coracle_proto::DeviceId;

use super::backend::Value;

/// Devices per statement: four parameters per written row stay within SQLite's 999.
pub(super) const CHUNK: usize = 200;

/// `?first, ?first+1, …`: `n` numbered placeholders.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An `IN (…)` list of `devices` and its parameters, padded (the last id repeated) to one
/// of a few lengths: each distinct statement is prepared once per connection and kept.
pub(super) fn in_list(devices: &[DeviceId]) -> (String, Vec<Value>) {
    let len = [1, 16, 64, CHUNK]
        .into_iter()
        .find(|&n| n >= devices.len())
        .unwrap_or(devices.len());
    let mut values: Vec<Value> = devices.iter().map(|d| Value::from(d.as_str())).collect();
    if let Some(last) = devices.last() {
        values.resize(len, Value::from(last.as_str()));
    }
    (placeholders(1, values.len()), values)
}
