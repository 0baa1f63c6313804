//! The embedded bus for a single node: a publish is reported straight back to this node,
//! and channels with history keep it in this process.

use std::sync::{Arc, Weak};

use async_trait::async_trait;

use super::directory::{Control, Directory, MemoryDirectory};
use super::envelope::Envelope;
use super::history::{History, HistoryPolicy, MemoryHistory, Page, Query};
use super::{Bus, BusError, BusEvents, Published};
use crate::channel::ChannelName;
use crate::metrics::Metrics;

pub struct MemoryBus {
    /// The node; weak because the node owns the bus.
    events: Weak<dyn BusEvents>,
    metrics: Arc<Metrics>,
    history: MemoryHistory,
    directory: MemoryDirectory,
    /// Appending and reporting happen under this lock, so the node hears a channel's
    /// messages in offset order even when two clients publish at once.
    order: parking_lot::Mutex<()>,
}

impl MemoryBus {
    pub fn new(events: Weak<dyn BusEvents>, metrics: Arc<Metrics>) -> Self {
        metrics.bus_connected.set(1);
        Self {
            events,
            metrics,
            history: MemoryHistory::default(),
            directory: MemoryDirectory::default(),
            order: parking_lot::Mutex::new(()),
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(
        &self,
        channel: &ChannelName,
        mut envelope: Envelope,
        history: Option<&HistoryPolicy>,
    ) -> Result<Published, BusError> {
        let events = self.events.upgrade().ok_or(BusError::NotConnected)?;
        let _ordered = self.order.lock();
        if let Some(policy) = history {
            envelope.position = Some(self.history.append(channel, policy, &envelope));
        }
        let published = Published {
            position: envelope.position.clone(),
        };
        self.metrics.messages_received.inc();
        events.message(channel.clone(), envelope);
        Ok(published)
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

#[async_trait]
impl Directory for MemoryBus {
    async fn control(&self, control: &Control) -> Result<(), BusError> {
        let events = self.events.upgrade().ok_or(BusError::NotConnected)?;
        events.control(control.clone());
        Ok(())
    }

    async fn report(
        &self,
        node: &str,
        counts: &[(ChannelName, u64)],
        ttl: std::time::Duration,
    ) -> Result<(), BusError> {
        self.directory.report(node, counts, ttl);
        Ok(())
    }

    async fn channels(&self) -> Result<std::collections::BTreeMap<String, u64>, BusError> {
        Ok(self.directory.channels())
    }
}

#[async_trait]
impl History for MemoryBus {
    async fn read(
        &self,
        channel: &ChannelName,
        policy: &HistoryPolicy,
        query: Query,
        limit: usize,
    ) -> Result<Page, BusError> {
        self.history.read(channel, policy, query, limit).await
    }
}
