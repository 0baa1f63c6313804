//! Duplicate suppression for messages that carry an `id`: a backend may retry a publish,
//! and the node delivers the message once. Remembers the last [`RECENT_IDS`] ids seen.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;

use parking_lot::Mutex;

use crate::channel::ChannelName;

/// How many message ids the node remembers for duplicate detection.
pub const RECENT_IDS: usize = 16_384;

#[derive(Default)]
pub struct RecentIds {
    /// Ids are remembered by a keyed hash of (channel, id): fixed size, whatever the id.
    hasher: std::collections::hash_map::RandomState,
    /// Locked once per message that carries an id, never across an `.await`.
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentIds {
    /// Records `id` on `channel`; false when it was seen recently.
    pub fn first_time(&self, channel: &ChannelName, id: &str) -> bool {
        let key = self.hasher.hash_one((channel.as_str(), id));
        let mut seen = self.seen.lock();
        if !seen.set.insert(key) {
            return false;
        }
        seen.order.push_back(key);
        if seen.order.len() > RECENT_IDS
            && let Some(old) = seen.order.pop_front()
        {
            seen.set.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ids_are_refused_per_channel() {
        let ids = RecentIds::default();
        let a = ChannelName::parse("a").unwrap();
        let b = ChannelName::parse("b").unwrap();
        assert!(ids.first_time(&a, "x"));
        assert!(!ids.first_time(&a, "x"));
        assert!(ids.first_time(&a, "y"));
        assert!(ids.first_time(&b, "x"), "ids are per channel");
    }

    #[test]
    fn forgets_the_oldest_beyond_the_window() {
        let ids = RecentIds::default();
        let a = ChannelName::parse("a").unwrap();
        for i in 0..=RECENT_IDS {
            assert!(ids.first_time(&a, &i.to_string()));
        }
        assert!(ids.first_time(&a, "0"), "the oldest id was forgotten");
        assert!(!ids.first_time(&a, &RECENT_IDS.to_string()));
    }
}
