//! `serve`: starts the whole controller from a `ServeConfig`, as a straight list of steps,
//! and stops it gracefully on SIGINT/SIGTERM. Each listener prints the address it bound
//! (`broker listening on 127.0.0.1:PORT`), which tests and operators read.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::broker::nats_ingest::{NatsIngest, NatsUrl};
use crate::broker::{
    BrokerUrl, ControllerClient, Credentials, DeviceAccess, EmbeddedBroker, EmbeddedBrokerSettings,
    MosquittoAccounts, NatsAccounts,
};
use crate::config::ServeConfig;
use crate::datadir::{write_public, DataDir};
use crate::fleet::{EnrolmentInfo, Fleet};
use crate::fleet_events::FleetEvents;
use crate::ingest;
use crate::registry::{BlobStore, Registry};
use crate::secrets::Secrets;
use crate::store::Store;

/// Session output messages waiting for the session router (all devices together).
const SESSION_QUEUE: usize = 4096;
/// The shared-subscription group of the controllers of one fleet on an external broker.
const REPLICA_GROUP: &str = "coracle";

/// Why the controller could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    #[error(transparent)]
    Broker(#[from] crate::broker::embedded::EmbeddedBrokerError),
    #[error(transparent)]
    BrokerUrl(#[from] crate::broker::BrokerUrlError),
    #[error(transparent)]
    Client(#[from] crate::broker::client::ClientError),
    #[error(transparent)]
    Nats(#[from] crate::broker::nats_ingest::NatsError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("cannot load the deployment key chain")]
    DeploymentKeys(#[from] crate::deployment_keys::RotationError),
    #[error("the deploy policy in the config is not valid")]
    Policy(#[source] crate::config::ConfigError),
    #[error("cannot read the external broker's CA file {path}")]
    ReadDeviceCa {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the external broker's CA file {path} holds no PEM certificate")]
    NoDeviceCa { path: std::path::PathBuf },
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("the object store config [blobs.s3] is not valid")]
    ObjectStoreConfig(#[source] crate::config::ConfigError),
    #[error("cannot use the object store bucket at startup")]
    ObjectStore(#[source] crate::object_store::ObjectStoreError),
    #[error("cannot set up HTTPS for the API and registry")]
    Tls(#[from] crate::net::tls::TlsError),
    #[error("cannot listen for {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the {signal} handler")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Prints one listening line to stdout, flushed, for whoever started us.
fn announce(what: &str, addr: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{what} listening on {addr}");
    let _ = out.flush();
}

/// Binds a listener and returns it with its bound address (port 0 resolved).
async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), ServeError> {
    let err = |source| ServeError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    Ok((listener, bound))
}

/// Resolves when SIGINT or SIGTERM arrives.
fn shutdown_signal() -> Result<watch::Receiver<bool>, ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).map_err(|source| ServeError::Signal {
        signal: "SIGINT",
        source,
    })?;
    let mut term = signal(SignalKind::terminate()).map_err(|source| ServeError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The CA bundle bootstrap files carry: the controller CA first (the agent's registry
/// client trusts the first certificate), then the external broker's CA if it has its own.
fn device_ca_bundle(
    controller_ca: &str,
    broker_ca: Option<&std::path::Path>,
) -> Result<String, ServeError> {
    let Some(path) = broker_ca else {
        return Ok(controller_ca.to_string());
    };
    let extra = std::fs::read_to_string(path).map_err(|source| ServeError::ReadDeviceCa {
        path: path.to_path_buf(),
        source,
    })?;
    // A shape check only: the agent parses the bundle and names a bad certificate.
    let begin = extra.find("-----BEGIN CERTIFICATE-----");
    let end = extra.rfind("-----END CERTIFICATE-----");
    if !matches!((begin, end), (Some(b), Some(e)) if b < e) {
        return Err(ServeError::NoDeviceCa {
            path: path.to_path_buf(),
        });
    }
    Ok(format!("{}\n{}", controller_ca.trim_end(), extra.trim_end()) + "\n")
}

/// The TLS acceptor the HTTPS listeners share (`None` when both serve plain HTTP), built
/// from the certificate the broker presents too. A plain listener off loopback is allowed
/// only by `tls = false` (`ServeConfig::validate`) and said once here.
fn tls_acceptor(
    secrets: &Secrets,
    api: &crate::config::ListenSection,
    registry: &crate::config::ListenSection,
) -> Result<Option<tokio_rustls::TlsAcceptor>, ServeError> {
    for (what, section) in [("api", api), ("registry", registry)] {
        if section.plain_off_loopback() {
            tracing::warn!(
                listener = what,
                listen = %section.listen,
                "serving plain HTTP on a non-loopback address ({what}.tls = false): \
                 tokens and registry credentials cross the network in clear"
            );
        }
    }
    if !api.serves_tls() && !registry.serves_tls() {
        return Ok(None);
    }
    let acceptor = crate::net::tls::acceptor(
        &secrets.tls_cert,
        &secrets.tls_key,
        &[crate::net::tls::ALPN_HTTP1],
    )?;
    Ok(Some(acceptor))
}

/// Raises the descriptor limit and says once if the connection caps can still exceed it;
/// either way the controller runs (over the limit, new connections are refused).
fn check_fd_limit(config: &ServeConfig) {
    let needed = crate::fd_limit::needed(config);
    match crate::fd_limit::raise_soft_limit() {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            needed,
            "the file descriptor limit is below what the connection caps allow; \
             past it new connections are refused until descriptors free up"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, needed, "cannot raise the file descriptor limit"),
    }
}

/// Leaves the note `coracle backup` looks for while the store is on PostgreSQL.
fn note_store_kind(dir: &DataDir, store: &Store) -> Result<(), ServeError> {
    let note = dir.postgres_store_note();
    if store.is_postgres() {
        write_public(
            &note,
            b"The fleet database is on PostgreSQL ([store] url): back it up with pg_dump.\n",
        )?;
    } else if note.exists() {
        std::fs::remove_file(&note).map_err(|source| crate::datadir::DataDirError::WriteFile {
            path: note.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Runs the controller until a shutdown signal: state, broker, MQTT client, registry and
/// fleet, background tasks, then the two listeners; stops in reverse order.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let stop = shutdown_signal()?;
    check_fd_limit(&config);
    // Compiled once (`ServeConfig::validate` checked it when the file was read).
    let policy = crate::policy::Policy::new(&config.policy).map_err(ServeError::Policy)?;

    // 1. State: data dir, database, secrets.
    let (dir, store, secrets) = open_state(&config)?;
    let host = config.device_facing_host();

    // 2. Broker: embedded unless an external one is configured.
    let credentials = device_credentials(&secrets, &store)?;
    let broker = start_broker(&config, &secrets, credentials.clone(), &host).await?;

    // 3. The controller's own MQTT client, trusting what its devices trust.
    let ca_bundle = device_ca_bundle(&secrets.ca_pem, config.broker.device_ca_file.as_deref())?;
    let lease =
        crate::rollout::LeaseHolder::unique(Duration::from_secs(config.fleet.rollout_lease_s));
    let link = connect_devices(&config, &broker, &secrets, &ca_bundle, &lease).await?;
    let client = link.client.clone();

    // 4. Listeners for the API and the registry (whose URL goes into bootstrap files); the
    // registry and the fleet behind them.
    let listeners = Listeners::bind(&config, &secrets, &host).await?;
    let admin = crate::access::AdminToken::new(&secrets.admin_token, Some(dir.admin_token()));
    let registry = open_registry(&config, &dir, &secrets, &store, admin.clone())?;
    let mirror = open_mirror(&config, &dir, &registry);
    let enrolment = enrolment(&broker, ca_bundle, &listeners.registry_url, &registry);
    let access = device_access(&config, credentials);
    let fleet = open_fleet(&dir, &secrets, &store, access, &client, enrolment)?.with_policy(policy);
    let republished = fleet.republish_desired().await?;
    tracing::info!(count = republished, "desired states republished");

    // 5. The tasks beside the listeners, and what the API shares with them.
    let tasks = Tasks::start(
        &config,
        &fleet,
        &mirror,
        &registry,
        &link.commands,
        link.inbound,
        lease,
    );
    let state = AppState {
        fleet,
        rollouts: tasks.rollouts.clone(),
        admin,
        counters: tasks.counters.clone(),
        events: tasks.events.clone(),
        registry: registry.clone(),
        mirror,
        commands: link.commands,
        sessions: crate::access::LoginSessions::new(listeners.api.section.serves_tls()),
        remote: link.remote,
    };
    listeners.publish_api_url(&dir)?;

    // 6. Serve until a signal, then stop in reverse order.
    listeners.serve(registry, state, &stop).await;
    tasks.stop(&client).await;
    broker.stop().await;
    tracing::info!("controller stopped");
    Ok(())
}

/// The data dir, the database (noting its kind for `coracle backup`) and the secrets.
fn open_state(config: &ServeConfig) -> Result<(DataDir, Arc<Store>, Secrets), ServeError> {
    let dir = DataDir::open(&config.data_dir)?;
    let store = Arc::new(Store::open_configured(
        config.store.url.as_deref(),
        &dir.database(),
    )?);
    note_store_kind(&dir, &store)?;
    let secrets = Secrets::load_or_create(&dir, &config.tls_names())?;
    Ok((dir, store, secrets))
}

/// Connects the controller's own MQTT client. Over TLS it trusts `ca_bundle`, what its
/// devices trust: the controller CA and the broker's own CA. On an external broker other
/// controllers of the fleet may be connected too: its own client id, telemetry shared among
/// them (or queued to one of them over NATS).
async fn connect_devices(
    config: &ServeConfig,
    broker: &BrokerSide,
    secrets: &Secrets,
    ca_bundle: &str,
    lease: &crate::rollout::LeaseHolder,
) -> Result<DeviceLink, ServeError> {
    let nats = match &config.broker.nats_ingest {
        Some(url) => Some(NatsIngest {
            url: NatsUrl::parse(url)?,
            user: crate::broker::acl::CONTROLLER_USER.into(),
            password: secrets.controller_mqtt_password.clone(),
            name: lease.client_id(),
            queue: REPLICA_GROUP.into(),
            ca_pem: ca_bundle.to_string(),
        }),
        None => None,
    };
    let replicas = replicas(broker, nats.is_some(), lease);
    DeviceLink::connect(broker, secrets, ca_bundle, replicas, nats).await
}

/// How this controller shares the device traffic: alone on its embedded broker, through a
/// NATS queue group, or in a shared subscription on an external MQTT broker.
fn replicas(
    broker: &BrokerSide,
    nats: bool,
    lease: &crate::rollout::LeaseHolder,
) -> crate::broker::Replicas {
    match (&broker.embedded, nats) {
        (Some(_), _) => crate::broker::Replicas::Alone,
        (None, true) => crate::broker::Replicas::Queued {
            client_id: lease.client_id(),
        },
        (None, false) => crate::broker::Replicas::Shared {
            client_id: lease.client_id(),
            group: REPLICA_GROUP.into(),
        },
    }
}

/// The upstream mirror, which pulls other registries' images into `registry`.
fn open_mirror(
    config: &ServeConfig,
    dir: &DataDir,
    registry: &Registry,
) -> crate::upstream::Mirror {
    crate::upstream::Mirror::new(
        registry.clone(),
        crate::upstream::MirrorSettings {
            registries: config.registries.clone(),
            logins: crate::upstream::Logins::in_data_dir(dir.root()),
            platforms: config.fleet.parsed_platforms(),
        },
    )
}

/// What bootstrap files carry: the broker devices dial, the CA bundle they trust, the
/// registry's URL and the pull tokens.
fn enrolment(
    broker: &BrokerSide,
    ca_bundle: String,
    registry_url: &str,
    registry: &Registry,
) -> EnrolmentInfo {
    EnrolmentInfo {
        device_broker_url: broker.device_url.to_string(),
        ca_pem: ca_bundle,
        registry_url: registry_url.to_string(),
        pull_tokens: Some(registry.pull_tokens()),
    }
}

/// One bound HTTP listener, with its config and the TLS it serves (`None`: plain HTTP).
struct Listener {
    section: crate::config::ListenSection,
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The API's and the registry's listeners.
struct Listeners {
    api: Listener,
    registry: Listener,
    /// The registry's URL, which bootstrap files carry.
    registry_url: String,
}

impl Listeners {
    /// Binds both listeners, HTTPS with the controller's certificate where the config says
    /// so; the registry's URL names the device-facing `host`.
    async fn bind(config: &ServeConfig, secrets: &Secrets, host: &str) -> Result<Self, ServeError> {
        let (api_http, registry_http) = (config.api.clone(), config.registry.http());
        let https = tls_acceptor(secrets, &api_http, &registry_http)?;
        let tls_for = |section: &crate::config::ListenSection| {
            section.serves_tls().then(|| https.clone()).flatten()
        };
        let (api_listener, api_addr) = bind("api", api_http.listen).await?;
        let (registry_listener, registry_addr) = bind("registry", registry_http.listen).await?;
        let registry_url = format!(
            "{}://{host}:{}",
            registry_http.scheme(),
            registry_addr.port()
        );
        tracing::info!(url = %registry_url, "registry serving (the URL bootstrap files carry)");
        Ok(Self {
            api: Listener {
                tls: tls_for(&api_http),
                section: api_http,
                listener: api_listener,
                addr: api_addr,
            },
            registry: Listener {
                tls: tls_for(&registry_http),
                section: registry_http,
                listener: registry_listener,
                addr: registry_addr,
            },
            registry_url,
        })
    }

    /// Writes the API's URL into the data dir for the CLI and announces both listeners. The
    /// CLI runs on this host: a wildcard bind is reached on loopback, which the certificate
    /// names.
    fn publish_api_url(&self, dir: &DataDir) -> Result<(), ServeError> {
        let api = &self.api;
        let api_url = format!(
            "{}://{}",
            api.section.scheme(),
            crate::net::dialable(api.addr)
        );
        write_public(&dir.api_url(), format!("{api_url}\n").as_bytes())?;
        tracing::info!(url = %api_url, "api serving");
        announce("api", api.addr);
        announce("registry", self.registry.addr);
        Ok(())
    }

    /// Serves the registry (in its own task) and the API until `stop`, then waits for both.
    async fn serve(self, registry: Registry, state: AppState, stop: &watch::Receiver<bool>) {
        let (api, reg) = (self.api, self.registry);
        let registry_task = tokio::spawn(crate::net::http::serve(
            reg.listener,
            "registry",
            crate::registry::router(registry),
            reg.section.limits(),
            reg.tls,
            wait_for(stop.clone()),
        ));
        crate::net::http::serve(
            api.listener,
            "api",
            api::router(state.clone()).merge(crate::dashboard::router(state)),
            api.section.limits(),
            api.tls,
            wait_for(stop.clone()),
        )
        .await;
        if let Err(err) = registry_task.await {
            tracing::warn!(error = %err, "registry task ended abnormally");
        }
    }
}

/// Every device's broker password (and a rotation's next one, never confirmed yet: the
/// device may use either).
fn device_credentials(secrets: &Secrets, store: &Store) -> Result<Arc<Credentials>, ServeError> {
    let credentials = Arc::new(Credentials::new(
        &secrets.controller_mqtt_password,
        store.device_credentials()?,
    ));
    for (device, next) in store.next_passwords()? {
        credentials.allow_next(device, next);
    }
    Ok(credentials)
}

/// The controller's MQTT client and what reads from it: ingest's queue (device messages
/// but command replies), the command replies' waiters and the remote sessions' router.
struct DeviceLink {
    client: ControllerClient,
    inbound: tokio::sync::mpsc::Receiver<crate::broker::Inbound>,
    commands: crate::commands::DeviceCommands,
    remote: crate::sessions::DeviceSessions,
}

impl DeviceLink {
    async fn connect(
        broker: &BrokerSide,
        secrets: &Secrets,
        ca_bundle: &str,
        replicas: crate::broker::Replicas,
        nats: Option<NatsIngest>,
    ) -> Result<Self, ServeError> {
        let client = ControllerClient::connect(
            &broker.controller_url,
            &secrets.controller_mqtt_password,
            ca_bundle,
            replicas,
        )
        .await?;
        let (tx, inbound) = tokio::sync::mpsc::channel(4096);
        client.subscribe_devices_into(&tx).await?;
        // On NATS, telemetry arrives through the queue group into the same queue.
        if let Some(nats) = nats {
            nats.start(tx).await?;
        }
        // Command replies go to whoever awaits them; everything else on to ingest.
        let commands = crate::commands::DeviceCommands::new(client.clone());
        let inbound = commands.tap(inbound, 4096);
        let remote = crate::sessions::DeviceSessions::new(
            client.clone(),
            client.subscribe_sessions(SESSION_QUEUE).await?,
        );
        Ok(Self {
            client,
            inbound,
            commands,
            remote,
        })
    }
}

/// Where device accounts live: on the embedded broker (its `credentials`), or in
/// Mosquitto's or nats-server's files.
fn device_access(config: &ServeConfig, credentials: Arc<Credentials>) -> Arc<dyn DeviceAccess> {
    match (&config.broker.mosquitto_dir, &config.broker.nats_dir) {
        (Some(dir), _) => Arc::new(MosquittoAccounts::in_dir(dir)),
        (None, Some(dir)) => Arc::new(NatsAccounts::in_dir(dir)),
        (None, None) => credentials,
    }
}

/// The fleet over the store: device accounts in `access`, the deployment key chain, and
/// what bootstrap files carry.
fn open_fleet(
    dir: &DataDir,
    secrets: &Secrets,
    store: &Arc<Store>,
    access: Arc<dyn DeviceAccess>,
    client: &ControllerClient,
    enrolment: EnrolmentInfo,
) -> Result<Fleet, ServeError> {
    let keys =
        crate::deployment_keys::DeploymentKeys::load(dir, secrets.deployment_key.clone(), store)?;
    Ok(Fleet::new(
        store.clone(),
        access,
        client.clone(),
        Arc::new(keys),
        enrolment,
    ))
}

/// The broker the controller and its devices use.
struct BrokerSide {
    /// The embedded broker, when no external one is configured.
    embedded: Option<EmbeddedBroker>,
    /// Where the controller's own client connects.
    controller_url: BrokerUrl,
    /// What bootstrap files tell devices.
    device_url: BrokerUrl,
}

impl BrokerSide {
    /// Stops the embedded broker; an external one is not ours to stop.
    async fn stop(self) {
        if let Some(embedded) = self.embedded {
            embedded.stop().await;
        }
    }
}

/// Starts the embedded broker, or names the external one (`[broker] external_url`).
async fn start_broker(
    config: &ServeConfig,
    secrets: &Secrets,
    credentials: Arc<Credentials>,
    host: &str,
) -> Result<BrokerSide, ServeError> {
    if let Some(url) = &config.broker.external_url {
        let url = BrokerUrl::parse(url)?;
        let device_url = match &config.broker.device_url {
            Some(device_url) => BrokerUrl::parse(device_url)?,
            None => url.clone(),
        };
        announce("external broker", &url);
        return Ok(BrokerSide {
            embedded: None,
            controller_url: url,
            device_url,
        });
    }
    let settings = EmbeddedBrokerSettings {
        listen: config.broker.listen,
        tls_listen: config.broker.tls_listen,
        cert: secrets.tls_cert.clone(),
        key: secrets.tls_key.clone(),
        limits: config.broker.tls_limits(),
    };
    let broker = EmbeddedBroker::start(&settings, credentials).await?;
    announce("broker", broker.addr);
    announce("broker tls", broker.tls_addr);
    Ok(BrokerSide {
        controller_url: BrokerUrl {
            tls: false,
            host: broker.addr.ip().to_string(),
            port: broker.addr.port(),
        },
        device_url: BrokerUrl {
            tls: true,
            host: host.to_string(),
            port: broker.tls_addr.port(),
        },
        embedded: Some(broker),
    })
}

/// The registry over the data dir's blobs, with device pulls, the audit log and the delta
/// workers the config asks for.
fn open_registry(
    config: &ServeConfig,
    dir: &DataDir,
    secrets: &Secrets,
    store: &Arc<Store>,
    admin: crate::access::AdminToken,
) -> Result<Registry, ServeError> {
    let mut blobs = BlobStore::open(dir.blobs(), dir.uploads())?;
    if let Some(s3) = &config.blobs.s3 {
        blobs = blobs.with_remote(open_bucket(s3)?);
    }
    let registry = Registry::open(dir.root().join("registry"), blobs, admin)?
        .with_devices(
            store.clone(),
            store.clone(),
            Arc::from(secrets.pull_key.as_str()),
            config.registry.legacy_pull_token,
        )
        .with_audit(store.clone())
        .with_delta_wait(Duration::from_secs(config.deltas.request_wait_s));
    if config.deltas.workers > 0 {
        registry.start_delta_workers(crate::registry::WorkerSettings {
            workers: config.deltas.workers,
            history: config.deltas.history,
            rescan: Duration::from_secs(config.deltas.rescan_s),
        })?;
    }
    Ok(registry)
}

/// The bucket of `[blobs.s3]`, checked once: wrong credentials or a missing bucket stop
/// the start (a config mistake), a store that does not answer does not (the controller
/// serves its local cache and says so; blob writes fail until the store is back).
fn open_bucket(
    s3: &crate::object_store::S3Config,
) -> Result<crate::registry::RemoteBlobs, ServeError> {
    let bucket =
        crate::object_store::ObjectStore::new(s3).map_err(ServeError::ObjectStoreConfig)?;
    // Blocking, once, before any request is served.
    match tokio::task::block_in_place(|| bucket.check_bucket()) {
        Ok(()) => tracing::info!(
            endpoint = bucket.endpoint(),
            bucket = bucket.bucket(),
            redirect = bucket.redirects(),
            "blobs written through to the object store"
        ),
        Err(err) if err.is_unreachable() => tracing::warn!(
            error = %crate::api::error::error_chain(&err),
            "object store unreachable at start; serving the local cache until it answers"
        ),
        Err(err) => return Err(ServeError::ObjectStore(err)),
    }
    Ok(crate::registry::RemoteBlobs::new(bucket))
}

/// The controller's tasks beside its listeners, and what the API shares with them.
struct Tasks {
    /// Stopped together at shutdown.
    background: Vec<JoinHandle<()>>,
    /// Stopped last, once the MQTT client has disconnected.
    ingest: JoinHandle<()>,
    rollouts: crate::rollout::Rollouts,
    events: FleetEvents,
    counters: Arc<crate::metrics::IngestCounters>,
}

impl Tasks {
    /// Ingest, the rollout driver, the presence sweep, pull-token rotation, republishing
    /// on reconnect and the registry's upload expiry.
    fn start(
        config: &ServeConfig,
        fleet: &Fleet,
        mirror: &crate::upstream::Mirror,
        registry: &Registry,
        commands: &crate::commands::DeviceCommands,
        inbound: tokio::sync::mpsc::Receiver<crate::broker::Inbound>,
        lease: crate::rollout::LeaseHolder,
    ) -> Self {
        let store = fleet.store.clone();
        let mut events = FleetEvents::new(1024);
        if let Some(url) = &config.store.url {
            // Other controllers may share this database: their events are shown here too.
            events = crate::event_relay::start(url, lease.name.clone(), events);
        }
        let counters = Arc::new(crate::metrics::IngestCounters::default());
        let ingest = tokio::spawn(ingest::run(
            store.clone(),
            inbound,
            events.clone(),
            counters.clone(),
        ));
        tracing::info!(holder = %lease.name, "rollouts are driven under this controller's leases");
        let rollouts = crate::rollout::Rollouts::new(fleet.clone(), mirror.clone(), events.clone())
            .with_agent_releases(crate::agent_release::AgentReleases::new(registry.clone()))
            .with_lease(lease);
        let pull_tokens = crate::pull_token_rotation::PullTokenRotation {
            store: store.clone(),
            commands: commands.clone(),
            tokens: registry.pull_tokens(),
            period: Duration::from_secs(config.registry.pull_token_rotation_s),
        };
        let offline_after = Duration::from_secs(config.fleet.offline_after_s);
        let background = vec![
            tokio::spawn(rollouts.clone().run(events.subscribe())),
            tokio::spawn(registry.blobs.clone().expire_uploads_every(
                Duration::from_secs(config.registry.upload_expiry_s),
                config.registry.expiry_period(),
            )),
            tokio::spawn(crate::presence::run(store, events.clone(), offline_after)),
            tokio::spawn(pull_tokens.run()),
            tokio::spawn(fleet.clone().republish_on_reconnect()),
            // Once: what the data dir held before `[blobs.s3]` (a no-op without it).
            tokio::spawn(registry.clone().backfill_bucket()),
        ];
        Self {
            background,
            ingest,
            rollouts,
            events,
            counters,
        }
    }

    /// Stops the tasks around the MQTT client's disconnect: the background ones and the
    /// rollouts' leases first, ingest last, once nothing more can arrive.
    async fn stop(&self, client: &ControllerClient) {
        for task in &self.background {
            task.abort();
        }
        self.rollouts.release_leases();
        client.disconnect().await;
        self.ingest.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";

    #[test]
    fn device_ca_bundle_puts_the_controller_ca_first_and_refuses_non_pem() {
        assert_eq!(device_ca_bundle("CTL", None).unwrap(), "CTL");
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("broker-ca.pem");
        std::fs::write(&good, PEM).unwrap();
        let bundle = device_ca_bundle("CTL\n", Some(&good)).unwrap();
        assert_eq!(bundle, format!("CTL\n{PEM}"));
        let bad = dir.path().join("not.pem");
        std::fs::write(&bad, "hello").unwrap();
        let err = device_ca_bundle("CTL", Some(&bad)).unwrap_err();
        assert!(err.to_string().contains("not.pem"), "{err}");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            device_ca_bundle("CTL", Some(&missing)),
            Err(ServeError::ReadDeviceCa { .. })
        ));
    }
}
