//! The bundle's hooks (runtime-spec "POSIX-platform Hooks"), read from `config.json`, and
//! the two failure rules: a failing prestart, createRuntime, createContainer or
//! startContainer hook fails the operation (the container is stopped and removed); a
//! failing poststart or poststop hook is only a warning. Every hook gets the state JSON on
//! stdin. prestart, createRuntime and createContainer hooks run while the init waits
//! just before its pivot_root (`shim::OciInit::before_pivot`): the first two in the
//! runtime's namespaces, createContainer in the container's mount, uts, ipc and network
//! namespaces (its mounts made, its root not yet switched, so paths resolve as in the
//! runtime namespace, as the spec says). startContainer hooks run in the container's init
//! after `start` (`runtime::init`); poststart and poststop here.

use crate::runtime::hook::{self, HookError};
use crate::runtime::spec::Hook;

/// The bundle's hooks by lifecycle point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    pub create_container: Vec<Hook>,
    pub start_container: Vec<Hook>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

impl Hooks {
    pub fn from_spec(hooks: Option<&oci_spec::runtime::Hooks>) -> Self {
        let Some(hooks) = hooks else {
            return Self::default();
        };
        let list = |hooks: &Option<Vec<oci_spec::runtime::Hook>>| -> Vec<Hook> {
            hooks.iter().flatten().map(hook_of).collect()
        };
        #[allow(deprecated)] // prestart is deprecated in the spec, still used and tested.
        let prestart = list(hooks.prestart());
        Self {
            prestart,
            create_runtime: list(hooks.create_runtime()),
            create_container: list(hooks.create_container()),
            start_container: list(hooks.start_container()),
            poststart: list(hooks.poststart()),
            poststop: list(hooks.poststop()),
        }
    }

    /// The hooks `create` runs in the runtime's namespaces, in the spec's order.
    pub fn at_create(&self) -> impl Iterator<Item = &Hook> {
        self.prestart.iter().chain(&self.create_runtime)
    }
}

fn hook_of(h: &oci_spec::runtime::Hook) -> Hook {
    Hook {
        path: h.path().clone(),
        args: h.args().clone().unwrap_or_default(),
        env: h.env().clone().unwrap_or_default(),
        timeout_secs: h.timeout().and_then(|t| u32::try_from(t).ok()),
    }
}

/// Runs `hooks` in order; the first failure stops the rest and is returned.
pub fn run_all<'a>(
    hooks: impl IntoIterator<Item = &'a Hook>,
    state: &[u8],
) -> Result<(), HookError> {
    hooks.into_iter().try_for_each(|h| hook::run(h, state))
}

/// Runs the createContainer hooks in the namespaces of the container's init `pid`.
pub fn run_in_container(pid: i32, hooks: &[Hook], state: &[u8]) -> Result<(), HookError> {
    hooks
        .iter()
        .try_for_each(|h| hook::run_in_namespaces_of(pid, h, state))
}

/// Runs every hook of a point where failures only warn (poststart, poststop).
pub fn run_warning(point: &str, hooks: &[Hook], state: &[u8]) {
    for h in hooks {
        if let Err(err) = hook::run(h, state) {
            tracing::warn!(
                point,
                error = %crate::runtime::error_chain(&err),
                "hook failed; the lifecycle goes on"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_are_read_by_point_with_argv_env_and_timeout() {
        let spec: oci_spec::runtime::Hooks = serde_json::from_str(
            r#"{"prestart": [{"path": "/bin/a"}],
                "createRuntime": [{"path": "/bin/b", "args": ["b", "-x"], "env": ["K=V"], "timeout": 3}],
                "poststop": [{"path": "/bin/c"}]}"#,
        )
        .unwrap();
        let hooks = Hooks::from_spec(Some(&spec));
        let at_create: Vec<_> = hooks.at_create().map(|h| h.path.clone()).collect();
        assert_eq!(at_create, [Path::new("/bin/a"), Path::new("/bin/b")]);
        assert!(hooks.create_container.is_empty());
        let b = &hooks.create_runtime[0];
        assert_eq!(
            (b.args.len(), b.env[0].as_str(), b.timeout_secs),
            (2, "K=V", Some(3))
        );
        assert_eq!(hooks.poststop.len(), 1);
        assert!(hooks.start_container.is_empty());
    }

    use std::path::Path;
}
