//! The controller's file-descriptor budget. Each device on the broker's TLS port costs three
//! descriptors (its socket, the relay's connection to the broker and the broker's end of
//! it), each HTTP connection one. At start the soft `RLIMIT_NOFILE` is raised to the hard
//! one (the soft default, often 1,024, is far below what the caps allow), and if the caps
//! still need more than that, it is said once: past the limit new connections are refused
//! until descriptors free up (`net::accept`), nothing else breaks.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::config::ServeConfig;

/// Descriptors the controller needs besides connections: database, listeners, runtime.
const BASE: u64 = 128;

/// Why the descriptor limit could not be read or raised.
#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    #[error("cannot read RLIMIT_NOFILE")]
    Read(#[source] nix::Error),
    #[error("cannot raise the soft RLIMIT_NOFILE from {soft} to {hard}")]
    Raise {
        soft: u64,
        hard: u64,
        #[source]
        source: nix::Error,
    },
}

/// Descriptors the configured connection caps can take at most.
pub fn needed(config: &ServeConfig) -> u64 {
    let broker = if config.broker.external_url.is_some() {
        0
    } else {
        3 * config.broker.max_connections as u64
    };
    BASE + broker + config.api.max_connections as u64 + config.registry.max_connections as u64
}

/// Raises the soft limit to the hard one; returns the limit now in force.
pub fn raise_soft_limit() -> Result<u64, FdLimitError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(FdLimitError::Read)?;
    if soft >= hard {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|source| FdLimitError::Raise {
        soft,
        hard,
        source,
    })?;
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_caps_need_three_descriptors_per_device() {
        let config = ServeConfig::default();
        assert_eq!(needed(&config), BASE + 3 * 4096 + 256 + 256);
        let mut external = config;
        external.broker.external_url = Some("mqtt://127.0.0.1:1883".into());
        assert_eq!(needed(&external), BASE + 256 + 256);
    }
}
