//! `error_chain`: an error and its causes on one line, `: `-separated. The one formatter
//! the agent and the controller use for logs, reports and answers (`{err}` alone drops the
//! causes; a thiserror type keeps them as `source()`s).

use alloc::string::{String, ToString};

/// `err`, then each of its sources, `: `-separated.
pub fn error_chain(err: &dyn core::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<&'static Layer>);

    impl core::fmt::Display for Layer {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl core::error::Error for Layer {
        fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
            self.1.map(|l| l as &(dyn core::error::Error + 'static))
        }
    }

    #[test]
    fn every_cause_is_kept_in_order() {
        static DISK: Layer = Layer("no space left on device", None);
        static WRITE: Layer = Layer("write blobs/x", Some(&DISK));
        let top = Layer("cannot store the layer", Some(&WRITE));
        assert_eq!(
            error_chain(&top),
            "cannot store the layer: write blobs/x: no space left on device"
        );
        assert_eq!(error_chain(&DISK), "no space left on device");
    }
}
