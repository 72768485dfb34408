//! Pull progress from the engine's blocking thread to the controller. The supervisor loop
//! is busy awaiting the pull meanwhile, so it never sees these: `ProgressSink` turns the
//! engine's `PullTick`s into `PullProgress` messages and hands them to the transport handle,
//! whose gate lets one a second through (plus each layer's end).

use coracle_proto::{Generation, ImageRef, PullProgress, ServiceName};

use super::PullTick;
use crate::state::AgentState;
use crate::transport::TransportHandle;

/// Whose pull it is: the generation being applied and the first service running the image.
/// The pending state is looked at first (it is what the agent pulls for), then the
/// committed one (an image of the running app pulled again); `None` for an image neither
/// names.
pub(super) fn pull_subject(
    state: &AgentState,
    image: &ImageRef,
) -> Option<(Generation, ServiceName)> {
    [&state.pending, &state.committed]
        .into_iter()
        .flatten()
        .find_map(|desired| {
            desired
                .services
                .iter()
                .find(|s| s.image.digest == image.digest)
                .map(|s| (desired.generation, s.name.clone()))
        })
}

/// The message for one tick.
pub(super) fn message(
    generation: Generation,
    service: &ServiceName,
    tick: &PullTick,
) -> PullProgress {
    let small = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    PullProgress {
        generation,
        service: service.clone(),
        layer: small(tick.index),
        layers: small(tick.count),
        done_bytes: tick.done_bytes,
        total_bytes: tick.total_bytes,
        delta: tick.delta,
        stored: tick.stored,
    }
}

/// Publishes a pull's ticks through the transport (rate-limited there).
#[derive(Debug)]
pub(super) struct ProgressSink {
    transport: TransportHandle,
    subject: Option<(Generation, ServiceName)>,
}

impl ProgressSink {
    pub(super) fn new(
        transport: TransportHandle,
        subject: Option<(Generation, ServiceName)>,
    ) -> Self {
        Self { transport, subject }
    }

    pub(super) fn tick(&mut self, tick: PullTick) {
        if let Some((generation, service)) = &self.subject {
            self.transport
                .publish_progress(&message(*generation, service, &tick));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::samples;

    #[test]
    fn the_pending_generation_names_the_pull() {
        let mut state = AgentState::default();
        let committed = samples::desired_with_services(2);
        let mut pending = committed.clone();
        pending.generation = Generation(43);
        pending.services[1].image.digest = coracle_proto::Digest::from_bytes([9; 32]);
        let new_image = pending.services[1].image.clone();
        let old_image = committed.services[0].image.clone();
        state.committed = Some(committed.clone());
        state.pending = Some(pending.clone());
        assert_eq!(
            pull_subject(&state, &new_image),
            Some((Generation(43), pending.services[1].name.clone()))
        );
        state.pending = None;
        assert_eq!(
            pull_subject(&state, &old_image),
            Some((committed.generation, committed.services[0].name.clone()))
        );
        assert_eq!(pull_subject(&state, &new_image), None);
    }

    #[test]
    fn a_tick_becomes_a_small_message() {
        let tick = PullTick {
            layer: coracle_images::Digest::of(b"layer"),
            index: 2,
            count: 3,
            done_bytes: 5_000,
            total_bytes: 10_000,
            delta: true,
            stored: false,
        };
        let service: ServiceName = "web".parse().unwrap();
        let msg = message(Generation(7), &service, &tick);
        assert_eq!((msg.layer, msg.layers, msg.percent()), (2, 3, 50));
        assert!(coracle_proto::encode(&msg).len() < 24);
    }
}
