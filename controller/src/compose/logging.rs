//! `logging:` onto the agent's own per-container log files. `json-file` and `local` (or no
//! driver) keep the output on the device, readable with `coracle logs`; their `max-size`
//! and `max-file` options set that service's rotation. Other drivers ship logs elsewhere and
//! are refused; `none` too: the agent always keeps a container's output (cap it instead).
//! Options with no meaning for the agent's files are refused by name (`refused::SERVICE`).

use coracle_proto::{LogRotation, Tuning};

use super::lenient::scalar_u64;
use super::model::{ComposeService, Scalar};
use super::refused::PREFIX;
use super::units;
use super::FieldResult;

/// The service's `Logging` entry, if it sets a rotation.
pub(super) fn entries(s: &ComposeService) -> FieldResult<Vec<Tuning>> {
    let Some(logging) = &s.logging else {
        return Ok(Vec::new());
    };
    let err = |reason: String| ("logging", reason);
    match logging.driver.as_deref() {
        None | Some("json-file") | Some("local") => {}
        Some("none") => {
            return Err(err(format!(
                "driver none is {PREFIX}: discarding output (the agent keeps each container's output for coracle logs; cap it with options max-size and max-file)"
            )))
        }
        Some(other) => {
            return Err(err(format!(
                "driver {other:?} is {PREFIX}: shipping logs off the device (use json-file or local; the agent keeps each container's output for coracle logs)"
            )))
        }
    }
    let mut rotation = LogRotation {
        max_bytes: None,
        max_files: None,
    };
    for (name, value) in logging.options.iter().flatten() {
        let value = value.as_ref().map(Scalar::to_string).unwrap_or_default();
        match name.as_str() {
            "max-size" => {
                rotation.max_bytes =
                    Some(units::bytes(&value).map_err(|e| err(format!("options max-size: {e}")))?)
            }
            "max-file" => {
                rotation.max_files = Some(
                    scalar_u64(&Scalar::String(value.clone()))
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            err(format!("options max-file: {value:?} is not a whole number"))
                        })?,
                )
            }
            other => {
                return Err(err(format!(
                    "unknown option {other:?} (known: max-size, max-file)"
                )))
            }
        }
    }
    if rotation.max_bytes.is_none() && rotation.max_files.is_none() {
        return Ok(Vec::new());
    }
    Ok(vec![Tuning::Logging(rotation)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> ComposeService {
        serde_yaml::from_str(&format!("image: x\n{yaml}")).unwrap()
    }

    fn rotation(max_bytes: Option<u64>, max_files: Option<u32>) -> Vec<Tuning> {
        vec![Tuning::Logging(LogRotation {
            max_bytes,
            max_files,
        })]
    }

    #[test]
    fn rotation_options_are_read_for_local_drivers() {
        let read = |yaml: &str| entries(&service(yaml)).unwrap();
        assert_eq!(
            read(
                "logging:\n  driver: json-file\n  options:\n    max-size: 10m\n    max-file: '3'\n"
            ),
            rotation(Some(10 << 20), Some(3))
        );
        assert_eq!(
            read("logging:\n  driver: local\n  options:\n    max-file: 5\n"),
            rotation(None, Some(5))
        );
        assert_eq!(
            read("logging:\n  options:\n    max-size: 2048\n"),
            rotation(Some(2048), None)
        );
        assert!(read("logging:\n  driver: json-file\n").is_empty());
    }

    #[test]
    fn other_drivers_and_options_are_refused_with_the_reason() {
        for (yaml, words) in [
            (
                "logging:\n  driver: syslog\n",
                "driver \"syslog\" is not supported on devices yet: shipping logs",
            ),
            (
                "logging:\n  driver: none\n",
                "driver none is not supported on devices yet: discarding output",
            ),
            (
                "logging:\n  options:\n    max-size: lots\n",
                "options max-size: size \"lots\"",
            ),
            (
                "logging:\n  options:\n    max-file: three\n",
                "max-file: \"three\" is not a whole number",
            ),
            (
                "logging:\n  options:\n    syslog-address: x\n",
                "unknown option \"syslog-address\"",
            ),
        ] {
            let err = entries(&service(yaml)).unwrap_err();
            assert_eq!(err.0, "logging", "{yaml}");
            assert!(err.1.contains(words), "{yaml}: {} lacks {words}", err.1);
        }
    }
}
