//! Fields read from a client message before validation, shared by both codecs so that both
//! give the very same errors for the very same mistakes, and their validation into a
//! [`Command`].

use bytes::Bytes;

use super::{Command, ErrorCode, MAX_ID, Rejection};
use crate::channel::ChannelName;

/// Fields read from a client message before validation; shared by both codecs so that
/// both give the very same errors for the very same mistakes.
#[derive(Debug, Default)]
pub(super) struct Fields {
    pub(super) id: Option<Field<u64>>,
    pub(super) op: Option<Field<String>>,
    pub(super) channel: Option<Field<String>>,
    /// The payload as JSON text, already validated by the codec.
    pub(super) data: Option<Bytes>,
}

/// A field that was present, and either had the expected type or not.
#[derive(Debug)]
pub(super) enum Field<T> {
    Ok(T),
    WrongType,
}

impl Fields {
    pub(super) fn into_command(self) -> Result<Command, Rejection> {
        let id = match self.id {
            Some(Field::Ok(id)) if id <= MAX_ID => id,
            Some(_) => {
                return Err(Rejection::new(
                    None,
                    ErrorCode::BadRequest,
                    "`id` must be an integer from 0 to 2^53-1",
                ));
            }
            None => {
                return Err(Rejection::new(
                    None,
                    ErrorCode::BadRequest,
                    "`id` is missing",
                ));
            }
        };
        let bad = |msg: &str| Rejection::new(Some(id), ErrorCode::BadRequest, msg);
        let op = match self.op {
            Some(Field::Ok(op)) => op,
            Some(Field::WrongType) => return Err(bad("`op` must be a string")),
            None => return Err(bad("`op` is missing")),
        };
        let channel = || match &self.channel {
            Some(Field::Ok(raw)) => ChannelName::parse(raw)
                .map_err(|e| Rejection::new(Some(id), ErrorCode::BadChannel, e.to_string())),
            Some(Field::WrongType) => Err(bad("`channel` must be a string")),
            None => Err(bad("`channel` is missing")),
        };
        match op.as_str() {
            "subscribe" => Ok(Command::Subscribe {
                id,
                channel: channel()?,
            }),
            "unsubscribe" => Ok(Command::Unsubscribe {
                id,
                channel: channel()?,
            }),
            "publish" => {
                let channel = channel()?;
                let data = self.data.clone().ok_or_else(|| bad("`data` is missing"))?;
                Ok(Command::Publish { id, channel, data })
            }
            "ping" => Ok(Command::Ping { id }),
            other => Err(Rejection::new(
                Some(id),
                ErrorCode::UnknownOp,
                format!("unknown op {:?}", truncate(other, 32)),
            )),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
