//! The seam between nodes. A `Bus` carries published messages to every node that hosts a
//! channel's subscribers, and reports what it receives, and the state of its links, to
//! the node through [`BusEvents`]. It never sees the hub or a client.
//!
//! Contract, for every implementation:
//! - `publish` returns `Ok` only once the bus has accepted the message; an `Err` means it
//!   was not published (the client is told `unavailable`), never a silent drop.
//! - A publish reaches every node subscribed to the channel, this node included.
//! - At most once: no retries, no duplicates. Messages from one publisher on one channel
//!   arrive in the order they were published.
//! - `subscribe`/`unsubscribe` are called by the node only on a channel's first/last local
//!   subscriber, serialised per channel, so implementations need no reference counting.
//! - A subscription asked for while the link is down is kept, and made when it is back.
//! - Every lost link is reported (`link_lost`), and every link that comes back after a
//!   loss is reported with the channels it resubscribed (`link_back`): the node decides
//!   what clients are told.

pub mod directory;
pub mod envelope;
pub mod history;
pub mod memory;
pub mod presence;
pub mod probe;
pub mod redis;
pub mod supervisor;

use std::sync::Arc;

use async_trait::async_trait;

use crate::channel::ChannelName;
use envelope::Envelope;
use history::HistoryPolicy;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The link is down (Redis unreachable, or not yet subscribed); retrying later may work.
    #[error("the bus is not connected")]
    NotConnected,
    /// Redis failed or refused the command.
    #[error("redis failed the command")]
    Redis(#[source] Arc<::redis::RedisError>),
    /// The link went away before the command was answered.
    #[error("the bus link was lost before the command was answered")]
    LinkLost,
    /// Redis answered something a roomcast function never returns.
    #[error("unexpected reply from {0}")]
    Malformed(&'static str),
}

impl From<::redis::RedisError> for BusError {
    fn from(error: ::redis::RedisError) -> Self {
        BusError::Redis(Arc::new(error))
    }
}

/// Where a published message stands in its channel's history: a strictly increasing
/// offset within an epoch (the epoch changes when the history was lost).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// What the bus knows about a message it accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Its position, on channels whose history the bus keeps; `None` elsewhere.
    pub position: Option<StreamPosition>,
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes; with a history policy, appends to the channel's history in the same
    /// step and returns the message's position.
    async fn publish(
        &self,
        channel: &ChannelName,
        envelope: Envelope,
        history: Option<&HistoryPolicy>,
    ) -> Result<Published, BusError>;
    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BusError>;
    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BusError>;
    /// Whether the bus can carry traffic right now (drives `/readyz`).
    fn is_ready(&self) -> bool;
}

/// What a bus reports to the node. Called from the bus's own tasks: implementations
/// never block and never wait.
pub trait BusEvents: Send + Sync + 'static {
    /// A message arrived on a channel this node is subscribed to.
    fn message(&self, channel: ChannelName, envelope: Envelope);
    /// A client joined or left a channel with presence.
    fn presence(&self, channel: ChannelName, event: envelope::PresenceEvent);
    /// A link that was up is down: messages for its channels may be missed until it is back.
    fn link_lost(&self);
    /// A link is up again after a loss, subscribed again to `channels`: anything published
    /// to them while it was down did not arrive.
    fn link_back(&self, channels: &[ChannelName]);
    /// An order for every node arrived (see `directory`).
    fn control(&self, control: directory::Control);
}
