//! Presence on Redis, through the `roomcast_presence_*` functions of `roomcast.lua`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Value;

use super::RedisBus;
use crate::bus::BusError;
use crate::bus::presence::{MAX_PAGE, Member, MemberPage, Presence};
use crate::channel::ChannelName;

impl RedisBus {
    fn fcall(&self, function: &str, channel: &ChannelName) -> redis::Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(function)
            .arg(1)
            .arg(self.shared.redis_name(channel));
        cmd
    }
}

fn ms(ttl: Duration) -> u64 {
    ttl.as_millis().max(1) as u64
}

#[async_trait]
impl Presence for RedisBus {
    async fn join(
        &self,
        channel: &ChannelName,
        member: &Member,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let mut publisher = self.publisher()?;
        self.fcall("roomcast_presence_join", channel)
            .arg(ms(ttl))
            .arg(&member.client)
            .arg(member.info.as_ref())
            .query_async::<i64>(&mut publisher)
            .await?;
        Ok(())
    }

    async fn leave(&self, channel: &ChannelName, client: &str) -> Result<(), BusError> {
        let mut publisher = self.publisher()?;
        self.fcall("roomcast_presence_leave", channel)
            .arg(client)
            .query_async::<i64>(&mut publisher)
            .await?;
        Ok(())
    }

    async fn refresh(
        &self,
        channel: &ChannelName,
        members: &[Member],
        ttl: Duration,
    ) -> Result<(), BusError> {
        let mut publisher = self.publisher()?;
        let mut cmd = self.fcall("roomcast_presence_refresh", channel);
        cmd.arg(ms(ttl));
        for m in members {
            cmd.arg(&m.client).arg(m.info.as_ref());
        }
        cmd.query_async::<i64>(&mut publisher).await?;
        Ok(())
    }

    async fn members(
        &self,
        channel: &ChannelName,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<MemberPage, BusError> {
        let mut publisher = self.publisher()?;
        let reply: Vec<Value> = self
            .fcall("roomcast_presence", channel)
            .arg(cursor.unwrap_or("0"))
            .arg(limit.clamp(1, MAX_PAGE))
            .query_async(&mut publisher)
            .await?;
        parse_page(reply)
    }

    async fn count(&self, channel: &ChannelName) -> Result<u64, BusError> {
        let mut publisher = self.publisher()?;
        Ok(self
            .fcall("roomcast_presence_count", channel)
            .query_async(&mut publisher)
            .await?)
    }
}

/// `{next cursor, client1, info1, ...}`; cursor "0" means the last page.
fn parse_page(reply: Vec<Value>) -> Result<MemberPage, BusError> {
    let malformed = || BusError::Malformed("roomcast_presence");
    let mut items = reply.into_iter();
    let next: String = items
        .next()
        .and_then(|v| redis::from_redis_value(v).ok())
        .ok_or_else(malformed)?;
    let mut members = Vec::new();
    while let (Some(client), Some(info)) = (items.next(), items.next()) {
        let client: String = redis::from_redis_value(client).map_err(|_| malformed())?;
        let info: Vec<u8> = redis::from_redis_value(info).map_err(|_| malformed())?;
        members.push(Member {
            client,
            info: Bytes::from(info),
        });
    }
    Ok(MemberPage {
        members,
        next: (next != "0").then_some(next),
    })
}
