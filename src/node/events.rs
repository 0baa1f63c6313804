//! What the node does with what the bus reports: drop repeated ids, fan messages out to
//! local subscribers (one span per message and node, never per subscriber), and after an
//! outage, recover channels with history or tell clients `gap` on the others.

use crate::bus::BusEvents;
use crate::bus::envelope::{Envelope, PresenceEvent};
use crate::channel::ChannelName;
use crate::metrics::DropReason;
use crate::protocol::Push;

use super::Node;

impl BusEvents for Node {
    fn control(&self, control: crate::bus::directory::Control) {
        self.obey(control);
    }

    fn message(&self, channel: ChannelName, envelope: Envelope) {
        if let Some(id) = &envelope.id
            && !self.recent_ids.first_time(&channel, id)
        {
            self.metrics.dropped(DropReason::Duplicate, 1);
            return;
        }
        if self.held_for_recovery(&channel, &envelope) {
            return;
        }
        self.fan_out_message(&channel, &envelope);
    }

    /// Join and leave arrive once per channel and node; each local subscriber gets one.
    fn presence(&self, channel: ChannelName, event: PresenceEvent) {
        let push = if event.joined {
            Push::Join {
                channel: &channel,
                client: &event.client,
                info: &event.info,
            }
        } else {
            Push::Leave {
                channel: &channel,
                client: &event.client,
            }
        };
        self.hub.fan_out(&channel, &push, 0);
    }

    fn link_lost(&self) {
        tracing::debug!("bus link lost; channels recover or get `gap` once it is back");
    }

    /// Channels with history are recovered from the position this node last delivered;
    /// the others, and those it never delivered on, are told `gap`.
    fn link_back(&self, channels: &[ChannelName]) {
        for channel in channels {
            let last = self.hub.last_position(channel);
            match (self.history_policy(channel), last) {
                (Some(policy), Some(last)) => self.recover_channel(channel.clone(), policy, last),
                _ => self.gap(channel),
            }
        }
    }
}

impl Node {
    /// Fans a message out to this node's subscribers of `channel`.
    pub(super) fn fan_out_message(&self, channel: &ChannelName, envelope: &Envelope) {
        // It continues the trace the message carries, so a publish and every node's
        // fan-out form one trace.
        let span = tracing::info_span!(
            "roomcast.fanout",
            %channel,
            subscribers = tracing::field::Empty,
            bytes = tracing::field::Empty,
        );
        if let Some(tp) = &envelope.traceparent {
            crate::telemetry::continue_trace(&span, tp);
        }
        let _entered = span.enter();
        let push = Push::Message {
            channel,
            data: &envelope.data,
            position: envelope.position.as_ref(),
        };
        let out = self.hub.fan_out(channel, &push, envelope.ts.unwrap_or(0));
        self.metrics.messages_delivered.add(out.queued as u64);
        span.record("subscribers", out.queued);
        span.record("bytes", out.frame_bytes);
    }

    /// Tells the channel's subscribers here that messages may have been lost.
    pub(super) fn gap(&self, channel: &ChannelName) {
        self.hub.fan_out(channel, &Push::Gap { channel }, 0);
        self.metrics.bus_gap_notices.inc();
    }
}
