//! Signs a desired state as the controller would and verifies it as a device would, then
//! shows the device refusing a replayed and a forged copy:
//! `cargo run -p coracle-proto --example sign_and_verify`.

use coracle_proto::{decode, encode, samples, DesiredState, Generation, Signed, SigningKey};

fn main() {
    let controller_key = SigningKey::from_bytes(&[7; 32]);
    let pinned = controller_key.verifying_key();
    let device = samples::device();
    let state = samples::desired_with_services(2);

    let wire = encode(&Signed::sign(&state, &controller_key));
    println!(
        "controller -> coracle/v1/{device}/desired: {} bytes",
        wire.len()
    );

    let received: Signed<DesiredState> = match decode(&wire) {
        Ok(signed) => signed,
        Err(err) => return eprintln!("decode failed: {err}"),
    };
    match received.verify(&pinned, &device, Generation(41)) {
        Ok(s) => println!(
            "device accepts generation {} with {} services",
            s.generation,
            s.services.len()
        ),
        Err(err) => eprintln!("device refuses: {err}"),
    }
    match received.verify(&pinned, &device, Generation(50)) {
        Ok(_) => eprintln!("replay accepted (bug)"),
        Err(err) => println!("device refuses a replay: {err}"),
    }
    let forged = Signed::sign(&state, &SigningKey::from_bytes(&[9; 32]));
    match forged.verify(&pinned, &device, Generation(0)) {
        Ok(_) => eprintln!("forgery accepted (bug)"),
        Err(err) => println!("device refuses a forgery: {err}"),
    }
}
