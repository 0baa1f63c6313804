//! `publish`: send data to every subscriber of a channel, cluster-wide, where the
//! namespace lets clients publish, within the size limit and the connection's budget.

use bytes::Bytes;
use tokio::time::Instant;

use super::access::Access;
use super::{CommandError, Reply, Session};
use crate::channel::ChannelName;
use crate::protocol::ReplyData;

impl Session {
    pub(super) async fn publish(
        &mut self,
        channel: ChannelName,
        data: Bytes,
    ) -> Result<Reply, CommandError> {
        self.authorize(Access::Publish, &channel, None)?;
        if data.len() > self.node.settings.limits.max_message_size {
            return Err(CommandError::TooLarge);
        }
        if !self.publish_budget.take(Instant::now()) {
            return Err(CommandError::RateLimited);
        }
        let published = self.node.publish(&channel, data).await?;
        Ok(published.position.map(|p| ReplyData::Position {
            offset: p.offset,
            epoch: p.epoch.to_string(),
            recovered: None,
        }))
    }
}
