//! Events waiting for the broker's acknowledgement, plus command replies made while offline.
//!
//! An event stays queued from the moment it happens until its PUBACK arrives; if the link
//! drops first it is sent again on the next connection (at-least-once, as QoS 1 promises).
//! The queue is bounded: beyond `max_events` the oldest are dropped and counted. Health
//! samples are never queued (a stale sample is worth less than the bytes) and the reported
//! state is republished whole on every connect, so neither lives here.

use std::collections::VecDeque;

use coracle_proto::{CommandReply, Event};

/// Replies kept while offline; the controller times out older requests anyway.
const MAX_REPLIES: usize = 16;

#[derive(Debug)]
struct Queued {
    seq: u64,
    event: Event,
    sent: bool,
}

/// Messages queued for the broker.
#[derive(Debug)]
pub struct Outbox {
    events: VecDeque<Queued>,
    next_seq: u64,
    max_events: usize,
    dropped_events: u64,
    replies: VecDeque<CommandReply>,
}

impl Outbox {
    /// An outbox holding at most `max_events` events.
    pub fn new(max_events: usize) -> Self {
        Self {
            events: VecDeque::new(),
            next_seq: 0,
            max_events: max_events.max(1),
            dropped_events: 0,
            replies: VecDeque::new(),
        }
    }

    /// Queues an event, dropping the oldest when full.
    pub fn push_event(&mut self, event: Event) {
        if self.events.len() == self.max_events {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(Queued {
            seq: self.next_seq,
            event,
            sent: false,
        });
        self.next_seq += 1;
    }

    /// The next event not handed to the broker yet, with its sequence number.
    pub fn next_unsent(&self) -> Option<(u64, &Event)> {
        self.events
            .iter()
            .find(|q| !q.sent)
            .map(|q| (q.seq, &q.event))
    }

    /// The event was handed to the broker; it stays queued until acknowledged.
    pub fn mark_sent(&mut self, seq: u64) {
        if let Some(q) = self.events.iter_mut().find(|q| q.seq == seq) {
            q.sent = true;
        }
    }

    /// The broker acknowledged the event: forget it.
    pub fn ack(&mut self, seq: u64) {
        self.events.retain(|q| q.seq != seq);
    }

    /// The link dropped: everything unacknowledged goes out again on the next connection.
    pub fn resend_unacked(&mut self) {
        self.events.iter_mut().for_each(|q| q.sent = false);
    }

    /// Queues a command reply, dropping the oldest when full.
    pub fn push_reply(&mut self, reply: CommandReply) {
        if self.replies.len() == MAX_REPLIES {
            self.replies.pop_front();
        }
        self.replies.push_back(reply);
    }

    /// Takes the queued replies.
    pub fn take_replies(&mut self) -> Vec<CommandReply> {
        self.replies.drain(..).collect()
    }

    /// Events dropped because the outbox was full, since the start.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Events not yet acknowledged.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::samples;

    #[test]
    fn events_stay_until_acked_and_are_resent_after_a_drop() {
        let mut outbox = Outbox::new(10);
        let events = samples::events();
        outbox.push_event(events[0].clone());
        outbox.push_event(events[1].clone());
        let (first, _) = outbox.next_unsent().unwrap();
        outbox.mark_sent(first);
        let (second, e) = outbox.next_unsent().unwrap();
        assert_eq!(e, &events[1]);
        outbox.mark_sent(second);
        assert!(outbox.next_unsent().is_none());
        outbox.ack(first);
        outbox.resend_unacked();
        assert_eq!(outbox.next_unsent().map(|(s, _)| s), Some(second));
        assert_eq!(outbox.event_count(), 1);
    }

    #[test]
    fn outbox_is_bounded_and_counts_drops() {
        let mut outbox = Outbox::new(3);
        let events = samples::events();
        events.iter().for_each(|e| outbox.push_event(e.clone()));
        assert_eq!(outbox.event_count(), 3);
        assert_eq!(outbox.dropped_events(), events.len() as u64 - 3);
        assert_eq!(outbox.next_unsent().unwrap().1, &events[events.len() - 3]);
        for r in samples::command_replies().into_iter().cycle().take(20) {
            outbox.push_reply(r);
        }
        assert_eq!(outbox.take_replies().len(), MAX_REPLIES);
    }
}
