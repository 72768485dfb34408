//! The long syntax of a service's `volumes:` entries: `type: volume | bind | tmpfs` with
//! `source`, `target`, `read_only` and the type's own options, read as Docker Compose reads
//! them. A `volume` or `bind` entry becomes the same `VolumeMount` its short form makes (so
//! the name rule, `ServiceSpec::validate` and the deploy policy judge both alike); a `tmpfs`
//! entry the same `TmpfsMount` the `tmpfs:` key makes, with Docker's defaults.
//!
//! Accepted only where the agent does what Docker would: it never copies image files into a
//! new volume (`volume.nocopy: true` is its behaviour, `false` is refused), never creates a
//! missing host path (`bind.create_host_path: true` refused), keeps every container mount
//! private (`bind.propagation` `private`/`rprivate` only) and always binds recursively
//! (`bind.recursive: enabled` only). Keys refused whatever their value are in
//! `refused::LONG_VOLUME`.

use coracle_proto::{TmpfsMount, VolumeMount, VolumeSource};

use super::lenient::scalar_u64;
use super::lines::line_of_path;
use super::model::{ComposeFile, LongVolume, Scalar, VolumeEntry};
use super::refused::PREFIX;
use super::{tmpfs, ComposeError};

/// What a long entry mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mounted {
    Volume(VolumeMount),
    Tmpfs(TmpfsMount),
}

/// Why a long entry was refused: the key below the entry and the reason; `refused` when it
/// is a Compose feature a device does not run (else a bad value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EntryError {
    pub key: &'static str,
    pub reason: String,
    pub refused: bool,
}

impl std::fmt::Display for EntryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.refused {
            true => write!(f, "{}: {PREFIX}: {}", self.key, self.reason),
            false => write!(f, "{}: {}", self.key, self.reason),
        }
    }
}

fn bad(key: &'static str, reason: impl Into<String>) -> EntryError {
    EntryError {
        key,
        reason: reason.into(),
        refused: false,
    }
}

fn refuse(key: &'static str, why: &str) -> EntryError {
    EntryError {
        key,
        reason: why.to_string(),
        refused: true,
    }
}

/// Checks every long entry of every service, so an error names the entry's own line (the
/// conversion in `to_spec` then cannot fail).
pub(super) fn check(text: &str, file: &ComposeFile) -> Result<(), ComposeError> {
    for (name, service) in &file.services {
        for (i, entry) in service.volumes.iter().enumerate() {
            let VolumeEntry::Long(long) = entry else {
                continue;
            };
            let Err(err) = mount(long) else { continue };
            let index = i.to_string();
            let mut path = vec!["services", name.as_str(), "volumes", index.as_str()];
            path.extend(err.key.split('.'));
            let line = line_of_path(text, &path);
            return Err(match err.refused {
                true => ComposeError::Refused {
                    line,
                    key: path.join("."),
                    reason: format!("{PREFIX}: {}", err.reason),
                },
                false => ComposeError::Field {
                    line,
                    service: name.clone(),
                    field: "volumes",
                    reason: format!("entry {i}: {}: {}", err.key, err.reason),
                },
            });
        }
    }
    Ok(())
}

/// One long entry.
pub(super) fn mount(v: &LongVolume) -> Result<Mounted, EntryError> {
    let target = v
        .target
        .as_deref()
        .ok_or_else(|| bad("target", "is required"))?;
    if !target.starts_with('/') {
        return Err(bad(
            "target",
            format!("{target:?} must be an absolute path"),
        ));
    }
    let read_only = v.read_only.unwrap_or(false);
    let only = |given: bool, key: &'static str, kind: &str| match given {
        true => Err(bad(key, format!("options need type: {kind}"))),
        false => Ok(()),
    };
    match v.kind.as_str() {
        "volume" => {
            only(v.bind.is_some(), "bind", "bind")?;
            only(v.tmpfs.is_some(), "tmpfs", "tmpfs")?;
            let source = v.source.as_deref().ok_or_else(|| {
                refuse(
                    "source",
                    "anonymous volumes (name the volume: source: NAME)",
                )
            })?;
            if v.volume.as_ref().and_then(|o| o.nocopy) == Some(false) {
                return Err(refuse(
                    "volume.nocopy",
                    "copying the image's files into a new volume (a device's volumes start empty, as with nocopy: true)",
                ));
            }
            Ok(Mounted::Volume(VolumeMount {
                source: VolumeSource::Named(source.into()),
                target: target.into(),
                read_only,
            }))
        }
        "bind" => {
            only(v.volume.is_some(), "volume", "volume")?;
            only(v.tmpfs.is_some(), "tmpfs", "tmpfs")?;
            let source = v
                .source
                .as_deref()
                .ok_or_else(|| bad("source", "is required for a bind mount"))?;
            if !source.starts_with('/') {
                return Err(bad(
                    "source",
                    format!("{source:?}: relative host paths are not supported on devices"),
                ));
            }
            if let Some(bind) = &v.bind {
                bind_options(bind)?;
            }
            Ok(Mounted::Volume(VolumeMount {
                source: VolumeSource::HostPath(source.into()),
                target: target.into(),
                read_only,
            }))
        }
        "tmpfs" => {
            only(v.bind.is_some(), "bind", "bind")?;
            only(v.volume.is_some(), "volume", "volume")?;
            if v.source.is_some() {
                return Err(bad("source", "a tmpfs has no source"));
            }
            let mut m = TmpfsMount::at(target);
            m.read_only = read_only;
            if let Some(options) = &v.tmpfs {
                if let Some(size) = &options.size {
                    m.size_bytes = Some(tmpfs::size_value(size).map_err(|e| bad("tmpfs.size", e))?);
                }
                if let Some(mode) = &options.mode {
                    m.mode = Some(mode_bits(mode).map_err(|e| bad("tmpfs.mode", e))?);
                }
            }
            Ok(Mounted::Tmpfs(m))
        }
        "npipe" => Err(refuse("type", "Windows named pipes (type: npipe)")),
        "cluster" => Err(refuse(
            "type",
            "cluster volumes (type: cluster, a swarm feature)",
        )),
        "image" => Err(refuse("type", "mounting an image's files (type: image)")),
        other => Err(bad(
            "type",
            format!("{other:?} is not volume, bind or tmpfs"),
        )),
    }
}

/// What the agent does for every bind: private (Docker's default `rprivate`), recursive,
/// on a host path that exists.
fn bind_options(bind: &super::model::BindOptions) -> Result<(), EntryError> {
    if let Some(p) = bind.propagation.as_deref() {
        if p != "private" && p != "rprivate" {
            return Err(refuse(
                "bind.propagation",
                "mount propagation other than rprivate (a container's mounts never propagate to or from the host)",
            ));
        }
    }
    if bind.recursive.as_deref().is_some_and(|r| r != "enabled") {
        return Err(refuse(
            "bind.recursive",
            "non-recursive or read-only-recursive binds (the agent always binds recursively)",
        ));
    }
    if bind.create_host_path == Some(true) {
        return Err(refuse(
            "bind.create_host_path",
            "creating a missing host path (the agent binds only paths that exist on the device)",
        ));
    }
    Ok(())
}

/// Permission bits as Docker reads the YAML value: a number as it is (`0o1777` is octal to
/// YAML, `1777` decimal), a string with a leading `0` or `0o` as octal (`01777`, which YAML
/// 1.2 leaves a string and Docker's YAML 1.1 reader takes as octal).
fn mode_bits(value: &Scalar) -> Result<u32, String> {
    let octal = |digits: &str| u32::from_str_radix(digits, 8).ok();
    let bits = match value {
        Scalar::String(s) if s.starts_with("0o") => octal(&s[2..]),
        Scalar::String(s) if s.starts_with('0') && s.len() > 1 => octal(&s[1..]),
        other => scalar_u64(other).and_then(|n| u32::try_from(n).ok()),
    };
    bits.ok_or_else(|| format!("{value} is not a mode (write it octal: 0o1777)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(yaml: &str) -> Result<Mounted, EntryError> {
        mount(&serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn each_type_mounts_what_its_short_form_would() {
        assert_eq!(
            long("{type: volume, source: data, target: /data, read_only: true, volume: {nocopy: true}}"),
            Ok(Mounted::Volume(VolumeMount {
                source: VolumeSource::Named("data".into()),
                target: "/data".into(),
                read_only: true,
            }))
        );
        assert_eq!(
            long("{type: bind, source: /srv, target: /srv, bind: {create_host_path: false, propagation: rprivate, recursive: enabled}}"),
            Ok(Mounted::Volume(VolumeMount {
                source: VolumeSource::HostPath("/srv".into()),
                target: "/srv".into(),
                read_only: false,
            }))
        );
        assert_eq!(
            long("{type: tmpfs, target: /run}"),
            Ok(Mounted::Tmpfs(TmpfsMount::at("/run")))
        );
        assert_eq!(
            long(
                "{type: tmpfs, target: /run, read_only: 'true', tmpfs: {size: 64m, mode: 0o1770}}"
            ),
            Ok(Mounted::Tmpfs(TmpfsMount {
                size_bytes: Some(64 << 20),
                mode: Some(0o1770),
                read_only: true,
                ..TmpfsMount::at("/run")
            }))
        );
    }

    #[test]
    fn tmpfs_modes_are_read_as_docker_reads_them() {
        for (mode, bits) in [
            ("0o1777", 0o1777),
            ("'01777'", 0o1777),
            ("01777", 0o1777),
            ("'0o755'", 0o755),
            ("493", 493),
        ] {
            let got = long(&format!(
                "{{type: tmpfs, target: /t, tmpfs: {{mode: {mode}}}}}"
            ));
            let Ok(Mounted::Tmpfs(m)) = got else {
                panic!("{mode}: {got:?}")
            };
            assert_eq!(m.mode, Some(bits), "{mode}");
        }
        let err = long("{type: tmpfs, target: /t, tmpfs: {mode: rwx}}").unwrap_err();
        assert_eq!(err.key, "tmpfs.mode");
    }

    #[test]
    fn what_the_agent_cannot_honour_is_refused_by_key() {
        for (yaml, key, words) in [
            (
                "{type: npipe, source: x, target: /x}",
                "type",
                "Windows named pipes",
            ),
            ("{type: cluster, source: x, target: /x}", "type", "swarm"),
            (
                "{type: image, source: x, target: /x}",
                "type",
                "image's files",
            ),
            ("{type: volume, target: /x}", "source", "anonymous volumes"),
            (
                "{type: volume, source: d, target: /x, volume: {nocopy: false}}",
                "volume.nocopy",
                "copying the image's files",
            ),
            (
                "{type: bind, source: /x, target: /x, bind: {propagation: rshared}}",
                "bind.propagation",
                "propagation other than rprivate",
            ),
            (
                "{type: bind, source: /x, target: /x, bind: {recursive: readonly}}",
                "bind.recursive",
                "always binds recursively",
            ),
            (
                "{type: bind, source: /x, target: /x, bind: {create_host_path: true}}",
                "bind.create_host_path",
                "creating a missing host path",
            ),
        ] {
            let err = long(yaml).unwrap_err();
            assert!(err.refused, "{yaml}");
            assert_eq!(err.key, key, "{yaml}");
            assert!(err.to_string().contains(PREFIX), "{yaml}: {err}");
            assert!(err.reason.contains(words), "{yaml}: {err}");
        }
    }

    #[test]
    fn bad_values_are_named_by_key() {
        for (yaml, key, words) in [
            ("{type: volume, source: d}", "target", "is required"),
            (
                "{type: volume, source: d, target: x}",
                "target",
                "absolute path",
            ),
            ("{type: bind, target: /x}", "source", "is required"),
            (
                "{type: bind, source: ./x, target: /x}",
                "source",
                "relative host paths",
            ),
            (
                "{type: tmpfs, source: x, target: /x}",
                "source",
                "no source",
            ),
            (
                "{type: tmpfs, target: /x, tmpfs: {size: lots}}",
                "tmpfs.size",
                "lots",
            ),
            (
                "{type: volume, source: d, target: /x, bind: {}}",
                "bind",
                "type: bind",
            ),
            (
                "{type: bind, source: /d, target: /x, tmpfs: {}}",
                "tmpfs",
                "type: tmpfs",
            ),
            (
                "{type: tmpfs, target: /x, volume: {}}",
                "volume",
                "type: volume",
            ),
            (
                "{type: disk, source: d, target: /x}",
                "type",
                "not volume, bind or tmpfs",
            ),
        ] {
            let err = long(yaml).unwrap_err();
            assert!(!err.refused, "{yaml}");
            assert_eq!(err.key, key, "{yaml}");
            assert!(err.reason.contains(words), "{yaml}: {err}");
        }
    }
}
