//! Every decoder must turn any byte string into a value or an error, never a panic.
#![no_main]

use coracle_proto::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = decode::<DesiredState>(bytes);
    let _ = decode::<Signed<DesiredState>>(bytes);
    let _ = decode::<ReportedState>(bytes);
    let _ = decode::<HealthSample>(bytes);
    let _ = decode::<Event>(bytes);
    let _ = decode::<CommandRequest>(bytes);
    let _ = decode::<CommandReply>(bytes);
    let _ = decode::<Presence>(bytes);
    let _ = topic::parse(&String::from_utf8_lossy(bytes));
});
