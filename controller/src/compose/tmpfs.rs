//! `tmpfs` (a path or a list of `PATH[:OPTIONS]`) and `shm_size` into tuning entries.
//! Docker's options: `size` (bytes or k/m/g), `mode` (octal), `uid`, `gid`, `nr_inodes`,
//! `exec`/`noexec`, `ro`/`rw`, `nosuid`, `nodev`; the mount is always `nosuid,nodev`, and
//! `noexec` unless `exec`. `suid` and `dev` are refused: a device never gives a container a
//! tmpfs where set-user-ID programs or device nodes work. Targets and ranges are checked
//! by `ServiceSpec::validate`.

use coracle_proto::{TmpfsMount, Tuning};

use super::lenient::scalar_u64;
use super::model::{ComposeService, Scalar, StringOrList};
use super::units;
use super::FieldResult;

/// The service's `Tmpfs` and `ShmSize` entries; an error names the compose key.
pub(super) fn entries(s: &ComposeService) -> FieldResult<Vec<Tuning>> {
    let mut out = Vec::new();
    let list = match &s.tmpfs {
        None => Vec::new(),
        Some(StringOrList::String(one)) => vec![one.clone()],
        Some(StringOrList::List(list)) => list.clone(),
    };
    for text in list {
        out.push(Tuning::Tmpfs(mount(&text).map_err(|e| ("tmpfs", e))?));
    }
    if let Some(size) = &s.shm_size {
        out.push(Tuning::ShmSize(
            size_value(size).map_err(|e| ("shm_size", e))?,
        ));
    }
    Ok(out)
}

/// `64m`, `"1g"` or a plain number of bytes (also a long `volumes:` entry's `tmpfs.size`).
pub(super) fn size_value(value: &Scalar) -> Result<u64, String> {
    match scalar_u64(value) {
        Some(bytes) => Ok(bytes),
        None => units::bytes(&value.to_string()),
    }
}

/// One `PATH[:OPTIONS]`.
pub(super) fn mount(text: &str) -> Result<TmpfsMount, String> {
    let (target, options) = match text.split_once(':') {
        Some((target, options)) => (target, options),
        None => (text, ""),
    };
    let mut m = TmpfsMount::at(target);
    let number = |name: &str, value: &str| -> Result<u32, String> {
        value
            .parse()
            .map_err(|_| format!("{target}: {name}={value} is not a whole number"))
    };
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("size", value)) => {
                if value.ends_with('%') {
                    return Err(format!(
                        "{target}: size={value}: a share of memory is not supported, give bytes (64m)"
                    ));
                }
                m.size_bytes = Some(units::bytes(value).map_err(|e| format!("{target}: {e}"))?);
            }
            Some(("mode", value)) => {
                m.mode = Some(u32::from_str_radix(value, 8).map_err(|_| {
                    format!("{target}: mode={value} is not an octal mode (1777)")
                })?);
            }
            Some(("uid", value)) => m.uid = Some(number("uid", value)?),
            Some(("gid", value)) => m.gid = Some(number("gid", value)?),
            Some(("nr_inodes", value)) => {
                m.nr_inodes = Some(units::bytes(value).map_err(|e| format!("{target}: {e}"))?);
            }
            Some(_) => return Err(unknown(target, option)),
            None => match option {
                "exec" => m.exec = true,
                "noexec" => m.exec = false,
                "ro" => m.read_only = true,
                "rw" => m.read_only = false,
                "nosuid" | "nodev" => {}
                "suid" | "dev" => {
                    return Err(format!(
                        "{target}: {option} is {}: set-user-ID programs and device nodes on a tmpfs (it is always nosuid,nodev)",
                        super::refused::PREFIX
                    ))
                }
                other => return Err(unknown(target, other)),
            },
        }
    }
    Ok(m)
}

fn unknown(target: &str, option: &str) -> String {
    format!(
        "{target}: unknown option {option:?} (known: size, mode, uid, gid, nr_inodes, exec, noexec, ro, rw, nosuid, nodev)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> ComposeService {
        serde_yaml::from_str(&format!("image: x\n{yaml}")).unwrap()
    }

    fn plain(target: &str) -> TmpfsMount {
        mount(target).unwrap()
    }

    #[test]
    fn every_form_is_read() {
        let one = entries(&service("tmpfs: /run\n")).unwrap();
        assert_eq!(one, [Tuning::Tmpfs(plain("/run"))]);
        assert_eq!(plain("/run").size_bytes, None);
        assert!(!plain("/run").exec, "noexec by default");
        let read = entries(&service(
            "tmpfs:\n  - /run\n  - /cache:size=64m,mode=1770,uid=1000,gid=50,exec,nr_inodes=1k\n  - /ro:ro,noexec,nosuid,nodev,rw\nshm_size: 128m\n",
        ))
        .unwrap();
        assert_eq!(
            read,
            [
                Tuning::Tmpfs(plain("/run")),
                Tuning::Tmpfs(TmpfsMount {
                    size_bytes: Some(64 << 20),
                    mode: Some(0o1770),
                    uid: Some(1000),
                    gid: Some(50),
                    nr_inodes: Some(1024),
                    exec: true,
                    ..TmpfsMount::at("/cache")
                }),
                Tuning::Tmpfs(plain("/ro")),
                Tuning::ShmSize(128 << 20),
            ]
        );
        assert_eq!(
            entries(&service("shm_size: 1000000\n")).unwrap(),
            [Tuning::ShmSize(1_000_000)]
        );
        assert_eq!(
            entries(&service("shm_size: '2gb'\n")).unwrap(),
            [Tuning::ShmSize(2 << 30)]
        );
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        for (yaml, field, words) in [
            ("tmpfs: /x:size=lots", "tmpfs", "size \"lots\""),
            ("tmpfs: /x:size=50%", "tmpfs", "share of memory"),
            ("tmpfs: /x:mode=999", "tmpfs", "mode=999 is not an octal"),
            ("tmpfs: /x:uid=me", "tmpfs", "uid=me is not a whole number"),
            (
                "tmpfs: /x:suid",
                "tmpfs",
                "suid is not supported on devices yet",
            ),
            ("tmpfs: /x:dev", "tmpfs", "device nodes"),
            (
                "tmpfs: /x:huge=always",
                "tmpfs",
                "unknown option \"huge=always\"",
            ),
            ("tmpfs: /x:noatime", "tmpfs", "unknown option \"noatime\""),
            ("shm_size: big", "shm_size", "size \"big\""),
        ] {
            let err = entries(&service(&format!("{yaml}\n"))).unwrap_err();
            assert_eq!(err.0, field, "{yaml}");
            assert!(err.1.contains(words), "{yaml}: {} lacks {words}", err.1);
        }
    }
}
