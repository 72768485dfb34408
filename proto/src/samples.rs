//! Representative messages, shaped like a real deployment: used by the tests, the fuzz
//! seeds and the encoded-size report (`cargo run -p coracle-proto --example sizes`).

use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use crate::command::{Command, CommandOutcome, CommandReply, CommandRequest, Presence};
use crate::desired::{
    Dependency, DependencyCondition, DesiredState, HealthCheck, HealthProbe, Resources,
    RestartPolicy, ServiceSpec, UpdateStrategy, VolumeMount, VolumeSource,
};
use crate::digest::{Digest, ImageRef};
use crate::event::{Event, EventKind, RejectReason};
use crate::health::{ContainerSample, HealthSample};
use crate::ids::{DeviceId, Generation, ServiceName};
use crate::reported::{
    Condition, ContainerState, Health, ReportedState, ServiceStatus, UpdateStatus,
};

fn name(s: &str) -> ServiceName {
    s.parse().expect("sample service names are valid")
}

/// The device all samples are addressed to.
pub fn device() -> DeviceId {
    "greenhouse-pi-17"
        .parse()
        .expect("sample device id is valid")
}

fn digest(seed: u8) -> Digest {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add(i as u8).wrapping_mul(7);
    }
    Digest::from_bytes(bytes)
}

fn service(index: usize) -> ServiceSpec {
    let service_name = if index == 0 {
        "db".to_string()
    } else {
        format!("svc-{index}")
    };
    let mut spec = ServiceSpec::new(
        name(&service_name),
        ImageRef {
            registry: "controller.local:8443".to_string(),
            repository: format!("greenhouse/{service_name}"),
            digest: digest(index as u8),
        },
    );
    spec.command = vec!["/bin/app".to_string(), "--serve".to_string()];
    spec.env = vec![
        ("RUST_LOG".to_string(), "info".to_string()),
        ("SITE".to_string(), "north-field".to_string()),
        ("PORT".to_string(), format!("{}", 8000 + index)),
    ];
    spec.resources = Resources {
        memory_max_bytes: Some(64 << 20),
        cpu_millicores: Some(250),
        pids_max: Some(64),
        ..Resources::default()
    };
    spec.restart = RestartPolicy::Always;
    spec.health = Some(HealthCheck {
        probe: HealthProbe::Http {
            port: 8000 + index as u16,
            path: "/healthz".to_string(),
        },
        interval_ms: 10_000,
        timeout_ms: 2_000,
        retries: 3,
        start_period_ms: 5_000,
    });
    spec.volumes = vec![VolumeMount {
        source: VolumeSource::Named(format!("{service_name}-data")),
        target: "/var/lib/app".to_string(),
        read_only: false,
    }];
    spec.update = UpdateStrategy {
        health_gate_ms: Some(60_000),
        ..UpdateStrategy::default()
    };
    if index > 0 {
        spec.depends_on = vec![Dependency {
            service: name("db"),
            condition: DependencyCondition::Healthy,
        }];
    }
    spec
}

/// A desired state with `n` services: `db` and `svc-1..` that wait for it to be healthy.
pub fn desired_with_services(n: usize) -> DesiredState {
    DesiredState {
        registries: Vec::new(),
        device: device(),
        generation: Generation(42),
        services: (0..n).map(service).collect(),
    }
}

/// A typical health sample of a Pi running two containers.
pub fn health_sample() -> HealthSample {
    HealthSample {
        uptime_s: 1_209_600,
        cpu_permille: 137,
        mem_used_kib: 412_000,
        mem_total_kib: 3_884_000,
        disk_free_mib: 21_400,
        disk_total_mib: 29_800,
        temp_decicelsius: Some(512),
        load1_centi: 38,
        containers: vec![
            ContainerSample {
                service: 0,
                cpu_permille: 40,
                mem_kib: 52_000,
                restarts: 0,
                net_rx_kib: 18_200,
                net_tx_kib: 96_400,
            },
            ContainerSample {
                service: 1,
                cpu_permille: 12,
                mem_kib: 18_000,
                restarts: 1,
                net_rx_kib: 310,
                net_tx_kib: 120,
            },
        ],
        generation: Generation(42),
    }
}

/// A device 38 MB into the 40 MB second layer (of three) of service `web`'s image.
pub fn pull_progress() -> crate::progress::PullProgress {
    crate::progress::PullProgress {
        generation: Generation(42),
        service: name("web"),
        layer: 1,
        layers: 3,
        done_bytes: 38_000_000,
        total_bytes: 40_000_000,
        delta: false,
        stored: false,
    }
}

/// The reported state of a device running `desired_with_services(n)`.
pub fn reported_state(n: usize) -> ReportedState {
    ReportedState {
        sealing_key: alloc::string::String::new(),
        device: device(),
        applied: Generation(42),
        update: UpdateStatus::Idle,
        services: (0..n)
            .map(|i| ServiceStatus {
                name: service(i).name,
                image: digest(i as u8),
                state: ContainerState::Running,
                restart_count: 0,
                last_exit_code: None,
                oom_killed: false,
                health: Health::Healthy,
            })
            .collect(),
        layers: (0..n).map(|i| digest(100 + i as u8)).collect(),
        conditions: vec![Condition::CgroupControllerMissing {
            controller: "memory".to_string(),
        }],
        agent_version: "0.1.0".to_string(),
        platform: "linux/arm64".to_string(),
        credentials: Default::default(),
    }
}

/// One event of every kind.
pub fn events() -> Vec<Event> {
    let at = 1_795_000_000;
    let kinds = vec![
        EventKind::ContainerExited {
            service: name("db"),
            exit_code: 137,
            oom_killed: true,
        },
        EventKind::ContainerRestarted {
            service: name("db"),
            restart_count: 2,
        },
        EventKind::HealthChanged {
            service: name("svc-1"),
            health: Health::Unhealthy,
        },
        EventKind::PullProgress {
            image: digest(3),
            done_bytes: 1 << 20,
            total_bytes: 3 << 20,
            delta: true,
        },
        EventKind::PullFailed {
            image: digest(3),
            reason: "disk full".to_string(),
        },
        EventKind::Applied {
            generation: Generation(42),
        },
        EventKind::RolledBack {
            generation: Generation(43),
            service: name("svc-1"),
            reason: "unhealthy for the 60 s health gate".to_string(),
        },
        EventKind::Rejected {
            reason: RejectReason::Replay,
            detail: "generation 3 is older than 42".to_string(),
        },
    ];
    kinds
        .into_iter()
        .map(|kind| Event {
            at_unix_s: at,
            kind,
        })
        .collect()
}

/// One request of every kind.
pub fn command_requests() -> Vec<CommandRequest> {
    vec![
        CommandRequest {
            id: 1,
            command: Command::LogsTail {
                service: name("db"),
                lines: 100,
                max_bytes: 64 * 1024,
            },
        },
        CommandRequest {
            id: 2,
            command: Command::Restart {
                service: name("svc-1"),
            },
        },
        CommandRequest {
            id: 3,
            command: Command::Recheck,
        },
        CommandRequest {
            id: 4,
            command: Command::RotatePassword {
                sealed: crate::sealed::Sealed {
                    ephemeral: [7; 32],
                    ciphertext: vec![9; 24 + 64 + 16],
                },
            },
        },
    ]
}

/// One reply of every kind.
pub fn command_replies() -> Vec<CommandReply> {
    vec![
        CommandReply {
            id: 1,
            outcome: CommandOutcome::Logs {
                lines: vec!["listening on :8000".to_string()],
                truncated: false,
            },
        },
        CommandReply {
            id: 2,
            outcome: CommandOutcome::Done,
        },
        CommandReply {
            id: 3,
            outcome: CommandOutcome::Failed {
                reason: "no such service".to_string(),
            },
        },
    ]
}

/// Both presence values.
pub fn presences() -> Vec<Presence> {
    vec![Presence::Online, Presence::Offline]
}
