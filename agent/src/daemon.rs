//! Assembles the daemon: config → bootstrap → persisted state → transport + supervisor +
//! control socket, on one current_thread tokio runtime. The container engine is passed in
//! (the Linux runtime adapter in production), so this file stays free of runtime details.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use coracle_proto::Bootstrap;
use tokio::sync::{mpsc, watch};

use crate::config::AgentConfig;
use crate::control::server;
use crate::health::VitalsReader;
use crate::ota::slots::SlotFiles;
use crate::state::{LoadReport, StateStore};
use crate::supervisor::{ContainerEngine, Supervisor, SupervisorExit, SupervisorOptions};
use crate::transport::{self, TransportSettings};

/// Reads the enrolment file named by the config.
pub fn load_bootstrap(config: &AgentConfig) -> anyhow::Result<Bootstrap> {
    let path = &config.bootstrap;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read bootstrap file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parse bootstrap file {}", path.display()))
}

/// Checks what `run` would read before touching anything: the (already validated) config
/// and the bootstrap it names — device id, broker URL, auth shape, pinned deployment key.
/// Certificates are checked when the link is built, not here.
pub fn check(config: &AgentConfig) -> anyhow::Result<Bootstrap> {
    let bootstrap = load_bootstrap(config)?;
    let path = config.bootstrap.display();
    crate::transport::BrokerAddress::parse(&bootstrap.broker_url)
        .with_context(|| format!("bootstrap file {path}"))?;
    bootstrap
        .deployment_key()
        .with_context(|| format!("bootstrap file {path}"))?;
    Ok(bootstrap)
}

/// Runs the daemon until SIGTERM or SIGINT arrives or `shutdown` turns true; then says
/// goodbye to the broker (Offline presence) and returns.
pub fn run(
    config: &AgentConfig,
    engine: Arc<dyn ContainerEngine>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SupervisorExit> {
    run_booted(config, engine, shutdown, false)
}

/// [`run`] after the boot step (`ota::boot`): a `trial` build confirms itself once its
/// broker link is up. Returns `RestartForUpdate` when a new build is staged: the caller
/// executes the binary again.
pub fn run_booted(
    config: &AgentConfig,
    engine: Arc<dyn ContainerEngine>,
    shutdown: watch::Receiver<bool>,
    trial: bool,
) -> anyhow::Result<SupervisorExit> {
    let bootstrap = load_bootstrap(config)?;
    let store = StateStore::new(&config.state_dir());
    let (state, report) = store.load().context("load agent state")?;
    match &report {
        LoadReport::Loaded | LoadReport::Fresh => {}
        other => tracing::warn!(report = ?other, "agent state repaired at start"),
    }
    let settings = TransportSettings::from_bootstrap(&bootstrap, config)
        .context("set up the broker connection from the bootstrap")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let outcome = runtime.block_on(async {
        let listener = server::bind(&config.control_socket)?;
        let (handle, driver, mut inbox) = transport::transport(settings);
        // Credential rotations are answered beside the supervisor (it never sees them).
        let key = crate::sealing_key::SealingKey::load_or_create(&config.state_dir())
            .context("load the sealing key")?;
        let (to_supervisor, supervisor_commands) = mpsc::channel(8);
        let commands = std::mem::replace(&mut inbox.commands, supervisor_commands);
        let rotation = crate::credential_rotation::CredentialRotation {
            device: bootstrap.device.clone(),
            bootstrap: config.bootstrap.clone(),
            key,
            transport: handle.clone(),
            link: inbox.link.clone(),
            pull_token: engine.pull_token(),
        };
        tokio::spawn(rotation.run(commands, to_supervisor));
        // Remote sessions (logs -f, exec) beside the supervisor: they never change its state.
        let (_, no_sessions) = mpsc::channel(1);
        let sessions = crate::sessions::Sessions {
            engine: engine.clone(),
            transport: handle.clone(),
        };
        tokio::spawn(sessions.run(std::mem::replace(&mut inbox.sessions, no_sessions)));
        let (control_tx, control_rx) = mpsc::channel(8);
        let driver_done = tokio::spawn(driver.run());
        tokio::spawn(server::serve(listener, control_tx));
        let stop = stop_on_signal(shutdown);
        let slots = SlotFiles::new(&config.state_dir());
        let supervisor = Supervisor::new(
            bootstrap.device.clone(),
            state,
            store,
            engine,
            handle.clone(),
            VitalsReader::new(&config.data_dir),
            SupervisorOptions {
                tick: Duration::from_secs(1),
                health_interval: config.health_interval(),
                stop_grace: Duration::from_secs(10),
                log_tail_max_bytes: config.limits.log_tail_max_bytes,
                disk_reserve_mib: config.limits.disk_reserve_mib,
            },
        )
        .with_self_update(slots.clone());
        if trial {
            tokio::spawn(confirm_when_connected(inbox.link.clone(), slots));
        }
        tracing::info!(device = %bootstrap.device, version = %crate::ota::agent_version(), "agent running");
        let exit = supervisor.run(inbox, control_rx, stop).await;
        handle.shutdown();
        // Let the driver deliver the goodbye before the runtime goes away.
        let _ = tokio::time::timeout(Duration::from_secs(5), driver_done).await;
        anyhow::Ok(exit)
    });
    // A job still pulling or stopping on a blocking thread must not hold the exit: what it
    // leaves half done is what a power cut leaves, and the next start copes with that.
    runtime.shutdown_timeout(Duration::from_secs(2));
    outcome
}

/// A build on trial has proven itself once its broker link is up (connected with its
/// credentials and subscribed): it becomes the active build (`ota::boot`).
async fn confirm_when_connected(mut link: watch::Receiver<transport::Link>, slots: SlotFiles) {
    if link
        .wait_for(|l| matches!(l, transport::Link::Up { .. }))
        .await
        .is_err()
    {
        return;
    }
    match crate::ota::boot::confirm_trial(&slots) {
        Ok(()) => tracing::info!(version = %crate::ota::agent_version(), "agent build confirmed"),
        Err(err) => {
            tracing::error!(error = %crate::runtime::error_chain(&err), "agent build not confirmed")
        }
    }
}

/// A stop flag raised by SIGTERM, SIGINT or the caller's `shutdown`.
fn stop_on_signal(mut shutdown: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot watch SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = terminate => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
        tx.send_replace(true);
    });
    rx
}
