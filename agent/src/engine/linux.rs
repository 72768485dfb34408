//! `LinuxEngine`: the supervisor's `ContainerEngine` on a real device — images pulled into
//! the content-addressed store (delta first), containers run by the `LinuxRuntime` on an
//! overlay of the image's layers. A service has two container slots, `<service>` and
//! `<service>+2` (`start-first` runs an old and a new container side by side, and a
//! running container cannot be renamed); its upper/work dirs and a small `meta.json`
//! (service, role, spec fingerprint, image) live in `<data>/containers/<id>/`, so a
//! restarted agent can adopt what it finds. Which slot is the serving one is the role in
//! `meta.json`, never the id.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use coracle_images::oci::{ImageConfig, RunConfig};
use coracle_images::store::{write_atomic, Store, StoreConfig};
use coracle_proto::{
    Condition, DeviceId, Digest, ImageRef, RegistryAccess, ServiceName, ServiceSpec,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::api::{
    ContainerEngine, ContainerStats, EngineContainer, EngineError, EngineStatus, InteractiveExec,
    LogTail, PullTick, StopRule,
};
use super::container_spec::{container_spec, volume_dir, ContainerLayout};
use crate::network::manager::Held;
use crate::network::{Endpoint, NetworkConfig, NetworkManager};
use crate::platform::this_device;
use crate::private_dir::create_traverse_only_dir;
use crate::pull::{direct_client, Puller, RegistryClient, RegistryEndpoint};
use crate::reconcile::{Fingerprint, Role};
use crate::runtime::cgroups::Condition as CgroupCondition;
use crate::runtime::error_chain as chain;
use crate::runtime::exec::Interactive;
use crate::runtime::log_time;
use crate::runtime::{
    ContainerId, ExecOutcome, ExecSpec, LinuxRuntime, Runtime, RuntimeConfig, RuntimeError, Status,
};
use crate::sealing_key::SealingKey;

/// Everything the engine needs, all paths and addresses from the agent's config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// The controller's registry (images whose reference names no registry).
    pub registry: RegistryEndpoint,
    pub runtime: RuntimeConfig,
    pub store: StoreConfig,
    pub delta_budget: u64,
    pub log_max_bytes: u64,
    pub log_keep: u32,
    pub network: NetworkConfig,
}

/// What is kept beside each container.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerMeta {
    /// Absent in containers of agents before `start-first`: their id is the service name.
    #[serde(default)]
    service: Option<ServiceName>,
    #[serde(default)]
    role: Role,
    fingerprint: String,
    image: Digest,
    /// Its place on the app networks, when bridged.
    #[serde(default)]
    network: Option<Endpoint>,
}

/// The Linux engine.
#[derive(Debug)]
pub struct LinuxEngine {
    config: EngineConfig,
    store: Store,
    registry: RegistryClient,
    /// Opens the pull credentials of direct registries; made on first start.
    sealing_key: SealingKey,
    runtime: LinuxRuntime,
    network: NetworkManager,
}

fn fail(step: &'static str, object: impl ToString, reason: impl std::fmt::Display) -> EngineError {
    EngineError {
        step,
        object: object.to_string(),
        reason: format!("{reason:#}"),
    }
}

fn read_meta(data_dir: &std::path::Path, id: &str) -> Option<ContainerMeta> {
    let path = data_dir.join("containers").join(id).join("meta.json");
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

impl ContainerMeta {
    fn service_of(&self, id: &ContainerId) -> Option<ServiceName> {
        self.service.clone().or_else(|| id.as_str().parse().ok())
    }
}

/// The endpoints of bridged containers the runtime still has (an agent restart). The
/// current container of a service answers for it; a lone successor (an agent crash
/// mid-promotion) does too; a retired one never does.
fn bridged_endpoints(runtime: &LinuxRuntime, data_dir: &std::path::Path) -> BTreeMap<String, Held> {
    let Ok(ids) = runtime.list() else {
        return BTreeMap::new();
    };
    let found: Vec<(String, Role, ServiceName, Endpoint)> = ids
        .iter()
        .filter_map(|id| {
            let meta = read_meta(data_dir, id.as_str())?;
            let service = meta.service_of(id)?;
            Some((id.to_string(), meta.role, service, meta.network?))
        })
        .collect();
    let answered: BTreeSet<&ServiceName> = found
        .iter()
        .filter(|(_, role, _, _)| *role == Role::Current)
        .map(|(_, _, service, _)| service)
        .collect();
    let answers = |role: Role, service: &ServiceName| match role {
        Role::Current => true,
        Role::Next => !answered.contains(service),
        Role::Retired => false,
    };
    found
        .iter()
        .map(|(id, role, service, endpoint)| {
            let held = Held {
                service: service.clone(),
                active: answers(*role, service),
                endpoint: endpoint.clone(),
            };
            (id.clone(), held)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The two container slots of a service.
fn slots(service: &ServiceName) -> Result<[ContainerId; 2], EngineError> {
    let parse = |text: String| {
        text.parse()
            .map_err(|e: crate::runtime::id::InvalidContainerId| fail("name container", service, e))
    };
    Ok([parse(service.to_string())?, parse(format!("{service}+2"))?])
}

impl LinuxEngine {
    /// Opens (and repairs) the image store and prepares the data dirs.
    pub fn open(config: EngineConfig) -> Result<Self, EngineError> {
        create_traverse_only_dir(&config.data_dir)
            .map_err(|e| fail("create data dir", config.data_dir.display(), e))?;
        let store = Store::open(&config.data_dir.join("store"), config.store.clone())
            .map_err(|e| fail("open image store", config.data_dir.display(), chain(&e)))?;
        let registry = RegistryClient::new(config.registry.clone()).map_err(|e| {
            fail(
                "set up registry client",
                &config.registry.base_url,
                chain(&e),
            )
        })?;
        for dir in ["containers", "volumes"] {
            let path = config.data_dir.join(dir);
            create_traverse_only_dir(&path).map_err(|e| fail("create dir", path.display(), e))?;
        }
        // The daemon's state dir (`AgentConfig::state_dir`): 0700, root's alone.
        let state_dir = config.data_dir.join("state");
        let sealing_key = SealingKey::load_or_create(&state_dir)
            .map_err(|e| fail("load sealing key", state_dir.display(), chain(&e)))?;
        crate::runtime::cgroups::log_layout(&config.runtime.cgroup);
        let runtime = LinuxRuntime::new(config.runtime.clone());
        let restored = bridged_endpoints(&runtime, &config.data_dir);
        let network = NetworkManager::open(config.network.clone(), restored)
            .map_err(|e| fail("restore container networks", "network", chain(&e)))?;
        Ok(Self {
            config,
            store,
            registry,
            sealing_key,
            runtime,
            network,
        })
    }

    fn container_dir(&self, id: &ContainerId) -> PathBuf {
        self.config.data_dir.join("containers").join(id.as_str())
    }

    fn meta(&self, id: &ContainerId) -> Option<ContainerMeta> {
        read_meta(&self.config.data_dir, id.as_str())
    }

    /// The slot holding the service's container in `role`, if one does.
    fn locate(
        &self,
        service: &ServiceName,
        role: Role,
    ) -> Result<Option<ContainerId>, EngineError> {
        Ok(slots(service)?
            .into_iter()
            .find(|id| self.meta(id).is_some_and(|m| m.role == role)))
    }

    /// The slot for a new container in `role`: the one a half-made container of that role
    /// left (an agent crash between its steps), else a free one.
    fn slot_for(&self, service: &ServiceName, role: Role) -> Result<ContainerId, EngineError> {
        if let Some(id) = self.locate(service, role)? {
            return Ok(id);
        }
        let known = self.runtime.list().unwrap_or_default();
        slots(service)?
            .into_iter()
            .find(|id| self.meta(id).is_none() && !known.contains(id))
            .ok_or_else(|| {
                fail(
                    "find a container slot for",
                    service,
                    "both slots hold a container (an old one and a successor)",
                )
            })
    }

    fn located(&self, service: &ServiceName, role: Role) -> Result<ContainerId, EngineError> {
        self.locate(service, role)?.ok_or_else(|| {
            let which = match role {
                Role::Current => "container",
                Role::Next => "successor container",
                Role::Retired => "retired container",
            };
            fail(
                "find container",
                service,
                format!("its {which} is not found"),
            )
        })
    }

    /// Deletes container `id` with its network and dirs; a missing one is fine.
    fn delete_slot(&self, service: &ServiceName, id: &ContainerId) -> Result<(), EngineError> {
        match self.runtime.delete(id) {
            Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
            Err(e) => return Err(fail("delete container", service, chain(&e))),
        }
        self.network
            .detach(id.as_str())
            .map_err(|e| fail("take down the network of", service, chain(&e)))?;
        let dir = self.container_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(fail("remove container dir", dir.display(), e)),
        }
    }

    fn set_role(
        &self,
        service: &ServiceName,
        id: &ContainerId,
        role: Role,
    ) -> Result<(), EngineError> {
        let mut meta = self
            .meta(id)
            .ok_or_else(|| fail("promote", service, format!("{id}: meta.json is gone")))?;
        meta.role = role;
        let path = self.container_dir(id).join("meta.json");
        let json = serde_json::to_vec(&meta).map_err(|e| fail("encode meta", service, e))?;
        write_atomic(&path, &json).map_err(|e| fail("write", path.display(), e))
    }

    fn stop_slot(
        &self,
        service: &ServiceName,
        id: &ContainerId,
        rule: StopRule,
    ) -> Result<(), EngineError> {
        let signal = nix::sys::signal::Signal::try_from(i32::from(rule.signal)).map_err(|e| {
            fail(
                "stop container",
                service,
                format!("signal {}: {e}", rule.signal),
            )
        })?;
        match self.runtime.stop_with(id, signal, rule.grace) {
            Ok(_) | Err(RuntimeError::NotFound { .. }) => Ok(()),
            Err(e) => Err(fail("stop container", service, chain(&e))),
        }
    }

    fn run_config(&self, image: &Digest) -> Result<(Vec<PathBuf>, RunConfig), EngineError> {
        let record = self
            .store
            .images()
            .map_err(|e| fail("read image records", image, chain(&e)))?
            .into_iter()
            .find(|r| &r.manifest_digest == image)
            .ok_or_else(|| fail("find image", image, "not in the store; pull it first"))?;
        // The config blob was verified when it was stored under its digest.
        let path = self.store.blob_path(&record.config_digest);
        let bytes = fs::read(&path).map_err(|e| fail("read image config", path.display(), e))?;
        let config = ImageConfig::parse(&bytes)
            .map_err(|e| fail("parse image config", path.display(), chain(&e)))?;
        let layers = record
            .layers
            .iter()
            .map(|l| self.store.layer_path(l))
            .collect();
        Ok((layers, config.config))
    }

    /// The client for a direct registry, or `None` for the controller's registry. An image
    /// naming a registry its desired state gives no access to is pulled anonymously over
    /// HTTPS with public roots, as before direct registries existed.
    fn client_for(
        &self,
        image: &ImageRef,
        direct: Option<(&DeviceId, &RegistryAccess)>,
    ) -> Result<Option<RegistryClient>, EngineError> {
        if image.registry.is_empty() {
            return Ok(None);
        }
        let Some((device, access)) = direct.filter(|(_, a)| a.host == image.registry) else {
            return RegistryClient::new(RegistryEndpoint {
                base_url: format!("https://{}", image.registry),
                ca_pem: None,
                token: Default::default(),
            })
            .map(Some)
            .map_err(|e| fail("set up registry client", &image.registry, chain(&e)));
        };
        direct_client(access, &self.sealing_key, device)
            .map(Some)
            .map_err(|e| fail("set up direct registry client", &image.registry, chain(&e)))
    }
}

fn engine_status(status: Status, exit_code: Option<i32>, oom_killed: bool) -> EngineStatus {
    match status {
        Status::Created => EngineStatus::Created,
        Status::Running => EngineStatus::Running,
        _ => EngineStatus::Stopped {
            exit_code,
            oom_killed,
        },
    }
}

fn proto_condition(c: &CgroupCondition) -> Condition {
    match c {
        CgroupCondition::MissingController { controller } => Condition::CgroupControllerMissing {
            controller: controller.clone(),
        },
        CgroupCondition::MissingFile { controller, file } => Condition::CgroupControllerMissing {
            controller: format!("{controller} ({file})"),
        },
    }
}

impl ContainerEngine for LinuxEngine {
    fn pull(
        &self,
        image: &ImageRef,
        direct: Option<(&DeviceId, &RegistryAccess)>,
        progress: &mut dyn FnMut(PullTick),
    ) -> Result<(), EngineError> {
        let own = self.client_for(image, direct)?;
        let puller = Puller {
            client: own.as_ref().unwrap_or(&self.registry),
            store: &self.store,
            platform: this_device(),
            delta_budget: self.config.delta_budget,
        };
        puller
            .pull(&image.repository, &image.digest, progress)
            .map(|_| ())
            .map_err(|e| fail("pull image", image, chain(&e)))
    }

    fn sealing_key(&self) -> String {
        self.sealing_key.public_hex()
    }

    fn pull_token(&self) -> Option<crate::pull::PullToken> {
        Some(self.config.registry.token.clone())
    }

    fn preflight(&self, desired: &coracle_proto::DesiredState) -> Result<(), EngineError> {
        self.network.preflight(desired).map_err(|e| {
            fail(
                "prepare the app networks of generation",
                desired.generation,
                chain(&e),
            )
        })
    }

    fn probe_address(&self, service: &ServiceName, role: Role) -> std::net::Ipv4Addr {
        self.locate(service, role)
            .ok()
            .flatten()
            .and_then(|id| self.network.address(id.as_str()))
            .map_or(std::net::Ipv4Addr::LOCALHOST, std::net::Ipv4Addr::from)
    }

    fn image_file(&self, image: &ImageRef, name: &str) -> Result<std::path::PathBuf, EngineError> {
        let records = self
            .store
            .images()
            .map_err(|e| fail("list images", "store", chain(&e)))?;
        let layer = records
            .into_iter()
            .find(|r| r.manifest_digest == image.digest)
            .and_then(|r| r.layers.last().copied())
            .ok_or_else(|| {
                fail(
                    "find a file in an image",
                    image,
                    "the image is not in the store",
                )
            })?;
        let path = self.store.layer_path(&layer).join(name);
        match path.is_file() {
            true => Ok(path),
            false => Err(fail(
                "find a file in an image",
                image,
                format!("its last layer holds no file {name}"),
            )),
        }
    }

    fn images(&self) -> Result<BTreeSet<Digest>, EngineError> {
        let records = self
            .store
            .images()
            .map_err(|e| fail("list images", "store", chain(&e)))?;
        Ok(records.into_iter().map(|r| r.manifest_digest).collect())
    }

    fn remove_images(&self, images: &[Digest]) -> Result<(), EngineError> {
        for image in images {
            self.store
                .remove_image(image)
                .map_err(|e| fail("remove image", image, chain(&e)))?;
        }
        // Layers no remaining image uses go now: flash space is scarce.
        self.store
            .gc(0)
            .map_err(|e| fail("collect unused layers", "store", chain(&e)))?;
        Ok(())
    }

    fn layers(&self) -> Result<Vec<Digest>, EngineError> {
        self.store
            .layers()
            .map_err(|e| fail("list layers", "store", chain(&e)))
    }

    fn create(
        &self,
        spec: &ServiceSpec,
        fingerprint: Fingerprint,
        role: Role,
    ) -> Result<(), EngineError> {
        let id = self.slot_for(&spec.name, role)?;
        let (layers, run_config) = self.run_config(&spec.image.digest)?;
        let dir = self.container_dir(&id);
        // A new container starts from a clean upper dir, as `docker run` does.
        let _ = fs::remove_dir_all(&dir);
        let layout = ContainerLayout {
            layers,
            upper: dir.join("upper"),
            work: dir.join("work"),
            volumes: self.config.data_dir.join("volumes"),
            log_max_bytes: self.config.log_max_bytes,
            log_keep: self.config.log_keep,
            network: None,
        };
        for path in [&layout.upper, &layout.work] {
            fs::create_dir_all(path).map_err(|e| fail("create dir", path.display(), e))?;
        }
        let mut layout = layout;
        layout.network = self
            .network
            .attach(spec, id.as_str(), &dir)
            .map_err(|e| fail("set up the network of", &spec.name, chain(&e)))?;
        for volume in &spec.volumes {
            if let coracle_proto::VolumeSource::Named(name) = &volume.source {
                let path = volume_dir(&layout.volumes, name)
                    .map_err(|e| fail("create volume", &spec.name, e))?;
                fs::create_dir_all(&path).map_err(|e| fail("create volume", path.display(), e))?;
            }
        }
        let meta = ContainerMeta {
            service: Some(spec.name.clone()),
            role,
            fingerprint: hex(&fingerprint.0),
            image: spec.image.digest,
            network: layout.network.as_ref().and_then(|a| a.endpoint.clone()),
        };
        let meta_path = dir.join("meta.json");
        let json = serde_json::to_vec(&meta).map_err(|e| fail("encode meta", &spec.name, e))?;
        write_atomic(&meta_path, &json).map_err(|e| fail("write", meta_path.display(), e))?;
        let created = container_spec(spec, &run_config, &layout)
            .map_err(|e| fail("build container spec", &spec.name, e))
            .and_then(|container| {
                self.runtime
                    .create(&id, &container)
                    .map_err(|e| fail("create container", &spec.name, chain(&e)))
            });
        if let Err(e) = created {
            // No container holds the namespace and addresses: give them back.
            if let Err(net) = self.network.detach(id.as_str()) {
                warn!(service = %spec.name, error = %chain(&net), "could not take down the network of a container that failed to create");
            }
            return Err(e);
        }
        info!(service = %spec.name, container = %id, image = %spec.image.digest, "container created");
        Ok(())
    }

    fn start(&self, service: &ServiceName, role: Role) -> Result<(), EngineError> {
        let id = self.located(service, role)?;
        // An exited container runs again from its own spec (restart policies, `restart`).
        let stopped = self
            .runtime
            .state(&id)
            .is_ok_and(|state| state.status == Status::Stopped);
        if stopped {
            self.runtime
                .recreate(&id)
                .map_err(|e| fail("recreate container", service, chain(&e)))?;
        }
        match self.runtime.start(&id) {
            Ok(()) | Err(RuntimeError::WrongStatus { .. }) => Ok(()),
            Err(e) => Err(fail("start container", service, chain(&e))),
        }
    }

    fn stop(&self, service: &ServiceName, role: Role, rule: StopRule) -> Result<(), EngineError> {
        match self.locate(service, role)? {
            Some(id) => self.stop_slot(service, &id, rule),
            None => Ok(()),
        }
    }

    fn delete(&self, service: &ServiceName, role: Role) -> Result<(), EngineError> {
        match self.locate(service, role)? {
            Some(id) => self.delete_slot(service, &id),
            None => Ok(()),
        }
    }

    fn promote(&self, service: &ServiceName) -> Result<(), EngineError> {
        let Some(next) = self.locate(service, Role::Next)? else {
            // Done before (an agent that crashed after the last step), or nothing to do.
            return match self.locate(service, Role::Current)? {
                Some(_) => Ok(()),
                None => Err(fail("promote", service, "no successor to promote")),
            };
        };
        // New connections go to the successor before anything else changes.
        self.network
            .activate(next.as_str())
            .map_err(|e| fail("switch the names and ports of", service, chain(&e)))?;
        // The old one first: a crash between the two writes leaves a lone successor,
        // which the next plan promotes again, never two current containers.
        if let Some(old) = self.locate(service, Role::Current)? {
            self.set_role(service, &old, Role::Retired)?;
        }
        self.set_role(service, &next, Role::Current)?;
        info!(%service, container = %next, "successor took over");
        Ok(())
    }

    fn list(&self) -> Result<Vec<EngineContainer>, EngineError> {
        let ids = self
            .runtime
            .list()
            .map_err(|e| fail("list containers", "runtime", chain(&e)))?;
        let mut out = Vec::new();
        for id in ids {
            let Some(meta) = self.meta(&id) else {
                warn!(container = %id, "container without meta.json: not ours to manage");
                continue;
            };
            let Some(service) = meta.service_of(&id) else {
                continue;
            };
            let Some(fingerprint) = parse_fingerprint(&meta.fingerprint) else {
                continue;
            };
            let state = match self.runtime.state(&id) {
                Ok(state) => state,
                Err(RuntimeError::NotFound { .. }) => continue,
                Err(e) => return Err(fail("read container state", &service, chain(&e))),
            };
            out.push(EngineContainer {
                service,
                role: meta.role,
                fingerprint,
                image: meta.image,
                status: engine_status(state.status, state.exit_code, state.oom_killed),
                conditions: state.conditions.iter().map(proto_condition).collect(),
            });
        }
        Ok(out)
    }

    fn stats(&self) -> Result<Vec<ContainerStats>, EngineError> {
        let ids = self
            .runtime
            .list()
            .map_err(|e| fail("list containers", "runtime", chain(&e)))?;
        let mut out = Vec::new();
        for id in ids {
            // Current containers only: one reading of each meta.json and state.
            let Some(meta) = self.meta(&id).filter(|m| m.role == Role::Current) else {
                continue;
            };
            let Some(service) = meta.service_of(&id) else {
                continue;
            };
            let Ok(state) = self.runtime.state(&id) else {
                continue;
            };
            if state.status != Status::Running {
                continue;
            }
            let cgroup = crate::runtime::cgroups::ContainerCgroup::from_paths(
                state.cgroup_version,
                &state.cgroup_paths,
            );
            let cpu_usage_usec = cgroup.cpu_usage_ns().map(|ns| ns / 1000).unwrap_or(0);
            let memory_bytes = state
                .cgroup_paths
                .iter()
                .flat_map(|p| [p.join("memory.current"), p.join("memory.usage_in_bytes")])
                .find_map(|f| fs::read_to_string(f).ok())
                .and_then(|t| crate::health::cgroup::memory_bytes(&t))
                .unwrap_or(0);
            let net = crate::health::net_counters::container_net_bytes(
                std::path::Path::new("/proc"),
                state.pid,
            );
            out.push(ContainerStats {
                service,
                cpu_usage_usec,
                memory_bytes,
                net_rx_bytes: net.rx,
                net_tx_bytes: net.tx,
            });
        }
        Ok(out)
    }

    fn exec(
        &self,
        service: &ServiceName,
        role: Role,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, EngineError> {
        let id = self.located(service, role)?;
        self.runtime
            .exec(&id, &ExecSpec::new(argv.to_vec(), timeout))
            .map_err(|e| fail("exec in", service, chain(&e)))
    }

    fn log_files(&self, service: &ServiceName) -> Result<Vec<PathBuf>, EngineError> {
        Ok(match self.locate(service, Role::Current)? {
            Some(id) => self.log_files_of(&id),
            None => Vec::new(),
        })
    }

    fn exec_interactive(
        &self,
        service: &ServiceName,
        argv: &[String],
        tty: Option<(u16, u16)>,
    ) -> Result<InteractiveExec, EngineError> {
        let id = self.located(service, Role::Current)?;
        let mut spec = ExecSpec::new(argv.to_vec(), INTERACTIVE_LIMIT);
        spec.interactive = Some(Interactive { tty });
        self.runtime
            .exec_interactive(&id, &spec)
            .map_err(|e| fail("exec in", service, chain(&e)))
    }

    fn logs_tail(
        &self,
        service: &ServiceName,
        lines: u32,
        max_bytes: u32,
    ) -> Result<LogTail, EngineError> {
        let Some(id) = self.locate(service, Role::Current)? else {
            return Ok(LogTail::default());
        };
        let path = self.runtime.log_path(&id);
        let mut file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LogTail::default()),
            Err(e) => return Err(fail("open log", path.display(), e)),
        };
        let len = file
            .metadata()
            .map_err(|e| fail("read log", path.display(), e))?
            .len();
        let start = len.saturating_sub(u64::from(max_bytes));
        file.seek(SeekFrom::Start(start))
            .map_err(|e| fail("read log", path.display(), e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| fail("read log", path.display(), e))?;
        let text = String::from_utf8_lossy(&bytes);
        // Stored lines carry their time (`log_time`); a tail shows the text only.
        let mut all: Vec<&str> = text.lines().map(|l| log_time::split(l).1).collect();
        if start > 0 && !all.is_empty() {
            all.remove(0); // the first line was cut by the byte bound
        }
        let keep = all.len().saturating_sub(lines as usize);
        Ok(LogTail {
            truncated: start > 0 || keep > 0,
            lines: all[keep..].iter().map(|l| l.to_string()).collect(),
        })
    }
}

impl LinuxEngine {
    /// The container's log files, oldest first: `container.log.N` … `.1`, then the current.
    fn log_files_of(&self, id: &ContainerId) -> Vec<PathBuf> {
        let current = self.runtime.log_path(id);
        let mut files: Vec<PathBuf> = (1..=MAX_ROTATED_LOGS)
            .map(|n| PathBuf::from(format!("{}.{n}", current.display())))
            .filter(|p| p.exists())
            .collect();
        files.reverse();
        if current.exists() {
            files.push(current);
        }
        files
    }
}

/// An interactive exec's own time limit: a week (the session's idle and liveness limits
/// end it far sooner when nobody is there).
const INTERACTIVE_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Rotated log files looked for (the configured `keep` is far below).
const MAX_ROTATED_LOGS: u32 = 32;

fn parse_fingerprint(text: &str) -> Option<Fingerprint> {
    let digest = Digest::from_hex(text).ok()?;
    Some(Fingerprint(*digest.as_bytes()))
}
