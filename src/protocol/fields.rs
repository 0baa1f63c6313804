//! Fields read from a client message before validation, shared by both codecs so that both
//! give the very same errors for the very same mistakes, and their validation into a
//! [`Command`].

use bytes::Bytes;
use serde::Deserialize;

use super::{Command, ErrorCode, MAX_ID, Recover, Rejection, deliverable};
use crate::channel::ChannelName;

/// Fields read from a client message before validation.
#[derive(Debug, Default)]
pub(super) struct Fields {
    pub(super) id: Option<Field<u64>>,
    pub(super) op: Option<Field<String>>,
    pub(super) channel: Option<Field<String>>,
    /// The payload as JSON text, already validated by the codec.
    pub(super) data: Option<Bytes>,
    pub(super) recover: Option<Field<RecoverWire>>,
    pub(super) since: Option<Field<u64>>,
    pub(super) before: Option<Field<u64>>,
    pub(super) limit: Option<Field<u64>>,
    /// Presence info as JSON text, validated like `data`.
    pub(super) info: Option<Bytes>,
    pub(super) cursor: Option<Field<String>>,
    pub(super) join_leave: Option<Field<bool>>,
    /// A JWT: a connection token (`connect`, `refresh`) or a channel token (`subscribe`).
    pub(super) token: Option<Field<String>>,
}

/// `recover` as sent: the position a client got to.
#[derive(Debug, Deserialize)]
pub(super) struct RecoverWire {
    offset: u64,
    epoch: String,
}

/// A field that was present, and either had the expected type or not.
#[derive(Debug)]
pub(super) enum Field<T> {
    Ok(T),
    WrongType,
}

/// An id as a whole number: `7`, or `7.0` (what JSON Schema calls an integer too, and
/// what some encoders write for numbers that happen to be whole).
pub(super) fn whole(int: Option<u64>, float: Option<f64>) -> Option<u64> {
    int.or_else(|| {
        let f = float?;
        (f.fract() == 0.0 && (0.0..=MAX_ID as f64).contains(&f)).then_some(f as u64)
    })
}

/// Longest token accepted: a JWT with many channel grants stays well below it.
const MAX_TOKEN_LEN: usize = 8192;

/// Longest epoch a client may send back: longer ones were never handed out.
const MAX_EPOCH_LEN: usize = 64;

impl Fields {
    pub(super) fn into_command(self) -> Result<Command, Rejection> {
        let id = self.id()?;
        let bad = |msg: &str| Rejection::new(Some(id), ErrorCode::BadRequest, msg);
        let op = match &self.op {
            Some(Field::Ok(op)) => op.as_str(),
            Some(Field::WrongType) => return Err(bad("`op` must be a string")),
            None => return Err(bad("`op` is missing")),
        };
        match op {
            "subscribe" if self.info.as_ref().is_some_and(|i| !deliverable(i)) => Err(bad(
                "`info` is nested deeper than 127 levels or has a number no double can hold",
            )),
            "subscribe" => Ok(Command::Subscribe {
                id,
                channel: self.channel(id)?,
                recover: self.recover(id)?,
                info: self.info.clone(),
                join_leave: match self.join_leave {
                    None => false,
                    Some(Field::Ok(on)) => on,
                    Some(Field::WrongType) => return Err(bad("`join_leave` must be a boolean")),
                },
                token: self.token(id, false)?,
            }),
            "unsubscribe" => Ok(Command::Unsubscribe {
                id,
                channel: self.channel(id)?,
            }),
            "publish" => {
                let channel = self.channel(id)?;
                let data = self.data.clone().ok_or_else(|| bad("`data` is missing"))?;
                if !deliverable(&data) {
                    return Err(bad(
                        "`data` is nested deeper than 127 levels or has a number no double can hold",
                    ));
                }
                Ok(Command::Publish { id, channel, data })
            }
            "history" => self.history(id),
            "presence" => Ok(Command::Presence {
                id,
                channel: self.channel(id)?,
                cursor: match &self.cursor {
                    None => None,
                    Some(Field::Ok(c)) if c.len() <= 256 => Some(c.clone()),
                    Some(_) => return Err(bad("`cursor` must be a string from a presence reply")),
                },
                limit: optional_u64(&self.limit, "limit", id)?,
            }),
            "presence_count" => Ok(Command::PresenceCount {
                id,
                channel: self.channel(id)?,
            }),
            "ping" => Ok(Command::Ping { id }),
            "connect" => Ok(Command::Connect {
                id,
                token: self.token(id, true)?.unwrap_or_default(),
            }),
            "refresh" => Ok(Command::Refresh {
                id,
                token: self.token(id, true)?.unwrap_or_default(),
            }),
            other => Err(Rejection::new(
                Some(id),
                ErrorCode::UnknownOp,
                format!("unknown op {:?}", truncate(other, 32)),
            )),
        }
    }

    fn id(&self) -> Result<u64, Rejection> {
        let message = match self.id {
            Some(Field::Ok(id)) if id <= MAX_ID => return Ok(id),
            Some(_) => "`id` must be an integer from 0 to 2^53-1",
            None => "`id` is missing",
        };
        Err(Rejection::new(None, ErrorCode::BadRequest, message))
    }

    fn channel(&self, id: u64) -> Result<ChannelName, Rejection> {
        let bad = |msg: &str| Rejection::new(Some(id), ErrorCode::BadRequest, msg);
        match &self.channel {
            Some(Field::Ok(raw)) => ChannelName::parse(raw)
                .map_err(|e| Rejection::new(Some(id), ErrorCode::BadChannel, e.to_string())),
            Some(Field::WrongType) => Err(bad("`channel` must be a string")),
            None => Err(bad("`channel` is missing")),
        }
    }

    fn recover(&self, id: u64) -> Result<Option<Recover>, Rejection> {
        match &self.recover {
            None => Ok(None),
            Some(Field::Ok(r)) if !r.epoch.is_empty() && r.epoch.len() <= MAX_EPOCH_LEN => {
                Ok(Some(Recover {
                    offset: r.offset,
                    epoch: r.epoch.clone(),
                }))
            }
            Some(_) => Err(Rejection::new(
                Some(id),
                ErrorCode::BadRequest,
                "`recover` must be {\"offset\": integer, \"epoch\": string of 1 to 64 bytes}",
            )),
        }
    }

    /// A token of at most [`MAX_TOKEN_LEN`] bytes; `required` for the auth ops.
    fn token(&self, id: u64, required: bool) -> Result<Option<String>, Rejection> {
        let bad = |msg: &str| Rejection::new(Some(id), ErrorCode::BadRequest, msg);
        match &self.token {
            None if required => Err(bad("`token` is missing")),
            None => Ok(None),
            Some(Field::Ok(t)) if t.len() <= MAX_TOKEN_LEN => Ok(Some(t.clone())),
            Some(Field::Ok(_)) => Err(bad("`token` is longer than 8192 bytes")),
            Some(Field::WrongType) => Err(bad("`token` must be a string")),
        }
    }

    fn history(&self, id: u64) -> Result<Command, Rejection> {
        let channel = self.channel(id)?;
        let since = optional_u64(&self.since, "since", id)?;
        let before = optional_u64(&self.before, "before", id)?;
        if since.is_some() && before.is_some() {
            return Err(Rejection::new(
                Some(id),
                ErrorCode::BadRequest,
                "give `since` or `before`, not both",
            ));
        }
        Ok(Command::History {
            id,
            channel,
            since,
            before,
            limit: optional_u64(&self.limit, "limit", id)?,
        })
    }
}

fn optional_u64(field: &Option<Field<u64>>, name: &str, id: u64) -> Result<Option<u64>, Rejection> {
    match field {
        None => Ok(None),
        Some(Field::Ok(n)) => Ok(Some(*n)),
        Some(Field::WrongType) => Err(Rejection::new(
            Some(id),
            ErrorCode::BadRequest,
            format!("`{name}` must be a non-negative integer"),
        )),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
