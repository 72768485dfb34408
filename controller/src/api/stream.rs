//! `GET /api/v1/events/stream`: fleet events (reported, health, events, presence) as
//! Server-Sent Events, one JSON object per event. A slow reader skips what it missed
//! (a `lagged` event says how many) instead of holding memory on the controller.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};

use super::AppState;
use crate::fleet_events::FleetEvent;

pub async fn fleet_events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.events.subscribe();
    let stream =
        futures_util::stream::unfold(rx, |mut rx: broadcast::Receiver<FleetEvent>| async move {
            let event = match rx.recv().await {
                Ok(ingested) => Event::default()
                    .event("fleet")
                    .json_data(&ingested)
                    .unwrap_or_else(|_| Event::default().event("error")),
                Err(RecvError::Lagged(missed)) => {
                    Event::default().event("lagged").data(missed.to_string())
                }
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), rx))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
