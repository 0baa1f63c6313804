//! The local subscription index: channel → this node's subscribers, sharded to keep lock
//! contention low, and the fan-out of one message to them. Knows nothing of the bus.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::OnceLock;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::bus::envelope::Envelope;
use crate::channel::ChannelName;
use crate::conn::{Conn, ConnId, PushError};
use crate::metrics::{DropReason, Metrics};
use crate::protocol::{CloseCode, Codec, ServerMsg};

const SHARDS: usize = 64;

type Subscribers = HashMap<ConnId, Arc<Conn>>;

pub struct Hub {
    /// Read-mostly: fan-out takes a read lock, (un)subscribe a write lock, briefly.
    /// Never held across an `.await`.
    shards: Box<[RwLock<HashMap<ChannelName, Subscribers>>]>,
    hasher: std::collections::hash_map::RandomState,
    metrics: Arc<Metrics>,
    /// Ids of recent messages that carried one, to drop a backend's retried publish.
    recent_ids: Mutex<RecentIds>,
}

/// How many message ids the node remembers for duplicate detection.
const RECENT_IDS: usize = 16_384;

#[derive(Default)]
struct RecentIds {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentIds {
    /// Records a key; false when it was already there.
    fn insert(&mut self, key: u64) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// One message as the hub fans it out: the channel and its envelope.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub channel: ChannelName,
    pub envelope: Envelope,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: Default::default(),
            metrics,
            recent_ids: Mutex::new(RecentIds::default()),
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
        if let Some(id) = &delivery.envelope.id {
            let key = self
                .hasher
                .hash_one((delivery.channel.as_str(), id.as_str()));
            if !self.recent_ids.lock().insert(key) {
                self.metrics.dropped(DropReason::Duplicate, 1);
                return 0;
            }
        }
        // One span per message and node, never per subscriber; it continues the trace the
        // message carries, so a publish and every node's fan-out form one trace.
        let span = tracing::info_span!(
            "roomcast.fanout",
            channel = %delivery.channel,
            subscribers = tracing::field::Empty,
            bytes = tracing::field::Empty,
        );
        if let Some(tp) = &delivery.envelope.traceparent {
            crate::telemetry::continue_trace(&span, tp);
        }
        let _entered = span.enter();
        let published_ms = delivery.envelope.ts.unwrap_or(0);
        let encoded = std::cell::Cell::new(0);
        let delivered = self.fan_out(&delivery.channel, published_ms, |codec| {
            match codec.encode_message(&delivery.channel, &delivery.envelope.data) {
                Ok(frame) => {
                    encoded.set(frame.len());
                    Some(frame)
                }
                Err(error) => {
                    // Data entered the cluster as validated JSON, so this is a bug.
                    self.metrics.dropped(DropReason::Encode, 1);
                    tracing::error!(%error, channel = %delivery.channel, ?codec, "cannot encode message");
                    None
                }
            }
        });
        self.metrics.messages_delivered.add(delivered as u64);
        span.record("subscribers", delivered);
        span.record("bytes", encoded.get());
        delivered
    }

    /// Tells the channel's local subscribers that messages may have been lost.
    pub fn gap(&self, channel: &ChannelName) -> usize {
        self.fan_out(channel, 0, |codec| {
            Some(codec.encode(&ServerMsg::Gap {
                channel: channel.as_str(),
            }))
        })
    }

    fn fan_out(
        &self,
        channel: &ChannelName,
        published_ms: u64,
        encode: impl Fn(Codec) -> Option<Bytes>,
    ) -> usize {
        let shard = self.shard(channel).read();
        let Some(subs) = shard.get(channel) else {
            return 0;
        };
        let frames: [OnceLock<Option<Bytes>>; 2] = Default::default();
        let mut queued = 0;
        for conn in subs.values() {
            let slot = match conn.codec {
                Codec::Json => &frames[0],
                Codec::Msgpack => &frames[1],
            };
            let Some(frame) = slot.get_or_init(|| encode(conn.codec)) else {
                continue;
            };
            match conn.push_message(frame.clone(), published_ms) {
                Ok(()) => queued += 1,
                Err(PushError::Full) => {
                    self.metrics.slow_consumers.inc();
                    tracing::info!(conn = %conn.id, %channel, "slow consumer disconnected");
                    conn.abort(CloseCode::SlowConsumer);
                }
                Err(PushError::Closed) => self.metrics.dropped(DropReason::Closing, 1),
            }
        }
        queued
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
        let a = Arc::new(Conn::new(Codec::Json, 1024, 16, Arc::default()));
        let b = Arc::new(Conn::new(Codec::Msgpack, 1024, 16, Arc::default()));
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
        let a = Arc::new(Conn::new(Codec::Json, 1024, 16, Arc::default()));
        let b = Arc::new(Conn::new(Codec::Json, 1024, 16, Arc::default()));
        let slow = Arc::new(Conn::new(Codec::Json, 1024, 1, Arc::default()));
        for c in [&a, &b, &slow] {
            hub.add(&ch, c);
        }
        let d = Delivery {
            channel: ch.clone(),
            envelope: Envelope {
                data: Bytes::from_static(b"1"),
                ..Default::default()
            },
        };
        assert_eq!(hub.dispatch(&d), 3);
        assert_eq!(hub.dispatch(&d), 2);
        assert!(slow.is_cancelled());
        let (Batch::Frames(fa), Batch::Frames(fb)) = (a.next_batch().await, b.next_batch().await)
        else {
            panic!("expected frames");
        };
        assert_eq!(fa.len(), 2);
        assert_eq!(
            fa[0].frame.as_ptr(),
            fb[0].frame.as_ptr(),
            "frame bytes are shared"
        );
    }

    #[test]
    fn repeated_ids_are_dropped() {
        let hub = hub();
        let ch = ChannelName::parse("c").unwrap();
        let a = Arc::new(Conn::new(Codec::Json, 1 << 20, 1 << 10, Arc::default()));
        hub.add(&ch, &a);
        let with_id = |id: &str| Delivery {
            channel: ch.clone(),
            envelope: Envelope {
                data: Bytes::from_static(b"1"),
                id: Some(id.into()),
                ..Default::default()
            },
        };
        assert_eq!(hub.dispatch(&with_id("x")), 1);
        assert_eq!(hub.dispatch(&with_id("x")), 0);
        assert_eq!(hub.dispatch(&with_id("y")), 1);
    }
}
