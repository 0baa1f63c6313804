//! Protocol v1: client commands in, server pushes out, error and close codes.
//! Pure data and codecs, no I/O; `proto/PROTOCOL.md` is the spec this implements.

mod frame;
mod json;
mod msgpack;

use bytes::Bytes;
use serde::Serialize;

use crate::channel::{ChannelError, ChannelName};

pub use frame::{close_frame, ping_frame, pong_frame};

/// Largest request id accepted: ids must survive a round trip through a JavaScript number.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// The wire encoding of one connection, chosen once through `Sec-WebSocket-Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `roomcast.v1.json`: JSON on text frames; the default when no subprotocol is offered.
    Json,
    /// `roomcast.v1.msgpack`: MessagePack on binary frames, same fields.
    Msgpack,
}

impl Codec {
    pub const JSON_SUBPROTOCOL: &'static str = "roomcast.v1.json";
    pub const MSGPACK_SUBPROTOCOL: &'static str = "roomcast.v1.msgpack";

    pub fn subprotocol(self) -> &'static str {
        match self {
            Codec::Json => Self::JSON_SUBPROTOCOL,
            Codec::Msgpack => Self::MSGPACK_SUBPROTOCOL,
        }
    }

    /// Picks the first protocol the client offers that roomcast speaks.
    /// `Ok(None)` when nothing was offered (plain JSON, no header echoed back);
    /// `Err(())` when something was offered but none of it is spoken here.
    #[allow(clippy::result_unit_err)]
    pub fn negotiate(offered: Option<&str>) -> Result<Option<Codec>, ()> {
        let Some(offered) = offered else {
            return Ok(None);
        };
        offered
            .split(',')
            .map(str::trim)
            .find_map(|p| match p {
                Self::JSON_SUBPROTOCOL => Some(Codec::Json),
                Self::MSGPACK_SUBPROTOCOL => Some(Codec::Msgpack),
                _ => None,
            })
            .map(Some)
            .ok_or(())
    }

    /// Decodes one complete client message (a text frame for JSON, binary for MessagePack).
    pub fn decode(self, payload: &[u8]) -> Result<Command, Rejection> {
        let fields = match self {
            Codec::Json => json::decode(payload)?,
            Codec::Msgpack => msgpack::decode(payload)?,
        };
        fields.into_command()
    }

    /// Encodes a reply or push into a complete, ready-to-write WebSocket frame.
    pub fn encode(self, msg: &ServerMsg<'_>) -> Bytes {
        match self {
            Codec::Json => frame::text(&json::encode(msg)),
            Codec::Msgpack => frame::binary(&msgpack::encode(msg)),
        }
    }

    /// Encodes a `message` push. `data` is JSON; it is spliced in as-is for JSON and
    /// transcoded for MessagePack, once per node and codec, never per subscriber.
    pub fn encode_message(self, channel: &ChannelName, data: &[u8]) -> Result<Bytes, DataError> {
        match self {
            Codec::Json => Ok(frame::text(&json::encode_message(channel, data))),
            Codec::Msgpack => Ok(frame::binary(&msgpack::encode_message(channel, data)?)),
        }
    }
}

/// A validated client command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Subscribe {
        id: u64,
        channel: ChannelName,
    },
    Unsubscribe {
        id: u64,
        channel: ChannelName,
    },
    /// `data` is the payload as compact-or-not JSON text, validated, never re-parsed later.
    Publish {
        id: u64,
        channel: ChannelName,
        data: Bytes,
    },
    Ping {
        id: u64,
    },
}

impl Command {
    pub fn id(&self) -> u64 {
        match self {
            Command::Subscribe { id, .. }
            | Command::Unsubscribe { id, .. }
            | Command::Publish { id, .. }
            | Command::Ping { id } => *id,
        }
    }
}

/// A client message that could not become a command; answered with an `error` reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The request id, when one could be read.
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    pub fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
        }
    }
}

/// Stable machine-readable error codes carried by `error` replies. They never close the
/// connection. Renaming one is a protocol break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a valid message: bad JSON/MessagePack, not an object, a field missing or of the wrong type.
    BadRequest,
    /// `op` is a string this protocol version does not know.
    UnknownOp,
    /// The channel name breaks the charset/length rules or names an unknown namespace.
    BadChannel,
    /// The namespace's policy does not allow this (e.g. client publish).
    Forbidden,
    /// `data` is larger than `limits.max_message_size` once in JSON form.
    TooLarge,
    /// The connection's publish rate limit was hit; retry later.
    RateLimited,
    /// A per-connection limit was reached (e.g. `limits.max_subscriptions`).
    LimitExceeded,
    /// The bus cannot take the request right now (e.g. Redis is down); nothing was published.
    Unavailable,
    /// A bug or unexpected failure on the node.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::BadChannel => "bad_channel",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl From<ChannelError> for ErrorCode {
    fn from(_: ChannelError) -> Self {
        ErrorCode::BadChannel
    }
}

/// WebSocket close codes roomcast sends: RFC 6455 ones, plus 4000–4999 for its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the client closed, and the node echoes the close.
    Normal,
    /// 1001: the node is draining (shutdown); reconnect, preferably elsewhere.
    GoingAway,
    /// 1002: broken WebSocket framing (bad opcode, reserved bits, fragmentation).
    ProtocolError,
    /// 1007: a text frame that is not valid UTF-8.
    InvalidPayload,
    /// 1009: a message larger than `limits.max_message_size`.
    MessageTooBig,
    /// 1011: an unexpected failure on the node.
    InternalError,
    /// 1013: the node is full (`limits.max_connections`); retry with backoff.
    TryAgainLater,
    /// 4000: the client did not read fast enough and its outbound queue overflowed.
    SlowConsumer,
    /// 4001: nothing was heard from the client within `heartbeat.idle_timeout_ms`.
    IdleTimeout,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::TryAgainLater => 1013,
            CloseCode::SlowConsumer => 4000,
            CloseCode::IdleTimeout => 4001,
        }
    }

    /// The short reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::GoingAway => "node draining",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidPayload => "invalid utf-8",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::InternalError => "internal error",
            CloseCode::TryAgainLater => "node full",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::IdleTimeout => "idle timeout",
        }
    }

    /// Label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::InternalError => "internal_error",
            CloseCode::TryAgainLater => "try_again_later",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::IdleTimeout => "idle_timeout",
        }
    }
}

/// Everything the server sends, other than `message` pushes (see [`Codec::encode_message`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    Welcome {
        client: &'a str,
        node: &'a str,
        version: u32,
        /// Seconds between the server's WebSocket pings.
        heartbeat: u64,
    },
    Ok {
        id: u64,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        code: ErrorCode,
        message: &'a str,
    },
    /// Messages of this channel may have been lost (the node's bus link was down).
    Gap {
        channel: &'a str,
    },
}

impl<'a> From<&'a Rejection> for ServerMsg<'a> {
    fn from(r: &'a Rejection) -> Self {
        ServerMsg::Error {
            id: r.id,
            code: r.code,
            message: &r.message,
        }
    }
}

/// Payload data that cannot be carried: not JSON-compatible, or too large.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data is not representable: {0}")]
    NotRepresentable(String),
}

/// Fields read from a client message before validation; shared by both codecs so that
/// both give the very same errors for the very same mistakes.
#[derive(Debug, Default)]
struct Fields {
    id: Option<Field<u64>>,
    op: Option<Field<String>>,
    channel: Option<Field<String>>,
    /// The payload as JSON text, already validated by the codec.
    data: Option<Bytes>,
}

/// A field that was present, and either had the expected type or not.
#[derive(Debug)]
enum Field<T> {
    Ok(T),
    WrongType,
}

impl Fields {
    fn into_command(self) -> Result<Command, Rejection> {
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

#[cfg(test)]
mod tests;
