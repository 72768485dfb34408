//! The only way from bytes on `desired` or `cmd` to a value the agent acts on: decode,
//! verify (key, signature, device, replay) and validate. A refusal is a [`Rejection`] that
//! becomes an `Event::Rejected`; nothing else happens, except that a genuine but invalid
//! desired state is also handed to the supervisor as [`Refused`], to be reported failed.

use coracle_proto::{
    decode, AgentUpdate, AgentUpdateError, CommandRequest, DesiredState, DeviceId, Generation,
    RejectReason, Signed, VerifyingKey,
};

/// A refused input: the class for dashboards and the detail for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
    /// Set when the input was a genuine desired state (signed by our key, for this device,
    /// not a replay) that the agent cannot run: the supervisor reports that generation as
    /// failed, so the operator sees why nothing changed.
    pub refused: Option<Refused>,
}

/// A verified desired state refused as invalid: its generation and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub generation: Generation,
    pub reason: String,
}

impl Rejection {
    pub(super) fn new(reason: RejectReason, what: &str, err: &dyn std::error::Error) -> Self {
        let detail = format!("{what}: {}", crate::runtime::error_chain(err));
        Self {
            reason,
            detail,
            refused: None,
        }
    }
}

/// Turns an `agent-update` body into a verified update for this device (the supervisor
/// judges its sequence against the slot record, see `ota`).
pub fn admit_agent_update(
    body: &[u8],
    key: &VerifyingKey,
    device: &DeviceId,
) -> Result<AgentUpdate, Rejection> {
    let signed: Signed<AgentUpdate> =
        decode(body).map_err(|e| Rejection::new(e.reject_reason(), "agent update", &e))?;
    signed.verify_update(key, device, 0).map_err(|e| {
        let reason = match &e {
            AgentUpdateError::Verify(v) => v.reject_reason(),
            AgentUpdateError::WrongDevice { .. } => RejectReason::WrongDevice,
            AgentUpdateError::Replay { .. } => RejectReason::Replay,
            AgentUpdateError::ForeignImage { .. } => RejectReason::Invalid,
        };
        Rejection::new(reason, "agent update", &e)
    })
}

/// Turns a `desired` body into a verified, valid desired state newer than or equal to `floor`.
pub fn admit_desired(
    body: &[u8],
    key: &VerifyingKey,
    device: &DeviceId,
    floor: Generation,
) -> Result<DesiredState, Rejection> {
    let signed: Signed<DesiredState> =
        decode(body).map_err(|e| Rejection::new(e.reject_reason(), "desired state", &e))?;
    let desired = signed
        .verify(key, device, floor)
        .map_err(|e| Rejection::new(e.reject_reason(), "desired state", &e))?;
    desired.validate().map_err(|e| Rejection {
        refused: Some(Refused {
            generation: desired.generation,
            reason: e.to_string(),
        }),
        ..Rejection::new(
            RejectReason::Invalid,
            &format!("desired state generation {}", desired.generation),
            &e,
        )
    })?;
    Ok(desired)
}

/// Decodes a `cmd` body.
pub fn admit_command(body: &[u8]) -> Result<CommandRequest, Rejection> {
    decode(body).map_err(|e| Rejection::new(e.reject_reason(), "command", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::{encode, samples, SigningKey};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn body(state: &DesiredState, signer: &SigningKey) -> Vec<u8> {
        encode(&Signed::sign(state, signer))
    }

    #[test]
    fn each_bad_input_gets_its_reason() {
        let trusted = key(1);
        let device = samples::device();
        let good = samples::desired_with_services(2);
        let mut other_device = good.clone();
        other_device.device = "someone-else".parse().unwrap();
        let mut invalid = good.clone();
        invalid.services[1].name = invalid.services[0].name.clone();
        let mut forged = body(&good, &trusted);
        let last = forged.len() - 1;
        forged[last] ^= 0xff;
        let cases: Vec<(Vec<u8>, RejectReason, &str)> = vec![
            (vec![], RejectReason::Malformed, "empty"),
            (vec![1, 0xff, 0xff], RejectReason::Malformed, "malformed"),
            (vec![9, 1, 2], RejectReason::UnsupportedVersion, "version 9"),
            (vec![0; 300 * 1024], RejectReason::TooLarge, "exceeds"),
            (body(&good, &key(2)), RejectReason::UnknownKey, "trusts key"),
            (forged, RejectReason::BadSignature, "signature"),
            (
                body(&other_device, &trusted),
                RejectReason::WrongDevice,
                "someone-else",
            ),
            (body(&good, &trusted), RejectReason::Replay, "replay"),
            (
                body(&invalid, &trusted),
                RejectReason::Invalid,
                "listed twice",
            ),
        ];
        for (bytes, reason, words) in cases {
            let floor = if reason == RejectReason::Replay {
                Generation(43)
            } else {
                Generation(0)
            };
            let got = admit_desired(&bytes, &trusted.verifying_key(), &device, floor).unwrap_err();
            assert_eq!(got.reason, reason, "{}", got.detail);
            // Only a genuine state is reported as a failed generation.
            assert_eq!(got.refused.is_some(), reason == RejectReason::Invalid);
            assert!(
                got.detail.contains(words),
                "{words:?} not in {:?}",
                got.detail
            );
        }
    }

    #[test]
    fn good_state_at_or_above_the_floor_is_admitted() {
        let trusted = key(1);
        let good = samples::desired_with_services(3);
        for floor in [0, 42] {
            let got = admit_desired(
                &body(&good, &trusted),
                &trusted.verifying_key(),
                &samples::device(),
                Generation(floor),
            )
            .unwrap();
            assert_eq!(got, good);
        }
    }

    #[test]
    fn commands_decode_or_are_rejected() {
        for req in samples::command_requests() {
            assert_eq!(admit_command(&encode(&req)).unwrap(), req);
        }
        assert_eq!(
            admit_command(b"\x01zz").unwrap_err().reason,
            RejectReason::Malformed
        );
    }
}
