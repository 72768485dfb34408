//! Top-level `volumes:`: the named volumes an app declares. A device has one kind, a
//! directory of its own per name (`local`), so other drivers, driver options, `external` and
//! custom `name`s are refused by name.

use super::lines::line_of_path;
use super::model::{ComposeFile, Scalar};
use super::refused::PREFIX;
use super::ComposeError;

/// Checks every declared volume.
pub fn check(text: &str, file: &ComposeFile) -> Result<(), ComposeError> {
    for (name, volume) in &file.volumes {
        let Some(volume) = volume else { continue };
        let refuse = |key: &str, why: &str| ComposeError::Refused {
            line: line_of_path(text, &["volumes", name, key]),
            key: format!("volumes.{name}.{key}"),
            reason: format!("{PREFIX}: {why}"),
        };
        if volume.driver.as_deref().is_some_and(|d| d != "local") {
            return Err(refuse("driver", "volume drivers other than local"));
        }
        if volume.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(refuse("driver_opts", "volume driver options"));
        }
        let external = match &volume.external {
            None => false,
            Some(Scalar::Bool(b)) => *b,
            Some(Scalar::String(s)) => s != "false",
            Some(_) => true,
        };
        if external {
            return Err(refuse(
                "external",
                "external volumes (a device creates the volumes an app names)",
            ));
        }
        if volume.name.is_some() {
            return Err(refuse("name", "custom volume names (the key is the name)"));
        }
    }
    Ok(())
}
