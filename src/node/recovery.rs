//! Nothing lost on reconnect. Two cases, one rule (replay what was missed from history,
//! hold live messages meanwhile, then let through only those past the replay):
//! - a client subscribes with the position it got to: its outbox holds the channel back
//!   while the node queues what it missed;
//! - this node's bus link comes back after an outage: the node holds the channel back for
//!   all its local subscribers while it reads what they missed, and fans that out first.
//!
//! Without history, or when the history no longer reaches back (trimmed, expired, another
//! epoch), clients are told so: `recovered: false`, or a `gap` push.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Node, NodeError};
use crate::bus::envelope::Envelope;
use crate::bus::history::{HistoryPolicy, MAX_PAGE, Page, Query};
use crate::bus::{BusError, StreamPosition};
use crate::channel::ChannelName;
use crate::conn::Conn;
use crate::metrics::DropReason;
use crate::protocol::{Push, Recover};

/// Where a new subscription starts, and whether the client's missed messages were found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscribed {
    /// The channel's position when the subscription started: every later message comes
    /// live. `None` without history, or while the history cannot be read.
    pub position: Option<StreamPosition>,
    /// For a subscribe that asked to recover: whether everything missed was replayed.
    pub recovered: Option<bool>,
}

impl Node {
    /// Subscribes a connection. On a channel with history, the reply's position is exact:
    /// every message after it reaches the client, and with `recover`, every message
    /// between the client's position and it is replayed first, in order, once.
    pub async fn subscribe(
        &self,
        channel: &ChannelName,
        conn: &Arc<Conn>,
        recover: Option<&Recover>,
    ) -> Result<Subscribed, NodeError> {
        let Some(policy) = self.history_policy(channel) else {
            self.add_subscriber(channel, conn).await?;
            return Ok(Subscribed {
                position: None,
                recovered: recover.map(|_| false),
            });
        };
        conn.hold(channel);
        if let Err(error) = self.add_subscriber(channel, conn).await {
            conn.release(None);
            return Err(error);
        }
        let from = recover.map(|r| StreamPosition {
            offset: r.offset,
            epoch: r.epoch.as_str().into(),
        });
        let page = match &from {
            Some(from) => self.read_since(channel, &policy, from.offset).await,
            None => {
                self.history
                    .read(channel, &policy, Query::Position, 0)
                    .await
            }
        };
        let Ok(page) = page else {
            // Subscribed live, but where it starts is unknown: the client learns that much.
            conn.release(None);
            return Ok(Subscribed {
                position: None,
                recovered: recover.map(|_| false),
            });
        };
        self.hub.start_position(channel, &page.top);
        let recovered = from.map(|from| page.continues(&from));
        if recovered == Some(true) {
            self.replay_to(conn, channel, &page);
        }
        conn.release(Some(&page.top));
        Ok(Subscribed {
            position: Some(page.top),
            recovered,
        })
    }

    /// Every entry after `offset`, page by page, up to the channel's top as the last page
    /// saw it; at most the policy's size (more was trimmed anyway).
    async fn read_since(
        &self,
        channel: &ChannelName,
        policy: &HistoryPolicy,
        offset: u64,
    ) -> Result<Page, BusError> {
        let mut page = self
            .history
            .read(channel, policy, Query::Since(offset), MAX_PAGE)
            .await?;
        while page.entries.len() < policy.size + 1 {
            let Some(last) = page.entries.last().map(|e| e.offset) else {
                break;
            };
            if last >= page.top.offset {
                break;
            }
            let next = self
                .history
                .read(channel, policy, Query::Since(last), MAX_PAGE)
                .await?;
            if next.entries.is_empty() || next.top.epoch != page.top.epoch {
                break;
            }
            page.top = next.top;
            page.entries.extend(next.entries);
        }
        Ok(page)
    }

    /// Queues replayed messages for one connection, bypassing its hold.
    fn replay_to(&self, conn: &Conn, channel: &ChannelName, page: &Page) {
        for entry in &page.entries {
            let position = StreamPosition {
                offset: entry.offset,
                epoch: Arc::clone(&page.top.epoch),
            };
            let push = Push::Message {
                channel,
                data: &entry.envelope.data,
                position: Some(&position),
            };
            let Some(frame) = self.hub.encode(conn.wire, channel, &push) else {
                continue;
            };
            if conn.push(frame).is_err() {
                return;
            }
        }
    }

    /// Live messages of a channel being recovered wait here; true when `envelope` did.
    pub(super) fn held_for_recovery(&self, channel: &ChannelName, envelope: &Envelope) -> bool {
        if self.recovering_count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut recovering = self.recovering.lock();
        match recovering.get_mut(channel) {
            Some(held) => {
                held.push(envelope.clone());
                true
            }
            None => false,
        }
    }

    /// After a bus outage: reads what `channel`'s subscribers here missed since `last` and
    /// fans it out before any live message, or tells them `gap` if that is not possible.
    /// Live messages are held from now on, so call this before the bus delivers again.
    pub(super) fn recover_channel(
        &self,
        channel: ChannelName,
        policy: HistoryPolicy,
        last: StreamPosition,
    ) {
        let Some(node) = self.me.upgrade() else {
            return;
        };
        if self
            .recovering
            .lock()
            .insert(channel.clone(), Vec::new())
            .is_none()
        {
            self.recovering_count.fetch_add(1, Ordering::AcqRel);
        }
        self.tasks.spawn(async move {
            let read = node.read_since(&channel, &policy, last.offset).await;
            let through = match read {
                Ok(page) if page.continues(&last) => {
                    node.metrics
                        .recovered_messages
                        .add(page.entries.len() as u64);
                    for entry in page.entries {
                        let mut envelope = entry.envelope;
                        envelope.position = Some(StreamPosition {
                            offset: entry.offset,
                            epoch: Arc::clone(&page.top.epoch),
                        });
                        node.fan_out_message(&channel, &envelope);
                    }
                    Some(page.top)
                }
                Ok(_) | Err(_) => {
                    node.gap(&channel);
                    None
                }
            };
            node.finish_recovery(&channel, through.as_ref());
        });
    }

    /// Lets the held messages through (those past `through`, when the replay reached it)
    /// and stops holding the channel.
    fn finish_recovery(&self, channel: &ChannelName, through: Option<&StreamPosition>) {
        let mut recovering = self.recovering.lock();
        let Some(held) = recovering.remove(channel) else {
            return;
        };
        self.recovering_count.fetch_sub(1, Ordering::AcqRel);
        for envelope in held {
            let replayed = match (&envelope.position, through) {
                (Some(p), Some(t)) => p.epoch == t.epoch && p.offset <= t.offset,
                _ => false,
            };
            if replayed {
                self.metrics.dropped(DropReason::Duplicate, 1);
                continue;
            }
            // Under the lock on purpose: nothing may overtake these.
            self.fan_out_message(channel, &envelope);
        }
    }
}
