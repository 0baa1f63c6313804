//! `presence`: a page of a channel's members (client id and info), cluster-wide;
//! `presence_count`: how many there are, cheap for rooms of any size.

use super::access::Access;
use super::{CommandError, Reply, Session};
use crate::bus::presence::MAX_PAGE;
use crate::channel::ChannelName;
use crate::protocol::{JsonText, PresenceItem, ReplyData};

/// Members a `presence` reply carries when the request gives no `limit`.
const DEFAULT_LIMIT: usize = 100;

impl Session {
    fn check_presence(&self, channel: &ChannelName) -> Result<(), CommandError> {
        if self.authorize(Access::Presence, channel, None)?.presence {
            Ok(())
        } else {
            Err(CommandError::NoPresence(channel.namespace().to_string()))
        }
    }

    pub(super) async fn presence(
        &mut self,
        channel: ChannelName,
        cursor: Option<String>,
        limit: Option<u64>,
    ) -> Result<Reply, CommandError> {
        self.check_presence(&channel)?;
        let limit = limit.map_or(DEFAULT_LIMIT, |l| l.clamp(1, MAX_PAGE as u64) as usize);
        let page = self
            .node
            .presence_members(&channel, cursor.as_deref(), limit)
            .await?;
        let clients = page
            .members
            .into_iter()
            .map(|m| PresenceItem {
                client: m.client,
                info: JsonText(m.info),
            })
            .collect();
        Ok(Some(ReplyData::Presence {
            clients,
            cursor: page.next,
        }))
    }

    pub(super) async fn presence_count(
        &mut self,
        channel: ChannelName,
    ) -> Result<Reply, CommandError> {
        self.check_presence(&channel)?;
        let count = self.node.presence_count(&channel).await?;
        Ok(Some(ReplyData::Count { count }))
    }
}
