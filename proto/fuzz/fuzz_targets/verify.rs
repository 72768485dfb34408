//! A forged envelope must never verify: anything that decodes and verifies under the trusted
//! key must be exactly a state the key signed (here: none, as the fuzzer never has the key
//! except through the seed below).
#![no_main]

use coracle_proto::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let trusted = SigningKey::from_bytes(&[1; 32]);
    let sample = samples::desired_with_services(2);
    if let Ok(signed) = decode::<Signed<DesiredState>>(bytes) {
        if let Ok(state) = signed.verify(&trusted.verifying_key(), &samples::device(), Generation(0)) {
            // Only a signature made by `trusted` can get here; the payload must then be the
            // very bytes that were signed, so it can only be the seed state.
            assert_eq!(state, sample, "a state that was never signed verified");
        }
    }
});
