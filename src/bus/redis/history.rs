//! History on Redis: reads through `roomcast_history` (see `roomcast.lua`), which returns
//! the channel's position and entries in one atomic step.

use async_trait::async_trait;
use redis::Value;

use super::RedisBus;
use crate::bus::envelope::Envelope;
use crate::bus::history::{Entry, History, HistoryPolicy, MAX_PAGE, Page, Query};
use crate::bus::{BusError, StreamPosition};
use crate::channel::ChannelName;

/// The library every node loads; its functions are documented for backends.
pub(super) const LIBRARY: &str = include_str!("roomcast.lua");

/// Loads (or replaces) the library on whatever `conn` reaches: one Redis, or, through a
/// cluster connection, every primary.
pub(super) async fn load_library(
    conn: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<()> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .query_async::<redis::Value>(conn)
        .await
        .map(drop)
}

#[async_trait]
impl History for RedisBus {
    async fn read(
        &self,
        channel: &ChannelName,
        policy: &HistoryPolicy,
        query: Query,
        limit: usize,
    ) -> Result<Page, BusError> {
        let mut publisher = self.publisher()?;
        let (mode, offset) = match query {
            Query::Position => ("none", 0),
            Query::Since(offset) => ("since", offset),
            Query::Before(offset) => ("before", offset),
            Query::Last => ("last", 0),
        };
        let reply: Vec<Value> = redis::cmd("FCALL")
            .arg("roomcast_history")
            .arg(1)
            .arg(self.shared.redis_name(channel))
            .arg(mode)
            .arg(offset)
            .arg(limit.min(MAX_PAGE))
            .arg(policy.size)
            .arg(policy.ttl.as_secs().max(1))
            .query_async(&mut publisher)
            .await?;
        parse(reply, self.shared.settings.max_envelope_bytes)
    }
}

/// `{top, epoch, offset1, envelope1, ...}`. An entry that is not a valid envelope, or is
/// larger than `max_envelope`, is skipped, as it would be live.
fn parse(reply: Vec<Value>, max_envelope: usize) -> Result<Page, BusError> {
    let malformed = || BusError::Malformed("roomcast_history");
    let mut items = reply.into_iter();
    let top: u64 = items
        .next()
        .and_then(|v| redis::from_redis_value(v).ok())
        .ok_or_else(malformed)?;
    let epoch: String = items
        .next()
        .and_then(|v| redis::from_redis_value(v).ok())
        .ok_or_else(malformed)?;
    let mut entries = Vec::new();
    while let (Some(offset), Some(envelope)) = (items.next(), items.next()) {
        let offset: u64 = redis::from_redis_value(offset).map_err(|_| malformed())?;
        let bytes: Vec<u8> = redis::from_redis_value(envelope).map_err(|_| malformed())?;
        if bytes.len() > max_envelope {
            continue;
        }
        if let Ok(envelope) = Envelope::decode(&bytes) {
            entries.push(Entry { offset, envelope });
        }
    }
    Ok(Page {
        top: StreamPosition {
            offset: top,
            epoch: epoch.into(),
        },
        entries,
    })
}
