//! Channel history, beside the bus: a bounded, expiring log per channel, where every
//! message has a strictly increasing offset within an epoch. Appending happens in
//! `Bus::publish` (atomically with the publish); reading is this trait's. Implemented in
//! memory (one node) and on Redis (a stream per channel, see `redis/roomcast.lua`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::envelope::Envelope;
use super::{BusError, StreamPosition};
use crate::channel::ChannelName;

/// Largest page a history read returns.
pub const MAX_PAGE: usize = 1000;

/// How much history a channel keeps: at most `size` messages, for `ttl` after the last
/// publish. From the channel's namespace policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    pub size: usize,
    pub ttl: Duration,
}

/// Which messages to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// Only the channel's current position.
    Position,
    /// Messages after this offset, oldest first.
    Since(u64),
    /// Messages before this offset, newest first.
    Before(u64),
    /// The newest messages, newest first.
    Last,
}

/// One message kept in history.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub offset: u64,
    pub envelope: Envelope,
}

/// What a read found: the channel's current position and the entries, in the order the
/// query names.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub top: StreamPosition,
    pub entries: Vec<Entry>,
}

impl Page {
    /// Whether `entries` (read with [`Query::Since`]) continue `from` without a hole, up to
    /// the channel's top: same epoch, nothing trimmed in between, nothing left unread.
    pub fn continues(&self, from: &StreamPosition) -> bool {
        if self.top.epoch != from.epoch || self.top.offset < from.offset {
            return false;
        }
        let mut next = from.offset + 1;
        for entry in &self.entries {
            if entry.offset != next {
                return false;
            }
            next += 1;
        }
        next == self.top.offset + 1
    }
}

#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Reads at most `limit` entries. Starts the channel's epoch if it has none, so that
    /// every subscriber learns a position.
    async fn read(
        &self,
        channel: &ChannelName,
        policy: &HistoryPolicy,
        query: Query,
        limit: usize,
    ) -> Result<Page, BusError>;
}

/// History kept in this process, for the memory bus.
#[derive(Default)]
pub struct MemoryHistory {
    logs: Mutex<HashMap<ChannelName, Log>>,
}

struct Log {
    epoch: Arc<str>,
    top: u64,
    entries: VecDeque<Entry>,
    /// The log is gone once `ttl` has passed since this, like an expired Redis key.
    touched: Instant,
    ttl: Duration,
}

impl Log {
    fn new(ttl: Duration) -> Self {
        Self {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            touched: Instant::now(),
            ttl,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.touched) > self.ttl
    }
}

/// The channel's log, started anew (a new epoch) when it has none or its TTL has passed,
/// like an expired Redis key.
fn live_log<'a>(
    logs: &'a mut HashMap<ChannelName, Log>,
    channel: &ChannelName,
    policy: &HistoryPolicy,
    now: Instant,
) -> &'a mut Log {
    let log = logs
        .entry(channel.clone())
        .or_insert_with(|| Log::new(policy.ttl));
    if log.expired(now) {
        *log = Log::new(policy.ttl);
    }
    log
}

/// A new epoch: the time it started, in hex, as the Redis library makes them, and a count
/// so that two epochs started in the same microsecond still differ.
fn new_epoch() -> Arc<str> {
    static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let us = crate::clock::unix_micros();
    Arc::from(format!("{:x}{:05x}{n:x}", us / 1_000_000, us % 1_000_000))
}

impl MemoryHistory {
    /// Appends a message; returns its position.
    pub fn append(
        &self,
        channel: &ChannelName,
        policy: &HistoryPolicy,
        envelope: &Envelope,
    ) -> StreamPosition {
        let now = Instant::now();
        let mut logs = self.logs.lock();
        // Expired logs are dropped as they are met, and all of them when the map has grown:
        // an idle channel's history costs nothing once its TTL has passed.
        if logs.len() >= 1024 && logs.len().is_power_of_two() {
            logs.retain(|_, log| !log.expired(now));
        }
        let log = live_log(&mut logs, channel, policy, now);
        log.top += 1;
        log.touched = now;
        log.ttl = policy.ttl;
        log.entries.push_back(Entry {
            offset: log.top,
            envelope: envelope.clone(),
        });
        while log.entries.len() > policy.size {
            log.entries.pop_front();
        }
        StreamPosition {
            offset: log.top,
            epoch: Arc::clone(&log.epoch),
        }
    }
}

#[async_trait]
impl History for MemoryHistory {
    async fn read(
        &self,
        channel: &ChannelName,
        policy: &HistoryPolicy,
        query: Query,
        limit: usize,
    ) -> Result<Page, BusError> {
        let now = Instant::now();
        let mut logs = self.logs.lock();
        let log = live_log(&mut logs, channel, policy, now);
        let limit = limit.min(MAX_PAGE);
        let entries: Vec<Entry> = match query {
            Query::Position => Vec::new(),
            Query::Since(after) => log
                .entries
                .iter()
                .filter(|e| e.offset > after)
                .take(limit)
                .cloned()
                .collect(),
            Query::Before(before) => log
                .entries
                .iter()
                .rev()
                .filter(|e| e.offset < before)
                .take(limit)
                .cloned()
                .collect(),
            Query::Last => log.entries.iter().rev().take(limit).cloned().collect(),
        };
        Ok(Page {
            top: StreamPosition {
                offset: log.top,
                epoch: Arc::clone(&log.epoch),
            },
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn policy(size: usize) -> HistoryPolicy {
        HistoryPolicy {
            size,
            ttl: Duration::from_secs(60),
        }
    }

    fn envelope(n: u8) -> Envelope {
        Envelope {
            data: Bytes::from(n.to_string()),
            ..Envelope::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_grow_the_log_is_bounded_and_expires_into_a_new_epoch() {
        let h = MemoryHistory::default();
        let ch = ChannelName::parse("c").unwrap();
        let p = policy(3);
        let first = h.append(&ch, &p, &envelope(1));
        assert_eq!(first.offset, 1);
        for n in 2..=5 {
            assert_eq!(h.append(&ch, &p, &envelope(n)).offset, u64::from(n));
        }
        let page = h.read(&ch, &p, Query::Since(0), 10).await.unwrap();
        let offsets: Vec<u64> = page.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [3, 4, 5], "the oldest were trimmed");
        assert!(!page.continues(&first), "offsets 2 and up were trimmed");
        let at_two = StreamPosition {
            offset: 2,
            epoch: first.epoch.clone(),
        };
        assert!(page.continues(&at_two));
        let newest = h.read(&ch, &p, Query::Last, 2).await.unwrap();
        assert_eq!(newest.entries[0].offset, 5);
        let before = h.read(&ch, &p, Query::Before(5), 10).await.unwrap();
        assert_eq!(before.entries.len(), 2);

        tokio::time::advance(Duration::from_secs(61)).await;
        let page = h.read(&ch, &p, Query::Since(0), 10).await.unwrap();
        assert_eq!(page.top.offset, 0);
        assert!(page.entries.is_empty());
        assert!(!page.continues(&at_two), "a new epoch after the TTL");
    }
}
