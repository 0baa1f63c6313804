//! What an outbox keeps around a replay of history: the live messages of the channel being
//! replayed, held back until the replay is queued, and the seams where a replay meets the
//! live stream. Boxed in the queue: most connections never replay, or are done with it a
//! moment after they subscribe, and every queue would otherwise carry its 32 bytes.

use super::{Origin, Outgoing};
use crate::bus::StreamPosition;
use crate::channel::ChannelName;

#[derive(Default)]
pub(super) struct Replay {
    /// Live messages of a channel whose history is being replayed to this connection,
    /// kept back until the replay is queued. They count against the queue's bounds.
    held: Option<Held>,
    /// Replays whose live side has not caught up yet: the history read may have seen
    /// messages that are still on their way here through pub/sub. Until the first live
    /// message past the replay arrives, those at or before it are dropped.
    seams: Vec<(ChannelName, StreamPosition)>,
}

pub(super) struct Held {
    pub(super) channel: ChannelName,
    pub(super) frames: Vec<(Option<u64>, Outgoing)>,
    pub(super) bytes: usize,
}

impl Replay {
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_none() && self.seams.is_empty()
    }

    /// Whether a live message is one a replay already covered; the first one past the
    /// replay closes the seam.
    pub(super) fn covers(&mut self, origin: Origin<'_>) -> bool {
        let Some(at) = self.seams.iter().position(|(c, _)| c == origin.channel) else {
            return false;
        };
        let seam = &self.seams[at].1;
        let covered = origin
            .position
            .is_some_and(|p| p.epoch == seam.epoch && p.offset <= seam.offset);
        if !covered {
            self.seams.swap_remove(at);
        }
        covered
    }

    /// How many frames and bytes are held.
    pub(super) fn held(&self) -> (usize, usize) {
        self.held
            .as_ref()
            .map_or((0, 0), |h| (h.frames.len(), h.bytes))
    }

    /// Holds `outgoing` if its channel is held; hands it back otherwise.
    pub(super) fn hold(&mut self, origin: Origin<'_>, outgoing: Outgoing) -> Option<Outgoing> {
        match &mut self.held {
            Some(held) if held.channel == *origin.channel => {
                held.bytes += outgoing.frame.len();
                held.frames
                    .push((origin.position.map(|p| p.offset), outgoing));
                None
            }
            _ => Some(outgoing),
        }
    }

    pub(super) fn start_holding(&mut self, channel: &ChannelName) {
        self.held = Some(Held {
            channel: channel.clone(),
            frames: Vec::new(),
            bytes: 0,
        });
    }

    pub(super) fn take_held(&mut self) -> Option<Held> {
        self.held.take()
    }

    pub(super) fn add_seam(&mut self, channel: ChannelName, after: StreamPosition) {
        // Exact: most connections subscribe once, and an idle one keeps its seam until the
        // channel's next message (a doubling Vec held 4 for 1, 0.16 KiB).
        self.seams.reserve_exact(1);
        self.seams.push((channel, after));
    }
}
