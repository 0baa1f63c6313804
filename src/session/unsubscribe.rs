//! `unsubscribe`: stop receiving a channel's messages. Idempotent.

use super::{CommandError, Reply, Session};
use crate::channel::ChannelName;

impl Session {
    pub(super) async fn unsubscribe(
        &mut self,
        channel: ChannelName,
    ) -> Result<Reply, CommandError> {
        if !self.subscriptions.contains(&channel) {
            return Ok(None);
        }
        if !self.subscribe_budget.take(tokio::time::Instant::now()) {
            return Err(CommandError::SubscribeRateLimited);
        }
        if self.subscriptions.remove(&channel) {
            self.leave(&channel).await;
        }
        Ok(None)
    }
}
