//! Statements about a list of devices: `IN (…)` lists and multi-row inserts, a statement
//! per chunk of devices instead of a round trip per device.

use coracle_proto::DeviceId;

use super::backend::{DbError, Row, Value};
use super::tx::Tx;
use super::StoreError;

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
fn in_list(devices: &[DeviceId]) -> (String, Vec<Value>) {
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

/// Runs the query `sql` makes of an `IN (…)` list once per chunk of `devices` and returns
/// every row, each mapped by `map`.
pub(super) fn query_by_devices<T>(
    tx: &mut Tx<'_>,
    step: &'static str,
    devices: &[DeviceId],
    sql: impl Fn(&str) -> String,
    mut map: impl FnMut(&Row) -> Result<T, DbError>,
) -> Result<Vec<T>, StoreError> {
    let mut rows = Vec::new();
    for chunk in devices.chunks(CHUNK) {
        let (list, ids) = in_list(chunk);
        rows.extend(tx.query(step, &sql(&list), &ids, &mut map)?);
    }
    Ok(rows)
}
