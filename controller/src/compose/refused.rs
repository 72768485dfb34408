//! The Compose Specification's keys a device does not run yet, each refused by name with the
//! reason, so an app never deploys with a setting silently dropped. Keys neither here nor in
//! the model (`model`) are typos, refused by the parser as unknown fields.

use serde_yaml::Value;

/// Every reason starts with this.
pub const PREFIX: &str = "not supported on devices yet";

/// Top-level keys: (key, why).
pub const TOP_LEVEL: &[(&str, &str)] = &[
    ("secrets", "secrets (use env_file or a volume)"),
    (
        "configs",
        "configs (use a volume or bake the file into the image)",
    ),
    ("include", "including other app files"),
    ("models", "AI models"),
];

/// Service keys, as dotted paths below `services.NAME`: (key, why).
pub const SERVICE: &[(&str, &str)] = &[
    ("annotations", "OCI annotations"),
    ("attach", "attaching to service output (use coracle logs)"),
    ("blkio_config", "block I/O weights and limits"),
    (
        "build",
        "building images (build it, then push or `coracle image import` it)",
    ),
    ("cgroup", "cgroup namespace modes"),
    (
        "cgroup_parent",
        "cgroup parents (the agent owns the cgroup tree)",
    ),
    (
        "configs",
        "configs (use a volume or bake the file into the image)",
    ),
    (
        "container_name",
        "container names (containers are named after their service)",
    ),
    ("cpu_count", "Windows CPU counts"),
    ("cpu_percent", "Windows CPU percentages"),
    ("cpu_period", "CPU periods (use cpus)"),
    ("cpu_quota", "CPU quotas (use cpus)"),
    ("cpu_rt_period", "real-time CPU periods"),
    ("cpu_rt_runtime", "real-time CPU runtimes"),
    ("credential_spec", "Windows credential specs"),
    ("develop", "compose watch"),
    (
        "device_cgroup_rules",
        "device cgroup rules (list the devices)",
    ),
    ("domainname", "domain names"),
    ("extends", "extending other services (use YAML merge keys)"),
    ("external_links", "external links"),
    ("gpus", "GPUs"),
    ("ipc", "IPC namespace sharing"),
    ("isolation", "isolation technologies"),
    ("label_file", "label files (write labels in the app)"),
    (
        "links",
        "links (services reach each other by name on their app networks)",
    ),
    (
        "logging.options.compress",
        "compressing rotated logs (cap them with max-size and max-file)",
    ),
    ("logging.options.env", "log metadata (log lines carry none)"),
    (
        "logging.options.env-regex",
        "log metadata (log lines carry none)",
    ),
    (
        "logging.options.labels",
        "log metadata (log lines carry none)",
    ),
    (
        "logging.options.labels-regex",
        "log metadata (log lines carry none)",
    ),
    ("logging.options.tag", "log tags (log lines carry none)"),
    (
        "logging.options.mode",
        "log delivery modes (the agent's writes never block the container)",
    ),
    (
        "logging.options.max-buffer-size",
        "log delivery buffers (the agent's writes never block the container)",
    ),
    ("mac_address", "MAC addresses"),
    ("mem_swappiness", "swappiness"),
    ("models", "AI models"),
    ("oom_kill_disable", "disabling the OOM killer"),
    ("pid", "PID namespace sharing"),
    (
        "platform",
        "choosing a platform (each device pulls its own)",
    ),
    ("post_start", "post-start hooks"),
    (
        "pre_stop",
        "pre-stop hooks (use stop_signal and stop_grace_period)",
    ),
    ("provider", "service providers"),
    (
        "pull_policy",
        "pull policies (devices pull what the controller pins)",
    ),
    ("pull_refresh_after", "pull refresh intervals"),
    ("runtime", "other OCI runtimes"),
    ("scale", "several replicas of a service"),
    ("secrets", "secrets (use env_file or a volume)"),
    ("stdin_open", "interactive stdin"),
    ("storage_opt", "storage driver options"),
    ("tty", "terminals"),
    ("use_api_socket", "the Docker API socket"),
    (
        "userns_mode",
        "user namespace modes (set by the agent's config)",
    ),
    ("uts", "UTS namespace sharing"),
    (
        "volumes_from",
        "volumes from other services (name the volumes)",
    ),
    ("deploy.mode", "swarm service modes"),
    ("deploy.replicas", "several replicas of a service"),
    ("deploy.endpoint_mode", "swarm endpoint modes"),
    ("deploy.labels", "swarm service labels (use labels)"),
    (
        "deploy.placement",
        "swarm placement (choose devices with --device or --to)",
    ),
    (
        "deploy.restart_policy",
        "swarm restart policies (use restart)",
    ),
    (
        "deploy.rollback_config",
        "swarm rollback configs (devices roll back by themselves)",
    ),
    (
        "deploy.update_config.parallelism",
        "update parallelism (one device, one container)",
    ),
    ("deploy.update_config.delay", "update delays"),
    (
        "deploy.update_config.failure_action",
        "failure actions (a device always rolls back)",
    ),
    (
        "deploy.update_config.max_failure_ratio",
        "failure ratios (use coracle deploy --to --max-failures)",
    ),
    (
        "deploy.resources.reservations.devices",
        "device requests such as GPUs (list the devices under devices)",
    ),
    (
        "deploy.resources.reservations.pids",
        "process reservations (a process count is a limit: use deploy.resources.limits.pids)",
    ),
    (
        "deploy.resources.reservations.generic_resources",
        "generic resources (a swarm feature)",
    ),
];

/// Keys of a top-level `networks.NAME` entry, refused whatever their value: (key, why).
/// `driver` and `external` are judged by value (`networks`).
pub const NETWORK: &[(&str, &str)] = &[
    ("attachable", "attachable networks (a swarm feature)"),
    ("driver_opts", "network driver options"),
    ("enable_ipv4", "switching IPv4 off (app networks are IPv4)"),
    ("enable_ipv6", "IPv6 app networks (app networks are IPv4)"),
    (
        "ipam",
        "address management (the agent allocates each network's subnet from its own pool)",
    ),
    ("name", "custom network names (the key is the name)"),
];

/// Keys of a service's `networks.NAME` entry: (key, why).
pub const SERVICE_NETWORK: &[(&str, &str)] = &[
    ("driver_opts", "network driver options"),
    ("gw_priority", "gateway priorities"),
    ("interface_name", "interface names"),
    (
        "ipv4_address",
        "fixed addresses (the agent allocates addresses from its own pool)",
    ),
    ("ipv6_address", "IPv6 addresses (app networks are IPv4)"),
    ("link_local_ips", "link-local addresses"),
    ("mac_address", "MAC addresses"),
    ("priority", "network priorities"),
];

/// Sequence keys whose long (mapping) form is refused: (key, why).
pub const LONG_FORMS: &[(&str, &str)] = &[(
    "devices",
    "the long device syntax (write HOST[:CONTAINER[:PERMISSIONS]])",
)];

/// Keys of a long `volumes:` entry refused whatever their value, as dotted paths below the
/// entry: (key, why). Values the agent cannot honour (`type: npipe`, `bind.propagation:
/// shared`, …) are judged in `long_volumes`.
pub const LONG_VOLUME: &[(&str, &str)] = &[
    (
        "consistency",
        "consistency modes (a Docker Desktop file-sharing setting)",
    ),
    ("bind.selinux", "SELinux relabelling of bind mounts"),
    (
        "volume.subpath",
        "mounting a volume's subdirectory (mount the volume)",
    ),
    ("image", "mounting an image's files"),
];

/// A refused key found in the app: its dotted path from the root and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub path: Vec<String>,
    pub key: &'static str,
    pub reason: String,
}

/// The first refused key of the app tree (top level first, then services in file order).
pub fn first_refused<'a>(root: &'a Value) -> Option<Refusal> {
    let refusal = |path: Vec<String>, key: &'static str, why: &str| Refusal {
        path,
        key,
        reason: format!("{PREFIX}: {why}"),
    };
    for (key, why) in TOP_LEVEL {
        if root.get(key).is_some() {
            return Some(refusal(vec![key.to_string()], key, why));
        }
    }
    let entries = |value: Option<&'a Value>| {
        let mapping = value.and_then(Value::as_mapping).into_iter().flatten();
        mapping.map(|(name, entry)| (name.as_str().unwrap_or_default(), entry))
    };
    for (name, network) in entries(root.get("networks")) {
        if let Some((key, why)) = NETWORK.iter().find(|(k, _)| network.get(k).is_some()) {
            let path = ["networks", name, key].map(String::from);
            return Some(refusal(path.to_vec(), key, why));
        }
    }
    for (name, service) in entries(root.get("services")) {
        for (key, why) in SERVICE {
            if get_path(service, key).is_some() {
                let mut path = vec!["services".to_string(), name.to_string()];
                path.extend(key.split('.').map(String::from));
                return Some(refusal(path, key, why));
            }
        }
        for (network, entry) in entries(service.get("networks")) {
            if let Some((key, why)) = SERVICE_NETWORK.iter().find(|(k, _)| entry.get(k).is_some()) {
                let path = ["services", name, "networks", network, key].map(String::from);
                return Some(refusal(path.to_vec(), key, why));
            }
        }
        let volumes = service.get("volumes").and_then(Value::as_sequence);
        for (i, entry) in volumes.into_iter().flatten().enumerate() {
            if let Some((key, why)) = LONG_VOLUME
                .iter()
                .find(|(k, _)| get_path(entry, k).is_some())
            {
                let mut path = ["services", name, "volumes", &i.to_string()]
                    .map(String::from)
                    .to_vec();
                path.extend(key.split('.').map(String::from));
                return Some(refusal(path, key, why));
            }
        }
        for (key, why) in LONG_FORMS {
            let items = service.get(key).and_then(Value::as_sequence);
            if let Some(i) = items.and_then(|items| items.iter().position(Value::is_mapping)) {
                let path = ["services", name, key, &i.to_string()].map(String::from);
                return Some(refusal(path.to_vec(), key, why));
            }
        }
    }
    None
}

fn get_path<'a>(value: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(value, |v, key| v.get(key))
}

/// The first YAML tag in the app (`!reset`, `!override`: Compose's merge controls, which
/// only mean something across several app files), with its key path.
pub fn first_tag(value: &Value, path: &mut Vec<String>) -> Option<(Vec<String>, String)> {
    match value {
        Value::Tagged(tagged) => Some((path.clone(), tagged.tag.to_string())),
        Value::Sequence(items) => items.iter().enumerate().find_map(|(i, item)| {
            path.push(i.to_string());
            let found = first_tag(item, path);
            path.pop();
            found
        }),
        Value::Mapping(mapping) => mapping.iter().find_map(|(key, item)| {
            path.push(key.as_str().unwrap_or_default().to_string());
            let found = first_tag(item, path);
            path.pop();
            found
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => None,
    }
}
