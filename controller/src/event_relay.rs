//! Fleet events across the controllers of one fleet on one PostgreSQL database. Each device
//! message reaches one controller (shared subscriptions) and each rollout is driven by one,
//! so each controller publishes the events it makes (`NOTIFY` on one channel, tagged with
//! its name) and hears the others' (`LISTEN`): the SSE stream of any controller shows the
//! whole fleet, and a rollout's driver wakes on reports another controller ingested.
//!
//! Two threads, each with its own connection (a blocking client, like the store's), that
//! reconnect by themselves: a controller whose relay is down still serves, its streams show
//! its own events only until the database is back.

use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::fleet_events::{FleetEvent, FleetEvents};
use crate::net::SharedThrottle;

/// The notification channel (one per database: one fleet).
const CHANNEL: &str = "coracle_fleet_events";
/// Events waiting for the publisher; past that they are dropped (and counted).
const QUEUE: usize = 4096;
/// How long a lost connection waits before it is tried again.
const RECONNECT: Duration = Duration::from_secs(1);
/// PostgreSQL refuses a notification payload of 8,000 bytes or more.
const MAX_PAYLOAD: usize = 7_999;

/// One event on the wire: who made it, and what it is.
#[derive(Debug, Serialize, Deserialize)]
struct Relayed {
    origin: String,
    event: FleetEvent,
}

/// Starts relaying `events` of the controller named `origin` through the database at
/// `url`; returns the bus with the relay attached.
pub fn start(url: &str, origin: Arc<str>, events: FleetEvents) -> FleetEvents {
    let (tx, rx) = mpsc::channel(QUEUE);
    let events = events.with_relay(tx);
    let (publish_url, listen_url) = (url.to_string(), url.to_string());
    let (publish_origin, listen_events) = (origin.clone(), events.clone());
    spawn("coracle-relay-out", move || {
        publish(&publish_url, &publish_origin, rx)
    });
    spawn("coracle-relay-in", move || {
        listen(&listen_url, &origin, &listen_events)
    });
    events
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) {
    if let Err(err) = std::thread::Builder::new().name(name.into()).spawn(body) {
        tracing::error!(thread = name, error = %err, "cannot start the fleet event relay; other controllers' events are not shown here");
    }
}

/// Publishes this controller's events until the bus is dropped.
fn publish(url: &str, origin: &str, mut events: mpsc::Receiver<FleetEvent>) {
    let failures = SharedThrottle::new(Duration::from_secs(60));
    let too_long = SharedThrottle::new(Duration::from_secs(60));
    let mut client = None;
    while let Some(event) = events.blocking_recv() {
        let payload = match serde_json::to_string(&Relayed {
            origin: origin.to_string(),
            event,
        }) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::warn!(error = %err, "cannot encode a fleet event for the relay");
                continue;
            }
        };
        if payload.len() > MAX_PAYLOAD {
            // A wave's device list in a large fleet: the other controllers' streams miss
            // this one event; its effects are in the database they read.
            if let Some(missed) = too_long.hit() {
                tracing::warn!(
                    missed,
                    bytes = payload.len(),
                    "a fleet event is too long to relay; other controllers' streams miss it"
                );
            }
            continue;
        }
        let sent = connected(&mut client, url).and_then(|c| {
            c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .map(drop)
        });
        if let Err(err) = sent {
            client = None;
            if let Some(missed) = failures.hit() {
                tracing::warn!(missed, error = %crate::api::error::error_chain(&err), "cannot publish fleet events to the other controllers");
            }
        }
    }
}

/// Hears the other controllers' events and hands them to this controller's observers;
/// runs for the life of the process.
fn listen(url: &str, origin: &str, events: &FleetEvents) {
    let failures = SharedThrottle::new(Duration::from_secs(60));
    loop {
        if let Err(err) = listen_once(url, origin, events) {
            if let Some(missed) = failures.hit() {
                tracing::warn!(missed, error = %crate::api::error::error_chain(&err), "fleet event relay lost the database; listening again");
            }
        }
        std::thread::sleep(RECONNECT);
    }
}

fn listen_once(url: &str, origin: &str, events: &FleetEvents) -> Result<(), postgres::Error> {
    let mut client = Client::connect(url, NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    let mut notifications = client.notifications();
    let mut incoming = notifications.blocking_iter();
    while let Some(notification) = incoming.next()? {
        match serde_json::from_str::<Relayed>(notification.payload()) {
            Ok(relayed) if relayed.origin != origin => events.deliver_remote(relayed.event),
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(error = %err, "fleet event relay: a notification that is not an event")
            }
        }
    }
    Ok(())
}

/// The publisher's connection, made when there is none.
fn connected<'a>(
    client: &'a mut Option<Client>,
    url: &str,
) -> Result<&'a mut Client, postgres::Error> {
    let live = match client.take() {
        Some(live) => live,
        None => Client::connect(url, NoTls)?,
    };
    Ok(client.insert(live))
}
