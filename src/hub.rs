//! The local subscription index: channel → this node's subscribers, sharded to keep lock
//! contention low, and the fan-out of one message to them. Knows nothing of the bus.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::OnceLock;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::channel::ChannelName;
use crate::conn::{Conn, ConnId, PushError};
use crate::metrics::Metrics;
use crate::protocol::{CloseCode, Codec};

const SHARDS: usize = 64;

type Subscribers = HashMap<ConnId, Arc<Conn>>;

pub struct Hub {
    /// Read-mostly: fan-out takes a read lock, (un)subscribe a write lock, briefly.
    /// Never held across an `.await`.
    shards: Box<[RwLock<HashMap<ChannelName, Subscribers>>]>,
    hasher: std::collections::hash_map::RandomState,
    metrics: Arc<Metrics>,
}

/// One message as the hub fans it out: the channel and its payload as JSON text.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub channel: ChannelName,
    pub data: Bytes,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: Default::default(),
            metrics,
        }
    }

    fn shard(&self, channel: &ChannelName) -> &RwLock<HashMap<ChannelName, Subscribers>> {
        &self.shards[self.hasher.hash_one(channel) as usize % SHARDS]
    }

    /// Adds a subscriber; returns true when it is the channel's first on this node.
    pub fn add(&self, channel: &ChannelName, conn: &Arc<Conn>) -> bool {
        let mut shard = self.shard(channel).write();
        let first = !shard.contains_key(channel);
        shard
            .entry(channel.clone())
            .or_default()
            .insert(conn.id, Arc::clone(conn));
        if first {
            self.metrics.channels.inc();
        }
        first
    }

    /// Removes a subscriber; returns true when the channel has no subscriber left here
    /// (the entry is then gone, so an idle channel costs nothing).
    pub fn remove(&self, channel: &ChannelName, conn: ConnId) -> bool {
        let mut shard = self.shard(channel).write();
        let Some(subs) = shard.get_mut(channel) else {
            return false;
        };
        if subs.remove(&conn).is_none() {
            return false;
        }
        if subs.is_empty() {
            shard.remove(channel);
            self.metrics.channels.dec();
            return true;
        }
        false
    }

    pub fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.shard(channel)
            .read()
            .get(channel)
            .map_or(0, HashMap::len)
    }

    /// Every channel with at least one local subscriber.
    pub fn channels(&self) -> Vec<ChannelName> {
        self.shards
            .iter()
            .flat_map(|s| s.read().keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Fans a message out to the channel's local subscribers. The frame is encoded at most
    /// once per codec; every subscriber gets a clone of the same `Bytes`. Never waits: a
    /// subscriber whose queue is full is aborted as a slow consumer. Returns the number
    /// of subscribers the frame was queued for.
    pub fn dispatch(&self, delivery: &Delivery) -> usize {
        let shard = self.shard(&delivery.channel).read();
        let Some(subs) = shard.get(&delivery.channel) else {
            return 0;
        };
        let frames: [OnceLock<Option<Bytes>>; 2] = Default::default();
        let mut delivered = 0;
        for conn in subs.values() {
            let slot = match conn.codec {
                Codec::Json => &frames[0],
                Codec::Msgpack => &frames[1],
            };
            let frame = slot.get_or_init(|| self.encode(conn.codec, delivery));
            let Some(frame) = frame else { continue };
            match conn.push(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(PushError::Full) => {
                    self.metrics.slow_consumers.inc();
                    tracing::info!(conn = %conn.id, channel = %delivery.channel, "slow consumer disconnected");
                    conn.abort(CloseCode::SlowConsumer);
                }
                Err(PushError::Closed) => {}
            }
        }
        self.metrics.messages_delivered.add(delivered as u64);
        delivered
    }

    fn encode(&self, codec: Codec, delivery: &Delivery) -> Option<Bytes> {
        match codec.encode_message(&delivery.channel, &delivery.data) {
            Ok(frame) => Some(frame),
            Err(error) => {
                // Data entered the node as validated JSON, so this is a bug, not bad input.
                self.metrics.messages_dropped_encode.inc();
                tracing::error!(%error, channel = %delivery.channel, ?codec, "cannot encode message");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Batch;

    fn hub() -> Hub {
        Hub::new(Arc::new(Metrics::default()))
    }

    #[test]
    fn first_and_last_subscriber() {
        let hub = hub();
        let ch = ChannelName::parse("c").unwrap();
        let a = Arc::new(Conn::new(Codec::Json, 1024, 16));
        let b = Arc::new(Conn::new(Codec::Msgpack, 1024, 16));
        assert!(hub.add(&ch, &a));
        assert!(!hub.add(&ch, &b));
        assert!(!hub.remove(&ch, a.id));
        assert!(!hub.remove(&ch, a.id));
        assert!(hub.remove(&ch, b.id));
        assert!(hub.channels().is_empty());
    }

    #[tokio::test]
    async fn one_frame_shared_per_codec_and_slow_consumer_aborted() {
        let hub = hub();
        let ch = ChannelName::parse("c").unwrap();
        let a = Arc::new(Conn::new(Codec::Json, 1024, 16));
        let b = Arc::new(Conn::new(Codec::Json, 1024, 16));
        let slow = Arc::new(Conn::new(Codec::Json, 1024, 1));
        for c in [&a, &b, &slow] {
            hub.add(&ch, c);
        }
        let d = Delivery {
            channel: ch.clone(),
            data: Bytes::from_static(b"1"),
        };
        assert_eq!(hub.dispatch(&d), 3);
        assert_eq!(hub.dispatch(&d), 2);
        assert!(slow.is_cancelled());
        let (Batch::Frames(fa), Batch::Frames(fb)) = (a.next_batch().await, b.next_batch().await)
        else {
            panic!("expected frames");
        };
        assert_eq!(fa.len(), 2);
        assert_eq!(fa[0].as_ptr(), fb[0].as_ptr(), "frame bytes are shared");
    }
}
