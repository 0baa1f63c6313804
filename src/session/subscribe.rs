//! `subscribe`: start receiving a channel's messages; on a channel with history, from an
//! exact position, and with `recover`, after the messages missed since the client's last
//! position. Idempotent.

use bytes::Bytes;

use super::{CommandError, Reply, Session};
use crate::channel::ChannelName;
use crate::protocol::{Recover, ReplyData};

impl Session {
    pub(super) async fn subscribe(
        &mut self,
        channel: ChannelName,
        recover: Option<Recover>,
        info: Option<Bytes>,
        join_leave: bool,
    ) -> Result<Reply, CommandError> {
        let presence = self.policy(&channel)?.presence;
        if self.subscriptions.contains(&channel) {
            return Ok(None);
        }
        let max = self.node.settings.limits.max_subscriptions;
        if self.subscriptions.len() >= max {
            return Err(CommandError::TooManySubscriptions(max));
        }
        let max_info = self.node.settings.presence.max_info_bytes;
        if info.as_ref().is_some_and(|i| i.len() > max_info) {
            return Err(CommandError::InfoTooLarge(max_info));
        }
        let subscribed = self
            .node
            .subscribe(&channel, &self.conn, recover.as_ref())
            .await?;
        if presence {
            if join_leave {
                self.node.hub.watch(&channel, &self.conn);
            }
            let info = info.unwrap_or_else(|| Bytes::from_static(b"null"));
            self.node
                .presence_join(&channel, self.client_id(), info)
                .await;
        }
        self.subscriptions.insert(channel);
        Ok(subscribed.position.map(|p| ReplyData::Position {
            offset: p.offset,
            epoch: p.epoch.to_string(),
            recovered: subscribed.recovered,
        }))
    }
}
