//! The wire contract under good and hostile input: every message round-trips, and every
//! corrupted, truncated, oversized, wrong-version, wrong-signature, wrong-device and replayed
//! input is refused with the right error — never a panic.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns
use coracle_proto::codec::MAX_BODY_BYTES;
use coracle_proto::samples;
use coracle_proto::*;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(msg: &T) {
    let bytes = encode(msg);
    assert_eq!(bytes[0], PROTOCOL_VERSION);
    let back: T = decode(&bytes).unwrap();
    assert_eq!(&back, msg);
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

#[test]
fn every_message_round_trips() {
    for n in 0..=5 {
        round_trip(&samples::desired_with_services(n));
        round_trip(&samples::reported_state(n));
    }
    round_trip(&samples::health_sample());
    round_trip(&HealthSample::default());
    samples::events().iter().for_each(round_trip);
    samples::command_requests().iter().for_each(round_trip);
    samples::command_replies().iter().for_each(round_trip);
    samples::presences().iter().for_each(round_trip);
}

#[test]
fn signed_desired_state_round_trips_and_verifies() {
    let k = key(1);
    let state = samples::desired_with_services(5);
    let signed = Signed::sign(&state, &k);
    let back: Signed<DesiredState> = decode(&encode(&signed)).unwrap();
    let opened = back
        .verify(&k.verifying_key(), &samples::device(), Generation(41))
        .unwrap();
    assert_eq!(opened, state);
}

#[test]
fn health_samples_of_older_agents_still_decode() {
    let current = samples::health_sample();
    let old = HealthSampleV1 {
        uptime_s: current.uptime_s,
        cpu_permille: current.cpu_permille,
        mem_used_kib: current.mem_used_kib,
        mem_total_kib: current.mem_total_kib,
        disk_free_mib: current.disk_free_mib,
        disk_total_mib: current.disk_total_mib,
        temp_decicelsius: current.temp_decicelsius,
        load1_centi: current.load1_centi,
        containers: current
            .containers
            .iter()
            .map(|c| ContainerSampleV1 {
                service: c.service,
                cpu_permille: c.cpu_permille,
                mem_kib: c.mem_kib,
                restarts: c.restarts,
            })
            .collect(),
    };
    for containers in 0..=2 {
        let mut old = old.clone();
        old.containers.truncate(containers);
        let back = HealthSample::decode(&encode(&old)).unwrap();
        assert_eq!(back, HealthSample::from(old.clone()));
        assert_eq!(back.generation, Generation(0));
        assert!(back.containers.iter().all(|c| c.net_rx_kib == 0));
    }
    // The current layout still decodes as itself, and garbage is still refused.
    assert_eq!(HealthSample::decode(&encode(&current)).unwrap(), current);
    assert!(HealthSample::decode(&[PROTOCOL_VERSION, 0xff]).is_err());
}

#[test]
fn typical_messages_stay_small() {
    let health = encode(&samples::health_sample()).len();
    let desired = encode(&Signed::sign(&samples::desired_with_services(5), &key(1))).len();
    println!("health sample: {health} bytes; signed 5-service desired state: {desired} bytes");
    assert!(health < 64, "health sample is {health} bytes");
    assert!(desired < 2048, "desired state is {desired} bytes");
}

#[test]
fn codec_names_each_framing_fault() {
    let good = encode(&samples::health_sample());
    assert_eq!(decode::<HealthSample>(&[]), Err(DecodeError::Empty));

    let mut wrong_version = good.clone();
    wrong_version[0] = 2;
    assert_eq!(
        decode::<HealthSample>(&wrong_version),
        Err(DecodeError::UnsupportedVersion { found: 2 })
    );

    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        decode::<HealthSample>(&trailing),
        Err(DecodeError::TrailingBytes { count: 3 })
    );

    let huge = vec![PROTOCOL_VERSION; MAX_BODY_BYTES + 1];
    assert_eq!(
        decode::<HealthSample>(&huge),
        Err(DecodeError::TooLarge {
            len: MAX_BODY_BYTES + 1,
            max: MAX_BODY_BYTES
        })
    );

    for cut in 1..good.len() {
        assert!(matches!(
            decode::<HealthSample>(&good[..cut]),
            Err(DecodeError::Malformed(_))
        ));
    }
}

#[test]
fn invalid_identities_inside_a_body_are_malformed() {
    // A body whose device id breaks the alphabet: encode a lookalike struct by hand.
    #[derive(Serialize)]
    struct RawDesired {
        device: String,
        generation: u64,
        services: Vec<()>,
    }
    let raw = encode(&RawDesired {
        device: "Pi/../x".into(),
        generation: 1,
        services: vec![],
    });
    assert!(matches!(
        decode::<DesiredState>(&raw),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn verify_names_each_refusal() {
    let (trusted, other) = (key(1), key(2));
    let state = samples::desired_with_services(2);
    let device = samples::device();
    let vk = trusted.verifying_key();

    let by_other = Signed::sign(&state, &other);
    assert!(matches!(
        by_other.verify(&vk, &device, Generation(0)),
        Err(VerifyError::UnknownKey { .. })
    ));

    // Claims the trusted key id but carries another key's signature.
    let mut forged = by_other.clone();
    forged.key_id = KeyId::of(&vk);
    assert_eq!(
        forged.verify(&vk, &device, Generation(0)),
        Err(VerifyError::BadSignature)
    );

    let mut tampered = Signed::sign(&state, &trusted);
    let last = tampered.payload.len() - 1;
    tampered.payload[last] ^= 1;
    assert_eq!(
        tampered.verify(&vk, &device, Generation(0)),
        Err(VerifyError::BadSignature)
    );

    let mut bad_sig = Signed::sign(&state, &trusted);
    bad_sig.signature.0[0] ^= 0x80;
    assert_eq!(
        bad_sig.verify(&vk, &device, Generation(0)),
        Err(VerifyError::BadSignature)
    );

    let signed = Signed::sign(&state, &trusted);
    let elsewhere: DeviceId = "another-device".parse().unwrap();
    assert!(matches!(
        signed.verify(&vk, &elsewhere, Generation(0)),
        Err(VerifyError::WrongDevice { .. })
    ));
    assert_eq!(
        signed.verify(&vk, &device, Generation(43)),
        Err(VerifyError::Replay {
            received: Generation(42),
            applied: Generation(43)
        })
    );
    // The retained message is redelivered on reconnect: the same generation is accepted.
    assert!(signed.verify(&vk, &device, Generation(42)).is_ok());

    // A signed payload that is not a valid body is a decode error, after the signature.
    let garbage: Signed<DesiredState> = {
        let mut s = Signed::sign(&state, &trusted);
        s.payload = vec![PROTOCOL_VERSION, 0xff, 0xff];
        let sig = ed25519_dalek::Signer::sign(
            &trusted,
            &[b"coracle/v1 signed envelope\0".as_slice(), &s.payload].concat(),
        );
        s.signature.0 = sig.to_bytes();
        s
    };
    assert!(matches!(
        garbage.verify(&vk, &device, Generation(0)),
        Err(VerifyError::Decode(_))
    ));
    assert_eq!(
        VerifyError::Replay {
            received: Generation(1),
            applied: Generation(2)
        }
        .reject_reason(),
        RejectReason::Replay
    );
}

/// Decodes bytes as every message type; the only acceptable outcomes are Ok or Err.
fn decode_everything(bytes: &[u8]) {
    let _ = decode::<DesiredState>(bytes);
    let _ = decode::<Signed<DesiredState>>(bytes);
    let _ = decode::<ReportedState>(bytes);
    let _ = decode::<HealthSample>(bytes);
    let _ = decode::<Event>(bytes);
    let _ = decode::<CommandRequest>(bytes);
    let _ = decode::<CommandReply>(bytes);
    let _ = decode::<Presence>(bytes);
}

fn valid_encodings() -> Vec<Vec<u8>> {
    let mut all = vec![
        encode(&samples::desired_with_services(5)),
        encode(&Signed::sign(&samples::desired_with_services(3), &key(1))),
        encode(&samples::reported_state(3)),
        encode(&samples::health_sample()),
    ];
    all.extend(samples::events().iter().map(encode));
    all.extend(samples::command_requests().iter().map(encode));
    all.extend(samples::command_replies().iter().map(encode));
    all
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_everything(&bytes);
        let mut versioned = vec![PROTOCOL_VERSION];
        versioned.extend_from_slice(&bytes);
        decode_everything(&versioned);
    }

    #[test]
    fn corrupted_valid_messages_never_panic(
        which in 0usize..64,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let encodings = valid_encodings();
        let mut bytes = encodings[which % encodings.len()].clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        decode_everything(&bytes);
        let keep = cut.index(bytes.len());
        decode_everything(&bytes[..keep]);
    }

    #[test]
    fn corrupted_signed_states_never_verify_as_something_else(
        at in any::<prop::sample::Index>(),
        value in 1u8..=255,
    ) {
        let k = key(1);
        let state = samples::desired_with_services(2);
        let mut bytes = encode(&Signed::sign(&state, &k));
        let i = at.index(bytes.len());
        bytes[i] ^= value;
        if let Ok(signed) = decode::<Signed<DesiredState>>(&bytes) {
            // Any byte change either breaks decoding, the key id, or the signature —
            // or it is the same state (e.g. a flipped bit in an unused varint path).
            if let Ok(opened) = signed.verify(&k.verifying_key(), &samples::device(), Generation(0)) {
                prop_assert_eq!(opened, state);
            }
        }
    }

    #[test]
    fn health_samples_round_trip(
        uptime_s in any::<u32>(), cpu in any::<u16>(), used in any::<u32>(), total in any::<u32>(),
        free in any::<u32>(), disk in any::<u32>(), temp in any::<Option<i16>>(), load in any::<u16>(),
        containers in proptest::collection::vec((any::<u8>(), any::<u16>(), any::<u32>(), any::<u16>(), any::<u64>(), any::<u64>()), 0..8),
        generation in any::<u64>(),
    ) {
        let sample = HealthSample {
            uptime_s, cpu_permille: cpu, mem_used_kib: used, mem_total_kib: total,
            disk_free_mib: free, disk_total_mib: disk, temp_decicelsius: temp, load1_centi: load,
            containers: containers.into_iter().map(|(service, cpu_permille, mem_kib, restarts, net_rx_kib, net_tx_kib)| {
                ContainerSample { service, cpu_permille, mem_kib, restarts, net_rx_kib, net_tx_kib }
            }).collect(),
            generation: Generation(generation),
        };
        let back = HealthSample::decode(&encode(&sample)).unwrap();
        prop_assert_eq!(back, sample);
    }

    #[test]
    fn events_with_arbitrary_text_round_trip(detail in ".{0,200}", code in any::<i32>(), at in any::<u64>()) {
        for kind in [
            EventKind::Rejected { reason: RejectReason::Malformed, detail: detail.clone() },
            EventKind::ContainerExited { service: "web".parse().unwrap(), exit_code: code, oom_killed: code % 2 == 0 },
        ] {
            let event = Event { at_unix_s: at, kind };
            let back: Event = decode(&encode(&event)).unwrap();
            prop_assert_eq!(back, event);
        }
    }

    #[test]
    fn device_ids_round_trip_or_are_refused(s in "[a-zA-Z0-9/+#-]{0,70}") {
        match s.parse::<DeviceId>() {
            Ok(id) => {
                let back: DeviceId = decode(&encode(&id)).unwrap();
                prop_assert_eq!(back, id);
            }
            Err(_) => {
                let as_body = encode(&s);
                prop_assert!(decode::<DeviceId>(&as_body).is_err());
            }
        }
    }
}
