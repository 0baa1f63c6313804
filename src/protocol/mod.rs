//! Protocol v1: client commands in, replies and pushes out, as payload bytes in one of two
//! codecs. Pure data, no I/O and no framing: a transport wraps the payloads (see
//! `crate::wire`). `proto/PROTOCOL.md` is the spec this implements.

mod codes;
mod fields;
mod json;
mod msgpack;

use bytes::Bytes;
use serde::Serialize;

use crate::bus::StreamPosition;
use crate::channel::ChannelName;

pub use codes::{CloseCode, ErrorCode};

/// Deepest nesting of arrays and objects `data` may have: what the JSON reader that
/// transcodes data for MessagePack subscribers accepts. Deeper data is refused when it
/// enters the node, so that no codec's subscribers lose it later.
pub const MAX_DATA_DEPTH: usize = 127;

/// Whether JSON text (already checked for syntax) can be carried by every codec: UTF-8
/// (it goes into text frames), nested no deeper than [`MAX_DATA_DEPTH`], and every number
/// finite as a double (`1e400` is valid JSON but has no MessagePack form). A scan, not a
/// parse (serde_json skips values without these checks), and no recursion.
pub fn deliverable(json: &[u8]) -> bool {
    if std::str::from_utf8(json).is_err() {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut i = 0;
    while i < json.len() {
        let b = json[i];
        i += 1;
        if in_string {
            match (escaped, b) {
                (true, b'u') => {
                    escaped = false;
                    match unicode_escape(&json[i..]) {
                        Some(used) => i += used,
                        None => return false,
                    }
                }
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DATA_DEPTH {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i - 1;
                while i < json.len()
                    && matches!(json[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let finite = std::str::from_utf8(&json[start..i])
                    .ok()
                    .and_then(|n| n.parse::<f64>().ok())
                    .is_some_and(f64::is_finite);
                if !finite {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

/// The 4 hex digits after `\u` (and the low surrogate that must follow a high one); how
/// many bytes they take, or `None` for a lone surrogate, which no string can hold.
fn unicode_escape(rest: &[u8]) -> Option<usize> {
    let hex = |at: usize| {
        let digits = std::str::from_utf8(rest.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    match hex(0)? {
        0xD800..=0xDBFF => {
            let low = (rest.get(4..6) == Some(b"\\u".as_slice())).then(|| hex(6))??;
            (0xDC00..=0xDFFF).contains(&low).then_some(10)
        }
        0xDC00..=0xDFFF => None,
        _ => Some(4),
    }
}

/// A `Sec-WebSocket-Protocol` entry that carries a connection token
/// (`roomcast.bearer.<jwt>`) rather than naming a protocol: never chosen, never echoed.
pub const BEARER_PREFIX: &str = "roomcast.bearer.";

/// Largest request id accepted: ids must survive a round trip through a JavaScript number.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// The payload encoding of one connection, chosen once through `Sec-WebSocket-Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `roomcast.v1.json`: JSON text; the default when no subprotocol is offered.
    Json,
    /// `roomcast.v1.msgpack`: MessagePack, same fields.
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

    /// Whether payloads are UTF-8 text (JSON) rather than binary (MessagePack): a
    /// transport frames them accordingly.
    pub fn is_text(self) -> bool {
        self == Codec::Json
    }

    /// Picks the first protocol the client offers that roomcast speaks.
    /// `Ok(None)` when nothing was offered (plain JSON, no header echoed back);
    /// `Err(())` when something was offered but none of it is spoken here.
    #[allow(clippy::result_unit_err)]
    pub fn negotiate<'a>(mut offered: impl Iterator<Item = &'a str>) -> Result<Option<Codec>, ()> {
        let mut any = false;
        let found = offered.find_map(|p| {
            if p.starts_with(BEARER_PREFIX) {
                return None;
            }
            any = true;
            match p {
                Self::JSON_SUBPROTOCOL => Some(Codec::Json),
                Self::MSGPACK_SUBPROTOCOL => Some(Codec::Msgpack),
                _ => None,
            }
        });
        match (found, any) {
            (Some(codec), _) => Ok(Some(codec)),
            (None, false) => Ok(None),
            (None, true) => Err(()),
        }
    }

    /// Decodes one complete client message.
    pub fn decode(self, payload: &[u8]) -> Result<Command, Rejection> {
        let fields = match self {
            Codec::Json => json::decode(payload)?,
            Codec::Msgpack => msgpack::decode(payload)?,
        };
        fields.into_command()
    }

    /// Encodes a reply or control push into payload bytes.
    pub fn encode(self, msg: &ServerMsg<'_>) -> Vec<u8> {
        match self {
            Codec::Json => json::encode(msg),
            Codec::Msgpack => msgpack::encode(msg),
        }
    }

    /// Encodes a push the hub fans out. A message's `data` is JSON: spliced in as-is for
    /// JSON and transcoded for MessagePack, once per node and codec, never per subscriber.
    pub fn encode_push(self, push: &Push<'_>) -> Result<Vec<u8>, DataError> {
        match (self, push) {
            (
                Codec::Json,
                Push::Message {
                    channel,
                    data,
                    position,
                },
            ) => Ok(json::encode_message(channel, data, *position)),
            (
                Codec::Msgpack,
                Push::Message {
                    channel,
                    data,
                    position,
                },
            ) => msgpack::encode_message(channel, data, *position),
            (_, Push::Gap { channel }) => Ok(self.encode(&ServerMsg::Gap {
                channel: channel.as_str(),
            })),
            (
                _,
                Push::Join {
                    channel,
                    client,
                    info,
                },
            ) => Ok(self.encode(&ServerMsg::Join {
                channel: channel.as_str(),
                client,
                info: JsonText(Bytes::copy_from_slice(info)),
            })),
            (_, Push::Leave { channel, client }) => Ok(self.encode(&ServerMsg::Leave {
                channel: channel.as_str(),
                client,
            })),
        }
    }
}

/// A push that goes to every local subscriber of a channel, encoded once per wire format.
#[derive(Debug, Clone, Copy)]
pub enum Push<'a> {
    /// A published message; `data` is its JSON text; `position` where the channel keeps
    /// history.
    Message {
        channel: &'a ChannelName,
        data: &'a [u8],
        position: Option<&'a StreamPosition>,
    },
    /// Messages of the channel may have been lost.
    Gap { channel: &'a ChannelName },
    /// A client joined the channel; `info` is JSON text.
    Join {
        channel: &'a ChannelName,
        client: &'a str,
        info: &'a [u8],
    },
    /// A client left the channel.
    Leave {
        channel: &'a ChannelName,
        client: &'a str,
    },
}

impl Push<'_> {
    /// The `op` the push is sent as.
    pub fn op(&self) -> &'static str {
        match self {
            Push::Message { .. } => "message",
            Push::Gap { .. } => "gap",
            Push::Join { .. } => "join",
            Push::Leave { .. } => "leave",
        }
    }
}

/// A validated client command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// With `recover`, the messages missed since that position come first.
    /// `info` (JSON text) is shown in the channel's presence; `join_leave` asks for the
    /// channel's `join` and `leave` pushes.
    Subscribe {
        id: u64,
        channel: ChannelName,
        recover: Option<Recover>,
        info: Option<Bytes>,
        join_leave: bool,
        /// A private channel's token.
        token: Option<String>,
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
    /// At most `limit` messages of the channel's history: after `since`, before `before`,
    /// or the newest.
    History {
        id: u64,
        channel: ChannelName,
        since: Option<u64>,
        before: Option<u64>,
        limit: Option<u64>,
    },
    /// A page of the channel's members, from `cursor`.
    Presence {
        id: u64,
        channel: ChannelName,
        cursor: Option<String>,
        limit: Option<u64>,
    },
    PresenceCount {
        id: u64,
        channel: ChannelName,
    },
    Ping {
        id: u64,
    },
    /// Authenticates an anonymous connection with a connection token.
    Connect {
        id: u64,
        token: String,
    },
    /// Replaces the connection's token with a fresh one for the same user.
    Refresh {
        id: u64,
        token: String,
    },
}

/// The position a client got to on a channel, sent back to recover what it missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recover {
    pub offset: u64,
    pub epoch: String,
}

impl Command {
    pub fn id(&self) -> u64 {
        match self {
            Command::Subscribe { id, .. }
            | Command::Unsubscribe { id, .. }
            | Command::Publish { id, .. }
            | Command::History { id, .. }
            | Command::Presence { id, .. }
            | Command::PresenceCount { id, .. }
            | Command::Ping { id }
            | Command::Connect { id, .. }
            | Command::Refresh { id, .. } => *id,
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

/// Everything the server sends other than fanned-out pushes (see [`Push`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    Welcome {
        client: &'a str,
        node: &'a str,
        version: u32,
        /// Seconds between the server's WebSocket pings.
        heartbeat: u64,
        /// The authenticated user, when the handshake carried a token.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        /// When the token expires (seconds since the Unix epoch).
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<u64>,
    },
    /// The connection's token expires at `expires` (Unix seconds): send `refresh` before
    /// then or the connection is closed with 4003.
    Expiring {
        expires: u64,
    },
    /// A request succeeded; ops that return something put it beside the id.
    Ok {
        id: u64,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        data: Option<ReplyData>,
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
    Join {
        channel: &'a str,
        client: &'a str,
        info: JsonText,
    },
    Leave {
        channel: &'a str,
        client: &'a str,
    },
}

impl ServerMsg<'_> {
    /// The `op` the message is sent as.
    pub fn op(&self) -> &'static str {
        match self {
            ServerMsg::Welcome { .. } => "welcome",
            ServerMsg::Expiring { .. } => "expiring",
            ServerMsg::Ok { .. } => "ok",
            ServerMsg::Error { .. } => "error",
            ServerMsg::Gap { .. } => "gap",
            ServerMsg::Join { .. } => "join",
            ServerMsg::Leave { .. } => "leave",
        }
    }
}

/// What a successful reply carries besides its id, as fields of the `ok` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReplyData {
    /// A channel's position: where a subscription starts, or where a publish landed.
    /// `recovered` answers a subscribe that asked to recover.
    Position {
        offset: u64,
        epoch: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// A page of history, oldest first, and the channel's position.
    History {
        offset: u64,
        epoch: String,
        messages: Vec<HistoryItem>,
    },
    /// A page of a channel's members; `cursor` asks for the next (absent at the end).
    Presence {
        clients: Vec<PresenceItem>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    Count {
        count: u64,
    },
    /// Who the connection is (`connect`, `refresh`).
    Auth {
        user: String,
        expires: u64,
    },
}

/// One member in a `presence` reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceItem {
    pub client: String,
    pub info: JsonText,
}

/// One message in a `history` reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryItem {
    pub offset: u64,
    pub data: JsonText,
}

/// Validated JSON text, written into any codec as the value it holds: re-serialised for
/// JSON, transcoded for MessagePack. Replies are per client; fan-out never goes this way.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonText(pub Bytes);

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut de = serde_json::Deserializer::from_slice(&self.0);
        serde_transcode::transcode(&mut de, serializer)
    }
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

/// Payload data that cannot be carried in a codec.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data has no JSON form: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error(
        "data is nested deeper than {MAX_DATA_DEPTH} levels or has a number no double can hold"
    )]
    TooDeep,
    #[error("data holds a MessagePack extension value (type {0}), which has no JSON form")]
    Extension(i8),
    #[error("data cannot be written as MessagePack")]
    NotMsgpack(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[cfg(test)]
mod tests;
