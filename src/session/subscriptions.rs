//! The channels a session is subscribed to: a sorted `Vec`, not a `HashSet`. A session
//! holds a few channels (at most `limits.max_subscriptions`, 128 by default), and for one
//! channel a hash set took 132 bytes (its table and its hasher's keys) where this takes 40.

use crate::channel::ChannelName;

#[derive(Default)]
pub struct Subscriptions(Vec<ChannelName>);

impl Subscriptions {
    pub fn contains(&self, channel: &ChannelName) -> bool {
        self.0.binary_search(channel).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds `channel`; `false` if it was there already.
    pub fn insert(&mut self, channel: ChannelName) -> bool {
        let Err(at) = self.0.binary_search(&channel) else {
            return false;
        };
        // Exact: a doubling `Vec` would keep room for four after the first.
        self.0.reserve_exact(1);
        self.0.insert(at, channel);
        true
    }

    /// Removes `channel`; `false` if it was not there.
    pub fn remove(&mut self, channel: &ChannelName) -> bool {
        let Ok(at) = self.0.binary_search(channel) else {
            return false;
        };
        self.0.remove(at);
        true
    }

    /// Takes every channel out, leaving the set empty.
    pub fn take(&mut self) -> Vec<ChannelName> {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_each_channel_once() {
        let name = |n: &str| ChannelName::parse(n).unwrap();
        let mut subs = Subscriptions::default();
        assert!(subs.insert(name("b")));
        assert!(subs.insert(name("a")));
        assert!(!subs.insert(name("b")));
        assert_eq!(subs.len(), 2);
        assert!(subs.contains(&name("a")) && !subs.contains(&name("c")));
        assert!(subs.remove(&name("a")));
        assert!(!subs.remove(&name("a")));
        assert_eq!(subs.take(), [name("b")]);
        assert_eq!(subs.len(), 0);
    }
}
