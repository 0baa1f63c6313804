//! The embedded bus for a single node: a publish is reported straight back to this node.

use std::sync::{Arc, Weak};

use async_trait::async_trait;

use super::envelope::Envelope;
use super::{Bus, BusError, BusEvents, Published};
use crate::channel::ChannelName;
use crate::metrics::Metrics;

pub struct MemoryBus {
    /// The node; weak because the node owns the bus.
    events: Weak<dyn BusEvents>,
    metrics: Arc<Metrics>,
}

impl MemoryBus {
    pub fn new(events: Weak<dyn BusEvents>, metrics: Arc<Metrics>) -> Self {
        metrics.bus_connected.set(1);
        Self { events, metrics }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(
        &self,
        channel: &ChannelName,
        envelope: Envelope,
    ) -> Result<Published, BusError> {
        let events = self.events.upgrade().ok_or(BusError::NotConnected)?;
        self.metrics.messages_received.inc();
        events.message(channel.clone(), envelope);
        Ok(Published::default())
    }

    async fn subscribe(&self, _: &ChannelName) -> Result<(), BusError> {
        Ok(())
    }

    async fn unsubscribe(&self, _: &ChannelName) -> Result<(), BusError> {
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }
}
