//! What the node does with what the bus reports: drop repeated ids, fan messages out to
//! local subscribers (one span per message and node, never per subscriber), and tell
//! clients about gaps. Recovery from history will decide here too.

use crate::bus::BusEvents;
use crate::bus::envelope::Envelope;
use crate::channel::ChannelName;
use crate::metrics::DropReason;
use crate::protocol::Push;

use super::Node;

impl BusEvents for Node {
    fn message(&self, channel: ChannelName, envelope: Envelope) {
        if let Some(id) = &envelope.id
            && !self.recent_ids.first_time(&channel, id)
        {
            self.metrics.dropped(DropReason::Duplicate, 1);
            return;
        }
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
            channel: &channel,
            data: &envelope.data,
        };
        let out = self.hub.fan_out(&channel, &push, envelope.ts.unwrap_or(0));
        self.metrics.messages_delivered.add(out.queued as u64);
        span.record("subscribers", out.queued);
        span.record("bytes", out.frame_bytes);
    }

    fn link_lost(&self) {
        tracing::debug!("bus link lost; clients are told `gap` once it is back");
    }

    /// Whatever was published while the link was down is lost to these channels.
    fn link_back(&self, channels: &[ChannelName]) {
        for channel in channels {
            self.hub.fan_out(channel, &Push::Gap { channel }, 0);
            self.metrics.bus_gap_notices.inc();
        }
    }
}
