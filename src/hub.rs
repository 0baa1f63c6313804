//! The local subscription index: channel → this node's subscribers, sharded to keep lock
//! contention low, and the fan-out of one push to them, encoded once per wire format.
//! Knows nothing of the bus, of envelopes or of tracing: the node decides what to push.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::OnceLock;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::bus::StreamPosition;
use crate::channel::ChannelName;
use crate::conn::{Conn, ConnId, Origin, PushError};
use crate::metrics::{DropReason, Metrics};
use crate::protocol::Push;
use crate::wire::WireFormat;

const SHARDS: usize = 64;

/// A channel's local subscribers, and where its history stands as far as this node has
/// delivered it (what the node resumes from after a bus outage).
#[derive(Default)]
struct Channel {
    subs: HashMap<ConnId, Arc<Conn>>,
    /// The subscribers that asked for `join` and `leave` pushes; empty unless some did,
    /// so a large room pays for them only where they are wanted.
    watchers: HashMap<ConnId, Arc<Conn>>,
    /// Written on each positioned message under the shard's read lock, hence its own lock:
    /// uncontended (one fan-out at a time per channel), never held across an `.await`.
    last: Mutex<Option<StreamPosition>>,
}

pub struct Hub {
    /// Read-mostly: fan-out takes a read lock, (un)subscribe a write lock, briefly.
    /// Never held across an `.await`.
    shards: Box<[RwLock<HashMap<ChannelName, Channel>>]>,
    hasher: std::collections::hash_map::RandomState,
    metrics: Arc<Metrics>,
}

/// What one fan-out did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Subscribers the push was queued for.
    pub queued: usize,
    /// Size of the last frame encoded (one wire format's), for tracing.
    pub frame_bytes: usize,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: Default::default(),
            metrics,
        }
    }

    fn shard(&self, channel: &ChannelName) -> &RwLock<HashMap<ChannelName, Channel>> {
        &self.shards[self.hasher.hash_one(channel) as usize % SHARDS]
    }

    /// Adds a subscriber; returns true when it is the channel's first on this node.
    pub fn add(&self, channel: &ChannelName, conn: &Arc<Conn>) -> bool {
        let mut shard = self.shard(channel).write();
        let first = !shard.contains_key(channel);
        shard
            .entry(channel.clone())
            .or_default()
            .subs
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
        let Some(entry) = shard.get_mut(channel) else {
            return false;
        };
        entry.watchers.remove(&conn);
        if entry.subs.remove(&conn).is_none() {
            return false;
        }
        if entry.subs.is_empty() {
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
            .map_or(0, |entry| entry.subs.len())
    }

    /// Sends `join` and `leave` pushes of `channel` to a subscriber too.
    pub fn watch(&self, channel: &ChannelName, conn: &Arc<Conn>) {
        if let Some(entry) = self.shard(channel).write().get_mut(channel)
            && entry.subs.contains_key(&conn.id)
        {
            entry.watchers.insert(conn.id, Arc::clone(conn));
        }
    }

    /// The position of the last message delivered on `channel` here, if it keeps history.
    pub fn last_position(&self, channel: &ChannelName) -> Option<StreamPosition> {
        let shard = self.shard(channel).read();
        shard
            .get(channel)
            .and_then(|entry| entry.last.lock().clone())
    }

    /// Starts `channel`'s position here, where nothing was delivered on it yet: the point
    /// its first subscriber starts from. Never moves a known position: older subscribers
    /// may still be waiting for messages the read already saw.
    pub fn start_position(&self, channel: &ChannelName, position: &StreamPosition) {
        if let Some(entry) = self.shard(channel).read().get(channel) {
            let mut last = entry.last.lock();
            if last.is_none() {
                *last = Some(position.clone());
            }
        }
    }

    /// Every channel with at least one local subscriber.
    pub fn channels(&self) -> Vec<ChannelName> {
        self.shards
            .iter()
            .flat_map(|s| s.read().keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Queues a push for every local subscriber of `channel`. The frame is encoded at most
    /// once per wire format; every subscriber of that format gets a clone of the same
    /// `Bytes`. Never waits: a subscriber whose queue overflows is cut off by its outbox.
    /// `published_ms` (0 for none) feeds the publish-to-write latency.
    pub fn fan_out(&self, channel: &ChannelName, push: &Push<'_>, published_ms: u64) -> FanOut {
        let shard = self.shard(channel).read();
        let Some(entry) = shard.get(channel) else {
            return FanOut::default();
        };
        let mut origin = None;
        if let Push::Message { position, .. } = push {
            if let Some(position) = position
                && !advance(&entry.last, position)
            {
                // Already delivered here: pub/sub brought it after a recovery read did.
                self.metrics.dropped(DropReason::Duplicate, 1);
                return FanOut::default();
            }
            origin = Some(Origin {
                channel,
                position: *position,
            });
        }
        let to = match push {
            Push::Join { .. } | Push::Leave { .. } => &entry.watchers,
            Push::Message { .. } | Push::Gap { .. } => &entry.subs,
        };
        let frames: [OnceLock<Option<Bytes>>; WireFormat::COUNT] = Default::default();
        let mut out = FanOut::default();
        for conn in to.values() {
            let slot = &frames[conn.wire.index()];
            let Some(frame) = slot.get_or_init(|| self.encode(conn.wire, channel, push)) else {
                continue;
            };
            out.frame_bytes = frame.len();
            match conn.push_message(frame.clone(), published_ms, origin) {
                Ok(()) => out.queued += 1,
                Err(PushError::Overflowed) => {}
                Err(PushError::Closed) => self.metrics.dropped(DropReason::Closing, 1),
            }
        }
        out
    }

    /// Encodes a push for one wire format; a failure is counted and logged, not fatal.
    pub fn encode(
        &self,
        wire: WireFormat,
        channel: &ChannelName,
        push: &Push<'_>,
    ) -> Option<Bytes> {
        match wire.push(push) {
            Ok(frame) => Some(frame),
            Err(error) => {
                // Data entered the cluster as validated JSON, so this is a bug.
                self.metrics.dropped(DropReason::Encode, 1);
                tracing::error!(error = &error as &dyn std::error::Error, %channel, ?wire, "cannot encode a push");
                None
            }
        }
    }
}

/// Moves a channel's position to `position`; false when it is not past the one there (in
/// the same epoch): that message was delivered already.
fn advance(last: &Mutex<Option<StreamPosition>>, position: &StreamPosition) -> bool {
    let mut last = last.lock();
    let behind = match &*last {
        Some(at) => at.epoch != position.epoch || at.offset < position.offset,
        None => true,
    };
    if behind {
        *last = Some(position.clone());
    }
    behind
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Batch;
    use crate::protocol::Codec;

    fn hub() -> Hub {
        Hub::new(Arc::new(Metrics::default()))
    }

    fn conn(codec: Codec, max_frames: usize) -> Arc<Conn> {
        let wire = WireFormat::websocket(codec);
        Arc::new(Conn::new(wire, 1024, max_frames, Arc::default()))
    }

    #[test]
    fn first_and_last_subscriber() {
        let hub = hub();
        let ch = ChannelName::parse("c").unwrap();
        let a = conn(Codec::Json, 16);
        let b = conn(Codec::Msgpack, 16);
        assert!(hub.add(&ch, &a));
        assert!(!hub.add(&ch, &b));
        assert!(!hub.remove(&ch, a.id));
        assert!(!hub.remove(&ch, a.id));
        assert!(hub.remove(&ch, b.id));
        assert!(hub.channels().is_empty());
    }

    #[tokio::test]
    async fn one_frame_shared_per_wire_format_and_slow_consumer_aborted() {
        let hub = hub();
        let ch = ChannelName::parse("c").unwrap();
        let a = conn(Codec::Json, 16);
        let b = conn(Codec::Json, 16);
        let slow = conn(Codec::Json, 1);
        let packed = conn(Codec::Msgpack, 16);
        for c in [&a, &b, &slow, &packed] {
            hub.add(&ch, c);
        }
        let push = Push::Message {
            channel: &ch,
            data: b"1",
            position: None,
        };
        assert_eq!(hub.fan_out(&ch, &push, 0).queued, 4);
        assert_eq!(hub.fan_out(&ch, &push, 0).queued, 3);
        assert!(slow.is_cancelled());
        let frames = |batch| match batch {
            Batch::Frames(f) => f,
            Batch::Close(_) | Batch::Ended => panic!("expected frames"),
        };
        let fa = frames(a.next_batch().await);
        let fb = frames(b.next_batch().await);
        let fp = frames(packed.next_batch().await);
        assert_eq!(fa.len(), 2);
        assert_eq!(
            fa[0].frame.as_ptr(),
            fb[0].frame.as_ptr(),
            "frame bytes are shared within a wire format"
        );
        assert_ne!(fa[0].frame, fp[0].frame, "each format has its own frame");
    }

    #[test]
    fn a_message_delivered_already_is_dropped() {
        let hub = hub();
        let ch = ChannelName::parse("c").unwrap();
        let a = conn(Codec::Json, 16);
        hub.add(&ch, &a);
        let at = |offset| crate::bus::StreamPosition {
            offset,
            epoch: "e".into(),
        };
        let push = |position| Push::Message {
            channel: &ch,
            data: b"1",
            position: Some(position),
        };
        hub.start_position(&ch, &at(3));
        hub.start_position(&ch, &at(9)); // a later read never moves a known position
        let (three, four) = (at(3), at(4));
        assert_eq!(hub.fan_out(&ch, &push(&three), 0).queued, 0, "at the start");
        assert_eq!(hub.fan_out(&ch, &push(&four), 0).queued, 1);
        assert_eq!(hub.fan_out(&ch, &push(&four), 0).queued, 0, "again");
        let other_epoch = crate::bus::StreamPosition {
            offset: 1,
            epoch: "f".into(),
        };
        assert_eq!(hub.fan_out(&ch, &push(&other_epoch), 0).queued, 1);
        assert_eq!(hub.last_position(&ch), Some(other_epoch));
    }
}
