//! Prints the encoded size of typical messages: `cargo run -p coracle-proto --example sizes`.

use coracle_proto::{encode, samples, Signed, SigningKey};

fn main() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut empty = samples::health_sample();
    empty.containers.clear();
    let rows = [
        (
            "HealthSample (2 containers)",
            encode(&samples::health_sample()).len(),
        ),
        ("HealthSample (no containers)", encode(&empty).len()),
        (
            "DesiredState, 5 services",
            encode(&samples::desired_with_services(5)).len(),
        ),
        (
            "Signed<DesiredState>, 5 services",
            encode(&Signed::sign(&samples::desired_with_services(5), &key)).len(),
        ),
        (
            "ReportedState, 5 services",
            encode(&samples::reported_state(5)).len(),
        ),
        (
            "PullProgress (one layer)",
            encode(&samples::pull_progress()).len(),
        ),
        (
            "Event (container exited)",
            encode(&samples::events()[0]).len(),
        ),
    ];
    println!("{:<36} {:>8}", "message", "bytes");
    for (name, len) in rows {
        println!("{name:<36} {len:>8}");
    }
}
