//! `history`: a page of a channel's history, oldest first: the newest messages, or those
//! after `since` or before `before`; at most `limit` (default 50, at most 1,000).

use super::access::Access;
use super::{CommandError, Reply, Session};
use crate::bus::history::{MAX_PAGE, Query};
use crate::channel::ChannelName;
use crate::protocol::{HistoryItem, JsonText, ReplyData};

/// Messages a `history` reply carries when the request gives no `limit`.
const DEFAULT_LIMIT: usize = 50;

impl Session {
    pub(super) async fn history(
        &mut self,
        channel: ChannelName,
        since: Option<u64>,
        before: Option<u64>,
        limit: Option<u64>,
    ) -> Result<Reply, CommandError> {
        let policy = self
            .authorize(Access::History, &channel, None)?
            .history()
            .ok_or_else(|| CommandError::NoHistory(channel.namespace().to_string()))?;
        let limit = limit.map_or(DEFAULT_LIMIT, |l| l.min(MAX_PAGE as u64) as usize);
        let query = match (since, before) {
            (Some(since), _) => Query::Since(since),
            (None, Some(before)) => Query::Before(before),
            (None, None) => Query::Last,
        };
        let page = self.node.history(&channel, &policy, query, limit).await?;
        let mut entries = page.entries;
        if !matches!(query, Query::Since(_)) {
            entries.reverse();
        }
        let messages = entries
            .into_iter()
            .map(|e| HistoryItem {
                offset: e.offset,
                data: JsonText(e.envelope.data),
            })
            .collect();
        Ok(Some(ReplyData::History {
            offset: page.top.offset,
            epoch: page.top.epoch.to_string(),
            messages,
        }))
    }
}
