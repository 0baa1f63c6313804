//! The seam between nodes. A `Bus` carries published messages to every node that hosts a
//! channel's subscribers, and hands what it receives to this node's hub.
//!
//! Contract, for every implementation:
//! - `publish` returns `Ok` only once the bus has accepted the message; an `Err` means it
//!   was not published (the client is told `unavailable`), never a silent drop.
//! - A publish reaches every node subscribed to the channel, this node included.
//! - At most once: no retries, no duplicates. Messages from one publisher on one channel
//!   arrive in the order they were published.
//! - `subscribe`/`unsubscribe` are called by the node only on a channel's first/last local
//!   subscriber, serialised per channel, so implementations need no reference counting.

pub mod envelope;
pub mod memory;
pub mod redis;

use async_trait::async_trait;

use crate::channel::ChannelName;
use crate::hub::Delivery;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus cannot take requests now (e.g. Redis is down); retrying later may work.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, delivery: Delivery) -> Result<(), BusError>;
    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BusError>;
    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BusError>;
    /// Whether the bus can carry traffic right now (drives `/readyz`).
    fn is_ready(&self) -> bool;
}
