//! Presence, as the node runs it: it knows its own clients' memberships, writes them
//! through the presence port when they join and leave, refreshes them every third of the
//! TTL (so they outlive neither this node nor a lost Redis entry), and answers queries.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{Node, NodeError};
use crate::bus::presence::{Member, MemberPage};
use crate::channel::ChannelName;

impl Node {
    /// Whether the channel's namespace lists its members.
    pub fn has_presence(&self, channel: &ChannelName) -> bool {
        self.settings
            .namespace(channel.namespace())
            .is_some_and(|p| p.presence)
    }

    /// A client of this node joined a channel with presence.
    pub async fn presence_join(&self, channel: &ChannelName, client: String, info: Bytes) {
        let member = Member { client, info };
        self.members
            .lock()
            .entry(channel.clone())
            .or_default()
            .insert(member.client.clone(), member.info.clone());
        let joined = self
            .presence
            .join(channel, &member, self.settings.presence_ttl())
            .await;
        if let Err(error) = joined {
            // The next refresh adds it; until then it is missing from listings.
            let error = &error as &dyn std::error::Error;
            tracing::debug!(error, %channel, "presence join failed");
        }
    }

    /// A client of this node left a channel with presence (or disconnected).
    pub async fn presence_leave(&self, channel: &ChannelName, client: &str) {
        {
            let mut members = self.members.lock();
            if let Some(room) = members.get_mut(channel) {
                room.remove(client);
                if room.is_empty() {
                    members.remove(channel);
                }
            }
        }
        if let Err(error) = self.presence.leave(channel, client).await {
            // Its entry is not refreshed any more: it expires within the TTL.
            let error = &error as &dyn std::error::Error;
            tracing::debug!(error, %channel, "presence leave failed");
        }
    }

    pub async fn presence_members(
        &self,
        channel: &ChannelName,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<MemberPage, NodeError> {
        Ok(self.presence.members(channel, cursor, limit).await?)
    }

    pub async fn presence_count(&self, channel: &ChannelName) -> Result<u64, NodeError> {
        Ok(self.presence.count(channel).await?)
    }

    /// Refreshes every membership this node holds, one call per channel.
    async fn refresh_presence(&self) {
        let rooms: Vec<(ChannelName, Vec<Member>)> = self
            .members
            .lock()
            .iter()
            .map(|(channel, room)| {
                let members = room
                    .iter()
                    .map(|(client, info)| Member {
                        client: client.clone(),
                        info: info.clone(),
                    })
                    .collect();
                (channel.clone(), members)
            })
            .collect();
        let ttl = self.settings.presence_ttl();
        for (channel, members) in rooms {
            if let Err(error) = self.presence.refresh(&channel, &members, ttl).await {
                let error = &error as &dyn std::error::Error;
                tracing::debug!(error, %channel, "presence refresh failed");
            }
        }
    }
}

/// Runs the node's presence refresh until `stop`; holds the node only while refreshing.
pub(super) async fn refresh_loop(node: Weak<Node>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let Some(node) = node.upgrade() else { return };
        node.refresh_presence().await;
        drop::<Arc<Node>>(node);
    }
}
