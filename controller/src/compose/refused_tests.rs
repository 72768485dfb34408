//! Walks the refusal table: every refused key is refused by its name, with its reason and
//! its line.

use super::refused::{
    LONG_FORMS, LONG_VOLUME, NETWORK, PREFIX, SERVICE, SERVICE_NETWORK, TOP_LEVEL,
};
use super::*;

#[test]
fn every_refused_service_key_is_named_with_its_reason_and_line() {
    for (key, why) in SERVICE {
        let parts: Vec<&str> = key.split('.').collect();
        let mut text = String::from("services:\n  web:\n    image: app:1\n");
        for (depth, part) in parts.iter().enumerate() {
            let indent = "  ".repeat(depth + 2);
            let value = if depth + 1 == parts.len() { " 1" } else { "" };
            text.push_str(&format!("{indent}{part}:{value}\n"));
        }
        let err = parse(&text).unwrap_err();
        let message = err.to_string();
        let wanted = format!("services.web.{key}: {PREFIX}: {why}");
        assert!(
            message.contains(&wanted),
            "{key}: {message:?} lacks {wanted:?}"
        );
        assert_eq!(err.line(), 3 + parts.len(), "{key}: {message}");
    }
}

#[test]
fn every_refused_top_level_key_is_named_with_its_reason_and_line() {
    for (key, why) in TOP_LEVEL {
        let text = format!("services:\n  web:\n    image: app:1\n{key}:\n  x: {{}}\n");
        let err = parse(&text).unwrap_err();
        let message = err.to_string();
        let wanted = format!("{key}: {PREFIX}: {why}");
        assert!(
            message.contains(&wanted),
            "{key}: {message:?} lacks {wanted:?}"
        );
        assert_eq!(err.line(), 4, "{key}: {message}");
    }
}

#[test]
fn every_refused_network_key_is_named_with_its_reason_and_line() {
    for (key, why) in NETWORK {
        let text = format!(
            "services:\n  web:\n    image: app:1\nnetworks:\n  back:\n    internal: true\n    {key}: x\n"
        );
        let err = parse(&text).unwrap_err();
        let message = err.to_string();
        let wanted = format!("networks.back.{key}: {PREFIX}: {why}");
        assert!(message.contains(&wanted), "{message:?} lacks {wanted:?}");
        assert_eq!(err.line(), 7, "{key}: {message}");
    }
    for (key, why) in SERVICE_NETWORK {
        let text = format!(
            "services:\n  web:\n    image: app:1\n    networks:\n      back:\n        aliases: [b]\n        {key}: x\nnetworks:\n  back:\n"
        );
        let err = parse(&text).unwrap_err();
        let message = err.to_string();
        let wanted = format!("services.web.networks.back.{key}: {PREFIX}: {why}");
        assert!(message.contains(&wanted), "{message:?} lacks {wanted:?}");
        assert_eq!(err.line(), 7, "{key}: {message}");
    }
}

#[test]
fn a_typo_is_still_an_unknown_key_with_its_line() {
    let text =
        "services:\n  web:\n    image: app:1\n    deploy:\n      resources:\n        limts: {}\n";
    let err = parse(text).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("unknown field `limts`"), "{message}");
    assert_eq!(err.line(), 6, "{message}");
}

#[test]
fn the_table_names_each_key_once_and_no_supported_key() {
    let mut keys: Vec<&str> = SERVICE.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), before, "a key is listed twice");
    let supported = [
        "image",
        "command",
        "entrypoint",
        "environment",
        "env_file",
        "volumes",
        "devices",
        "healthcheck",
        "restart",
        "mem_limit",
        "mem_reservation",
        "memswap_limit",
        "cpus",
        "cpu_shares",
        "cpuset",
        "pids_limit",
        "labels",
        "profiles",
        "depends_on",
        "network_mode",
        "working_dir",
        "user",
        "read_only",
        "cap_add",
        "cap_drop",
        "security_opt",
        "init",
        "stop_signal",
        "stop_grace_period",
        "deploy",
        "networks",
        "ports",
        "expose",
        "dns",
        "dns_search",
        "dns_opt",
        "extra_hosts",
        "sysctls",
        "ulimits",
        "oom_score_adj",
        "hostname",
    ];
    for key in supported {
        assert!(!keys.contains(&key), "{key} is supported and refused");
    }
}

#[test]
fn the_long_device_syntax_is_refused_by_name_at_its_entry() {
    for (key, why) in LONG_FORMS {
        let text = format!(
            "services:\n  web:\n    image: app:1\n    {key}:\n      - /a:/a\n      - source: /b\n        target: /b\n"
        );
        let err = parse(&text).unwrap_err();
        let message = err.to_string();
        let wanted = format!("services.web.{key}.1: {PREFIX}: {why}");
        assert!(
            message.contains(&wanted),
            "{key}: {message:?} lacks {wanted:?}"
        );
        assert_eq!(err.line(), 6, "{key}: {message}");
    }
}

#[test]
fn every_refused_long_volume_key_is_named_with_its_reason_and_line() {
    for (key, why) in LONG_VOLUME {
        let parts: Vec<&str> = key.split('.').collect();
        let mut text = String::from(
            "services:\n  web:\n    image: app:1\n    volumes:\n      - data:/a\n      - type: volume\n        source: data\n        target: /b\n",
        );
        for (depth, part) in parts.iter().enumerate() {
            let indent = "  ".repeat(depth + 4);
            let value = if depth + 1 == parts.len() { " x" } else { "" };
            text.push_str(&format!("{indent}{part}:{value}\n"));
        }
        let err = parse(&text).unwrap_err();
        let message = err.to_string();
        let wanted = format!("services.web.volumes.1.{key}: {PREFIX}: {why}");
        assert!(
            message.contains(&wanted),
            "{key}: {message:?} lacks {wanted:?}"
        );
        assert_eq!(err.line(), 8 + parts.len(), "{key}: {message}");
    }
}

#[test]
fn yaml_tags_are_refused_by_name() {
    let text = "services:\n  web:\n    image: app:1\n    command: !reset []\n";
    let err = parse(text).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("services.web.command") && message.contains("YAML tags (!reset)"),
        "{message}"
    );
    assert_eq!(err.line(), 4, "{message}");
}
