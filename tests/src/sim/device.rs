//! One simulated device's reactions, as a pure state machine: it verifies desired states with
//! the real proto checks, then "applies" them (no containers) and reports healthy — or, for a
//! deterministic fraction of (device, generation) pairs, or for a state marked broken (a
//! service with `SIM_FAIL=1` in its environment), fails the health gate and reports a
//! rollback, as a real agent would.

use coracle_proto::{
    decode, encode, Command, CommandOutcome, CommandReply, CommandRequest, ContainerSample,
    ContainerState, DesiredState, DeviceId, Event, EventKind, Generation, Health, HealthSample,
    ReportedState, ServiceStatus, Signed, TopicKind, UpdateStatus, VerifyingKey,
};

/// A message the device sends in reaction to something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub kind: TopicKind,
    pub body: Vec<u8>,
}

/// A simulated device.
#[derive(Debug)]
pub struct SimDevice {
    id: DeviceId,
    trusted: VerifyingKey,
    /// Per mille of (device, generation) pairs that fail their health gate.
    fail_permille: u16,
    applied: Generation,
    reported: ReportedState,
    /// The highest generation that passed verification, applied or not.
    received: Option<Generation>,
    sessions: super::session::SimSessions,
}

/// The environment entry that makes a simulated device fail a desired state.
pub const BROKEN_MARKER: (&str, &str) = ("SIM_FAIL", "1");

fn marked_broken(state: &DesiredState) -> bool {
    state.services.iter().any(|s| {
        s.env
            .iter()
            .any(|(k, v)| (k.as_str(), v.as_str()) == BROKEN_MARKER)
    })
}

/// Whether `device` fails `generation`: a hash, so tests and benchmarks can predict it.
pub fn fails(device: &DeviceId, generation: Generation, fail_permille: u16) -> bool {
    // FNV-1a over the id and generation: stable across runs and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in device.as_str().bytes().chain(generation.0.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % 1000 < u64::from(fail_permille)
}

impl SimDevice {
    /// A device that has applied nothing yet.
    pub fn new(id: DeviceId, trusted: VerifyingKey, fail_permille: u16) -> Self {
        let reported = ReportedState {
            sealing_key: String::new(),
            credentials: Default::default(),
            device: id.clone(),
            applied: Generation(0),
            update: UpdateStatus::Idle,
            services: Vec::new(),
            layers: Vec::new(),
            conditions: Vec::new(),
            agent_version: concat!("sim-", env!("CARGO_PKG_VERSION")).to_string(),
            // It "runs" the test images, which are built for this machine.
            platform: coracle_images::oci::Platform::this_build().to_string(),
        };
        Self {
            id,
            trusted,
            fail_permille,
            applied: Generation(0),
            reported,
            received: None,
            sessions: Default::default(),
        }
    }

    /// The device's id.
    pub fn id(&self) -> &DeviceId {
        &self.id
    }

    /// The highest generation this device received and verified.
    pub fn received(&self) -> Option<Generation> {
        self.received
    }

    /// The current reported state, encoded: sent at connect and on change.
    pub fn reported(&self) -> Outgoing {
        Outgoing {
            kind: TopicKind::Reported,
            body: encode(&self.reported),
        }
    }

    /// Reacts to a body on the device's `desired` topic.
    pub fn on_desired(&mut self, body: &[u8], now_unix_s: u64) -> Vec<Outgoing> {
        let event = |kind| Outgoing {
            kind: TopicKind::Events,
            body: encode(&Event {
                at_unix_s: now_unix_s,
                kind,
            }),
        };
        let verified = decode::<Signed<DesiredState>>(body)
            .map_err(|err| (err.reject_reason(), err.to_string()))
            .and_then(|signed| {
                signed
                    .verify(&self.trusted, &self.id, self.applied)
                    .map_err(|err| (err.reject_reason(), err.to_string()))
            });
        let state = match verified {
            Ok(state) => state,
            Err((reason, detail)) => return vec![event(EventKind::Rejected { reason, detail })],
        };
        self.received = self.received.max(Some(state.generation));
        if state.generation == self.applied && self.applied.0 > 0 {
            return Vec::new(); // the retained state again, after a reconnect
        }
        if let UpdateStatus::RolledBack { generation, .. } = &self.reported.update {
            if *generation == state.generation {
                return Vec::new(); // a rolled-back generation is not retried
            }
        }
        if fails(&self.id, state.generation, self.fail_permille) || marked_broken(&state) {
            let service = state.services.first().map(|s| s.name.clone());
            let reason = "health gate failed (simulated)".to_string();
            self.reported.update = UpdateStatus::RolledBack {
                generation: state.generation,
                reason: reason.clone(),
            };
            let mut out = vec![self.reported()];
            if let Some(service) = service {
                out.push(event(EventKind::RolledBack {
                    generation: state.generation,
                    service,
                    reason,
                }));
            }
            return out;
        }
        self.applied = state.generation;
        self.reported.applied = state.generation;
        self.reported.update = UpdateStatus::Idle;
        self.reported.services = state
            .services
            .iter()
            .map(|s| ServiceStatus {
                name: s.name.clone(),
                image: s.image.digest,
                state: ContainerState::Running,
                restart_count: 0,
                last_exit_code: None,
                oom_killed: false,
                health: if s.health.is_some() {
                    Health::Healthy
                } else {
                    Health::None
                },
            })
            .collect();
        vec![
            self.reported(),
            event(EventKind::Applied {
                generation: state.generation,
            }),
        ]
    }

    /// Reacts to a body on the device's `cmd` topic like an agent: a log tail (synthetic
    /// lines), a restart (counted and reported) or a recheck; the reply goes on `cmd/reply`.
    pub fn on_command(&mut self, body: &[u8], now_unix_s: u64) -> Vec<Outgoing> {
        let Ok(request) = decode::<CommandRequest>(body) else {
            return Vec::new(); // the agent reports a Rejected event; the sim stays quiet
        };
        let mut out = Vec::new();
        let known = |name| self.reported.services.iter().any(|s| &s.name == name);
        let outcome = match &request.command {
            Command::LogsTail { service, lines, .. } if known(service) => {
                let count = (*lines).min(20);
                CommandOutcome::Logs {
                    lines: (1..=count)
                        .map(|n| format!("{service}: simulated log line {n} at {now_unix_s}"))
                        .collect(),
                    truncated: false,
                }
            }
            Command::Restart { service } if known(service) => {
                let mut restarts = 0;
                for status in &mut self.reported.services {
                    if &status.name == service {
                        status.restart_count += 1;
                        restarts = status.restart_count;
                    }
                }
                out.push(self.reported());
                out.push(Outgoing {
                    kind: TopicKind::Events,
                    body: encode(&Event {
                        at_unix_s: now_unix_s,
                        kind: EventKind::ContainerRestarted {
                            service: service.clone(),
                            restart_count: restarts,
                        },
                    }),
                });
                CommandOutcome::Done
            }
            Command::LogsTail { service, .. } | Command::Restart { service } => {
                CommandOutcome::Failed {
                    reason: format!("no container for service {service}"),
                }
            }
            Command::Recheck => {
                out.push(self.reported());
                CommandOutcome::Done
            }
            // Simulated devices hold no sealing key and no bootstrap file.
            Command::RotatePassword { .. } | Command::RotatePullToken { .. } => {
                CommandOutcome::Failed {
                    reason: "simulated devices do not rotate credentials".into(),
                }
            }
        };
        out.push(Outgoing {
            kind: TopicKind::CmdReply,
            body: encode(&CommandReply {
                id: request.id,
                outcome,
            }),
        });
        out
    }

    /// Plausible vitals of each applied service (by its index, as an agent sends them).
    fn container_samples(&self, uptime_s: u32) -> Vec<ContainerSample> {
        (0u8..)
            .zip(&self.reported.services)
            .map(|(service, status)| ContainerSample {
                service,
                cpu_permille: 20 + 10 * u16::from(service) + (uptime_s % 15) as u16,
                mem_kib: 24_000 + 8_000 * u32::from(service),
                restarts: u16::try_from(status.restart_count).unwrap_or(u16::MAX),
                net_rx_kib: u64::from(uptime_s) * 3,
                net_tx_kib: u64::from(uptime_s),
            })
            .collect()
    }

    /// Reacts to a body on the device's `session` topic (`sim::session`).
    pub fn on_session(&mut self, body: &[u8]) -> Vec<Outgoing> {
        let services = &self.reported.services;
        self.sessions
            .on_request(body, |name| services.iter().any(|s| &s.name == name))
    }

    /// A plausible health sample for a Pi 4 running the applied services.
    pub fn health(&self, uptime_s: u32) -> Outgoing {
        let sample = HealthSample {
            uptime_s,
            cpu_permille: 80 + (uptime_s % 40) as u16,
            mem_used_kib: 380_000,
            mem_total_kib: 3_884_000,
            disk_free_mib: 21_000,
            disk_total_mib: 29_800,
            temp_decicelsius: Some(480 + (uptime_s % 30) as i16),
            load1_centi: 25,
            containers: self.container_samples(uptime_s),
            generation: self.applied,
        };
        Outgoing {
            kind: TopicKind::Health,
            body: encode(&sample),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::{samples, SigningKey};

    fn device(fail_permille: u16) -> (SimDevice, SigningKey) {
        let key = SigningKey::from_bytes(&[5; 32]);
        (
            SimDevice::new(samples::device(), key.verifying_key(), fail_permille),
            key,
        )
    }

    fn reported(out: &[Outgoing]) -> ReportedState {
        let body = &out
            .iter()
            .find(|o| o.kind == TopicKind::Reported)
            .unwrap()
            .body;
        decode(body).unwrap()
    }

    #[test]
    fn applies_a_verified_state_and_ignores_its_redelivery() {
        let (mut dev, key) = device(0);
        let body = encode(&Signed::sign(&samples::desired_with_services(2), &key));
        let out = dev.on_desired(&body, 1);
        let state = reported(&out);
        assert_eq!(state.applied, Generation(42));
        assert_eq!(state.services.len(), 2);
        assert!(dev.on_desired(&body, 2).is_empty());
    }

    #[test]
    fn rejects_forged_and_garbage_states_with_an_event() {
        let (mut dev, _) = device(0);
        let forged = encode(&Signed::sign(
            &samples::desired_with_services(1),
            &SigningKey::from_bytes(&[6; 32]),
        ));
        for body in [forged, vec![1, 2, 3]] {
            let out = dev.on_desired(&body, 1);
            assert_eq!(out.len(), 1);
            let event: Event = decode(&out[0].body).unwrap();
            assert!(matches!(event.kind, EventKind::Rejected { .. }));
        }
    }

    #[test]
    fn a_failing_generation_rolls_back_once_and_is_not_retried() {
        let (mut dev, key) = device(1000);
        let body = encode(&Signed::sign(&samples::desired_with_services(1), &key));
        let out = dev.on_desired(&body, 1);
        assert!(matches!(
            reported(&out).update,
            UpdateStatus::RolledBack { .. }
        ));
        assert_eq!(reported(&out).applied, Generation(0));
        assert!(dev.on_desired(&body, 2).is_empty());
    }

    #[test]
    fn answers_commands_for_its_services_and_refuses_others() {
        let (mut dev, key) = device(0);
        let body = encode(&Signed::sign(&samples::desired_with_services(1), &key));
        dev.on_desired(&body, 1);
        let service = dev.reported.services[0].name.clone();
        let ask = |command| encode(&CommandRequest { id: 7, command });
        let reply =
            |out: &[Outgoing]| -> CommandReply { decode(&out.last().unwrap().body).unwrap() };
        let out = dev.on_command(
            &ask(Command::Restart {
                service: service.clone(),
            }),
            2,
        );
        assert_eq!(reply(&out).outcome, CommandOutcome::Done);
        assert_eq!(reported(&out).services[0].restart_count, 1);
        let logs = ask(Command::LogsTail {
            service,
            lines: 3,
            max_bytes: 1000,
        });
        let out = dev.on_command(&logs, 3);
        assert!(
            matches!(reply(&out).outcome, CommandOutcome::Logs { ref lines, .. } if lines.len() == 3)
        );
        let other = ask(Command::Restart {
            service: "nope".to_string().try_into().unwrap(),
        });
        assert!(matches!(
            reply(&dev.on_command(&other, 4)).outcome,
            CommandOutcome::Failed { .. }
        ));
    }

    #[test]
    fn failure_fraction_is_roughly_honoured() {
        let failed = (0..1000)
            .filter(|i| fails(&format!("d{i}").parse().unwrap(), Generation(3), 200))
            .count();
        assert!((150..250).contains(&failed), "{failed}");
    }
}
