//! `unsubscribe`: stop receiving a channel's messages. Idempotent.

use super::{CommandError, Reply, Session};
use crate::channel::ChannelName;

impl Session {
    pub(super) async fn unsubscribe(
        &mut self,
        channel: ChannelName,
    ) -> Result<Reply, CommandError> {
        if self.subscriptions.remove(&channel) {
            self.leave(&channel).await;
        }
        Ok(None)
    }
}
