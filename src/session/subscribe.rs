//! `subscribe`: start receiving a channel's messages; on a channel with history, from an
//! exact position, and with `recover`, after the messages missed since the client's last
//! position. Idempotent.

use super::{CommandError, Reply, Session};
use crate::channel::ChannelName;
use crate::protocol::{Recover, ReplyData};

impl Session {
    pub(super) async fn subscribe(
        &mut self,
        channel: ChannelName,
        recover: Option<Recover>,
    ) -> Result<Reply, CommandError> {
        self.policy(&channel)?;
        if self.subscriptions.contains(&channel) {
            return Ok(None);
        }
        let max = self.node.settings.limits.max_subscriptions;
        if self.subscriptions.len() >= max {
            return Err(CommandError::TooManySubscriptions(max));
        }
        let subscribed = self
            .node
            .subscribe(&channel, &self.conn, recover.as_ref())
            .await?;
        self.subscriptions.insert(channel);
        Ok(subscribed.position.map(|p| ReplyData::Position {
            offset: p.offset,
            epoch: p.epoch.to_string(),
            recovered: subscribed.recovered,
        }))
    }
}
