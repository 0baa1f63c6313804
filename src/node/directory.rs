//! What the node tells the cluster's directory and does on its orders: its channels'
//! subscriber counts every few seconds (what `/api/channels` adds up), and the closing of
//! a user's connections everywhere (`/api/disconnect`).

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Node, NodeError};
use crate::bus::directory::Control;
use crate::protocol::CloseCode;

/// How often a node reports its channels: `/api/channels` is at most this stale.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);
/// A report lasts this long: a node that stopped reporting (it died) drops out by then.
const REPORT_TTL: Duration = Duration::from_secs(10);

impl Node {
    /// Every channel with a subscriber on some node, with the total count.
    pub async fn channels(&self) -> Result<BTreeMap<String, u64>, NodeError> {
        Ok(self.directory.channels().await?)
    }

    /// Closes every connection of `user`, on every node (4004).
    pub async fn disconnect_user(&self, user: &str) -> Result<(), NodeError> {
        let control = Control::Disconnect {
            user: user.to_owned(),
        };
        Ok(self.directory.control(&control).await?)
    }

    /// An order from the directory, for this node's connections.
    pub(super) fn obey(&self, control: Control) {
        match control {
            Control::Disconnect { user } => {
                let conns: Vec<_> = self.conns.lock().values().cloned().collect();
                let mut closed = 0;
                for conn in conns.iter().filter(|c| c.user() == Some(user.as_str())) {
                    conn.close(CloseCode::Disconnected);
                    closed += 1;
                }
                tracing::info!(%user, closed, "disconnected a user's connections");
            }
        }
    }

    async fn report(&self) {
        let counts: Vec<_> = self
            .hub
            .channels()
            .into_iter()
            .map(|channel| {
                let n = self.hub.subscriber_count(&channel) as u64;
                (channel, n)
            })
            .collect();
        if let Err(error) = self.directory.report(&self.id, &counts, REPORT_TTL).await {
            tracing::debug!(%error, "cannot report channels to the directory");
        }
    }
}

/// Reports the node's channels until `stop`.
pub(super) async fn report_loop(node: Weak<Node>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(node) = node.upgrade() else { return };
        node.report().await;
    }
}
