//! `coracle device add|ls|show|rm|tag`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::output::{local_time, print_json};
use super::{ApiArgs, ApiClient};
use crate::api::devices::{AddDeviceRequest, AddDeviceResponse, RetagRequest};
use crate::datadir::write_private;
use crate::store::DeviceRecord;

#[derive(Debug, Args)]
pub struct DeviceArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: DeviceCommand,
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Enrol a device and write its bootstrap file (mode 0600).
    Add {
        /// Device id: lowercase letters, digits and '-'.
        name: String,
        /// Tag as key=value; repeatable.
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Where to write the bootstrap file (default: NAME.bootstrap.toml).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// List devices.
    Ls,
    /// Show one device with its reported state (always JSON).
    Show { name: String },
    /// The device's latest events (pulls, rollbacks, rejected inputs), oldest first, at
    /// local times.
    Events {
        name: String,
        /// How many of the latest events.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Remove a device and cut it off the broker.
    Rm { name: String },
    /// Give an online device a new broker password: sent sealed to it, confirmed by its
    /// agent, and only then the old one is revoked.
    Rotate { name: String },
    /// Set tags (`key=value`) and remove tags (`--rm key`).
    Tag {
        name: String,
        /// `key=value` to set.
        #[arg(value_parser = parse_tag)]
        set: Vec<(String, String)>,
        /// A tag key to remove; repeatable.
        #[arg(long = "rm")]
        remove: Vec<String>,
    },
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("tag {text:?} must be key=value"))?;
    crate::fleet::check_tag(key, value).map_err(|err| err.to_string())?;
    Ok((key.to_string(), value.to_string()))
}

/// An event's kind on one line: its name, then its fields as `key=value`.
fn event_summary(kind: &serde_json::Value) -> String {
    match kind {
        serde_json::Value::Object(map) if map.len() == 1 => {
            let (name, fields) = map
                .iter()
                .next()
                .map_or(("", &serde_json::Value::Null), |(k, v)| (k.as_str(), v));
            match fields {
                serde_json::Value::Object(fields) => {
                    let fields: Vec<String> = fields
                        .iter()
                        .map(|(k, v)| match v {
                            serde_json::Value::String(s) => format!("{k}={s}"),
                            other => format!("{k}={other}"),
                        })
                        .collect();
                    format!("{name} {}", fields.join(" "))
                }
                other => format!("{name} {other}"),
            }
        }
        serde_json::Value::String(name) => name.clone(),
        other => other.to_string(),
    }
}

pub fn run(args: DeviceArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    let json = args.api.json;
    match args.command {
        DeviceCommand::Add { name, tags, out } => {
            let request = AddDeviceRequest {
                id: name.clone(),
                tags: tags.into_iter().collect(),
            };
            let added: AddDeviceResponse = api.send("add device", "POST", "/devices", &request)?;
            let path = out.unwrap_or_else(|| PathBuf::from(format!("{name}.bootstrap.toml")));
            let text = toml::to_string(&added.bootstrap).context("cannot encode bootstrap file")?;
            write_private(&path, text.as_bytes())?;
            println!("device {name} enrolled; bootstrap file: {}", path.display());
        }
        DeviceCommand::Ls => {
            let devices: Vec<DeviceRecord> = api.get("list devices", "/devices")?;
            if json {
                return print_json(&devices);
            }
            println!(
                "{:<24} {:<8} {:>8} {:>8}  {:<19}  TAGS",
                "ID", "ONLINE", "DESIRED", "APPLIED", "LAST SEEN"
            );
            for d in devices {
                let generation = |g: Option<u64>| g.map_or("-".to_string(), |g| g.to_string());
                let tags: Vec<String> = d.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{:<24} {:<8} {:>8} {:>8}  {:<19}  {}",
                    d.id.as_str(),
                    if d.online { "yes" } else { "no" },
                    generation(d.desired_generation),
                    generation(d.applied_generation),
                    local_time(d.last_seen_unix),
                    tags.join(",")
                );
            }
        }
        DeviceCommand::Show { name } => {
            let detail: serde_json::Value = api.get("show device", &format!("/devices/{name}"))?;
            println!("{}", serde_json::to_string_pretty(&detail)?);
        }
        DeviceCommand::Events { name, limit } => {
            let path = format!("/devices/{name}/events?limit={limit}");
            let mut events: Vec<serde_json::Value> = api.get("device events", &path)?;
            // The API answers newest first; people and scripts read a log oldest first.
            events.reverse();
            if json {
                return print_json(&events);
            }
            for stored in events {
                let event = &stored["event"];
                println!(
                    "{}  {}",
                    local_time(event["at_unix_s"].as_i64()),
                    event_summary(&event["kind"])
                );
            }
        }
        DeviceCommand::Rm { name } => {
            api.delete("remove device", &format!("/devices/{name}"))?;
            if json {
                return print_json(&serde_json::json!({ "device": name, "removed": true }));
            }
            println!("device {name} removed and revoked");
        }
        DeviceCommand::Rotate { name } => {
            let _: serde_json::Value = api.send(
                "rotate device password",
                "POST",
                &format!("/devices/{name}/rotate"),
                &serde_json::json!({}),
            )?;
            println!("device {name}: new broker password confirmed by the device; the old one is revoked");
        }
        DeviceCommand::Tag { name, set, remove } => {
            if set.is_empty() && remove.is_empty() {
                bail!("nothing to change: give key=value to set or --rm KEY to remove");
            }
            let request = RetagRequest {
                set: set.into_iter().collect(),
                remove,
            };
            let record: DeviceRecord = api.send(
                "tag device",
                "PATCH",
                &format!("/devices/{name}/tags"),
                &request,
            )?;
            if json {
                return print_json(&record);
            }
            let tags: BTreeMap<_, _> = record.tags;
            println!("{name}: {tags:?}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_read_as_one_line() {
        let exited = serde_json::json!({"ContainerExited": {"service": "web", "code": 1}});
        assert_eq!(event_summary(&exited), "ContainerExited code=1 service=web");
        assert_eq!(event_summary(&serde_json::json!("Started")), "Started");
    }
}
