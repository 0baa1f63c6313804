//! The embedded bus for a single node: a publish is fanned out to the local hub directly.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Bus, BusError};
use crate::channel::ChannelName;
use crate::hub::{Delivery, Hub};
use crate::metrics::Metrics;

pub struct MemoryBus {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

impl MemoryBus {
    pub fn new(hub: Arc<Hub>, metrics: Arc<Metrics>) -> Self {
        Self { hub, metrics }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, delivery: Delivery) -> Result<(), BusError> {
        self.metrics.messages_received.inc();
        self.hub.dispatch(&delivery);
        Ok(())
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
