//! `subscribe`: start receiving a channel's messages. Idempotent.

use super::{CommandError, Reply, Session};
use crate::channel::ChannelName;

impl Session {
    pub(super) async fn subscribe(&mut self, channel: ChannelName) -> Result<Reply, CommandError> {
        self.policy(&channel)?;
        if self.subscriptions.contains(&channel) {
            return Ok(None);
        }
        let max = self.node.settings.limits.max_subscriptions;
        if self.subscriptions.len() >= max {
            return Err(CommandError::TooManySubscriptions(max));
        }
        self.node.subscribe(&channel, &self.conn).await?;
        self.subscriptions.insert(channel);
        Ok(None)
    }
}
