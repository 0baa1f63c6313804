//! Cursors over several channels at once: where a client got to on each, as one string.
//! SSE sends one as every message event's `id` (so `Last-Event-ID` resumes every channel
//! of the stream) and long-polling hands one back with every answer.
//!
//! Format: `<channel>~<offset>~<epoch>` per channel, joined by `,`. Channel names and
//! epochs never contain `~` or `,`, so no escaping is needed.

use std::collections::BTreeMap;

use crate::bus::StreamPosition;
use crate::channel::ChannelName;

/// The positions a cursor names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(BTreeMap<ChannelName, (u64, Box<str>)>);

/// Longest cursor accepted: 128 channels of the longest names and epochs.
pub const MAX_LEN: usize = 128 * (128 + 21 + 64 + 3);

impl Cursor {
    /// Reads a cursor; entries that do not parse are skipped (the channel then starts
    /// fresh, and says `gap` if it keeps history), never an error: a cursor is the
    /// client's own bookkeeping, sent back.
    pub fn parse(raw: &str) -> Self {
        if raw.len() > MAX_LEN {
            return Self::default();
        }
        let entries = raw.split(',').filter_map(|entry| {
            let mut parts = entry.splitn(3, '~');
            let channel = ChannelName::parse(parts.next()?).ok()?;
            let offset = parts.next()?.parse().ok()?;
            let epoch = parts.next().filter(|e| valid_epoch(e))?;
            Some((channel, (offset, Box::from(epoch))))
        });
        Self(entries.collect())
    }

    /// Where `channel` got to, as a subscribe's `recover` wants it.
    pub fn get(&self, channel: &ChannelName) -> Option<crate::protocol::Recover> {
        self.0
            .get(channel)
            .map(|(offset, epoch)| crate::protocol::Recover {
                offset: *offset,
                epoch: epoch.to_string(),
            })
    }

    /// Moves `channel` to `position`.
    pub fn set(&mut self, channel: &ChannelName, offset: u64, epoch: &str) {
        if valid_epoch(epoch) {
            self.0.insert(channel.clone(), (offset, Box::from(epoch)));
        }
    }

    pub fn set_position(&mut self, channel: &ChannelName, position: &StreamPosition) {
        self.set(channel, position.offset, &position.epoch);
    }

    /// Applies an entry written by [`entry`].
    pub fn apply(&mut self, entry: &str) {
        let mut parts = entry.splitn(3, '~');
        if let (Some(channel), Some(offset), Some(epoch)) =
            (parts.next(), parts.next(), parts.next())
            && let (Ok(channel), Ok(offset)) = (ChannelName::parse(channel), offset.parse())
        {
            self.set(&channel, offset, epoch);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (channel, (offset, epoch))) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{channel}~{offset}~{epoch}")?;
        }
        Ok(())
    }
}

/// One channel's entry, as the SSE and long-poll framings tag a message with it.
pub fn entry(channel: &ChannelName, position: &StreamPosition) -> String {
    format!("{channel}~{}~{}", position.offset, position.epoch)
}

fn valid_epoch(epoch: &str) -> bool {
    !epoch.is_empty() && epoch.len() <= 64 && !epoch.contains([',', '~', '\n', '\r', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_skips_what_does_not_parse() {
        let mut c = Cursor::default();
        let a = ChannelName::parse("chat:a").unwrap();
        let b = ChannelName::parse("b").unwrap();
        c.set(&a, 7, "e1");
        c.set(&b, 0, "e2");
        let text = c.to_string();
        assert_eq!(text, "b~0~e2,chat:a~7~e1");
        assert_eq!(Cursor::parse(&text), c);
        let messy = Cursor::parse("chat:a~7~e1,,bad,x~y~z,c~1~,chat:b~2~e3");
        assert_eq!(messy.to_string(), "chat:a~7~e1,chat:b~2~e3");
        c.apply("chat:a~8~e1");
        assert_eq!(c.get(&a).unwrap().offset, 8);
        assert!(Cursor::parse(&"x".repeat(MAX_LEN + 1)).is_empty());
    }
}
