//! Channel names: parsed and validated once at the edge, trusted everywhere inside.

use std::fmt;
use std::sync::Arc;

/// Longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;

/// Why a string is not a channel name. Shown to clients in `bad_channel` errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_LEN} bytes")]
    TooLong,
    #[error("channel name contains {0:?}; allowed: A-Z a-z 0-9 and _ - . : @ /")]
    BadChar(char),
    #[error("channel name has an empty namespace or an empty name after ':'")]
    EmptyPart,
}

/// A valid channel name: 1..=128 bytes of `A-Z a-z 0-9 _ - . : @ /`, where the part
/// before the first `:` (if any) is the namespace that carries policy.
///
/// Cheap to clone (`Arc<str>`) because the hub keys its maps by it and the bus
/// carries it in every message.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    pub fn parse(raw: &str) -> Result<Self, ChannelError> {
        if raw.is_empty() {
            return Err(ChannelError::Empty);
        }
        if raw.len() > MAX_CHANNEL_LEN {
            return Err(ChannelError::TooLong);
        }
        if let Some(bad) = raw.chars().find(|c| !is_allowed(*c)) {
            return Err(ChannelError::BadChar(bad));
        }
        if let Some((ns, rest)) = raw.split_once(':')
            && (ns.is_empty() || rest.is_empty())
        {
            return Err(ChannelError::EmptyPart);
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, or `""` for a channel without one.
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or("", |(ns, _)| ns)
    }
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '/')
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_documented_charset() {
        for ok in [
            "lobby",
            "chat:lobby",
            "chat:a:b",
            "a-b_c.d@e/f",
            &"x".repeat(128),
        ] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(ChannelName::parse(""), Err(ChannelError::Empty));
        assert_eq!(
            ChannelName::parse(&"x".repeat(129)),
            Err(ChannelError::TooLong)
        );
        assert_eq!(
            ChannelName::parse("chat lobby"),
            Err(ChannelError::BadChar(' '))
        );
        assert_eq!(ChannelName::parse("é"), Err(ChannelError::BadChar('é')));
        assert_eq!(ChannelName::parse(":x"), Err(ChannelError::EmptyPart));
        assert_eq!(ChannelName::parse("chat:"), Err(ChannelError::EmptyPart));
    }

    #[test]
    fn namespace_is_before_first_colon() {
        assert_eq!(ChannelName::parse("chat:a:b").unwrap().namespace(), "chat");
        assert_eq!(ChannelName::parse("lobby").unwrap().namespace(), "");
    }
}
