//! `subscribe`: start receiving a channel's messages; on a channel with history, from an
//! exact position, and with `recover`, after the messages missed since the client's last
//! position. Idempotent.

use bytes::Bytes;
use tokio::time::Instant;

use super::access::Access;
use super::{CommandError, Reply, Session};
use crate::channel::ChannelName;
use crate::protocol::{Recover, ReplyData};

/// What a `subscribe` asks for besides the channel.
pub struct Options {
    pub recover: Option<Recover>,
    /// Presence info (JSON text); a token's `info` takes its place.
    pub info: Option<Bytes>,
    pub join_leave: bool,
    /// A private channel's token.
    pub token: Option<String>,
}

impl Session {
    pub(super) async fn subscribe(
        &mut self,
        channel: ChannelName,
        options: Options,
    ) -> Result<Reply, CommandError> {
        if self.subscriptions.contains(&channel) {
            self.policy(&channel)?;
            return Ok(None);
        }
        let presence = self
            .authorize(Access::Subscribe, &channel, options.token.as_deref())?
            .presence;
        let max = self.node.settings.limits.max_subscriptions;
        if self.subscriptions.len() >= max {
            return Err(CommandError::TooManySubscriptions(max));
        }
        let max_info = self.node.settings.presence.max_info_bytes;
        if options.info.as_ref().is_some_and(|i| i.len() > max_info) {
            return Err(CommandError::InfoTooLarge(max_info));
        }
        if !self.subscribe_budget.take(Instant::now()) {
            return Err(CommandError::SubscribeRateLimited);
        }
        let subscribed = self
            .node
            .subscribe(&channel, &self.conn, options.recover.as_ref())
            .await?;
        if presence && options.join_leave {
            self.node.hub.watch(&channel, &self.conn);
        }
        if presence && !self.transient {
            // What the backend signed wins over what the client says about itself.
            let token_info = self.identity.as_ref().and_then(|i| i.info.clone());
            let info = token_info
                .or(options.info)
                .unwrap_or_else(|| Bytes::from_static(b"null"));
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
