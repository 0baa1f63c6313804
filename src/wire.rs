//! Wire formats: a codec's payload (JSON, MessagePack) inside a transport's framing
//! (a WebSocket frame today; an SSE event or a long-poll body next). The hub encodes each
//! push once per wire format and shares the bytes with every subscriber of that format;
//! sessions frame their replies here too. Owns no socket and no connection state.

use bytes::Bytes;

use crate::protocol::{Codec, DataError, Push, ServerMsg};
use crate::transport::{cursor, frame};

/// How a transport wraps one payload for its wire.
///
/// An enum rather than a trait: the set of transports is closed (they all live in this
/// crate), and a small `Copy` value indexes the hub's per-message encode cache with no
/// allocation and no dynamic dispatch per subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// RFC 6455 frames: text frames for text codecs, binary frames for the others.
    WebSocket,
    /// Server-Sent Events: `event: <op>` and the JSON payload as `data:` lines. A message
    /// on a channel with history starts with a tag line, `\0<cursor entry>\n`, that the
    /// SSE writer replaces with the stream's cumulative `id:` (so the bytes stay shared).
    Sse,
    /// A long-poll answer's element: the JSON payload, tagged like SSE; the poll handler
    /// strips the tag into the answer's cursor.
    Poll,
}

impl Framing {
    /// Every framing, in [`Framing::index`] order: what metrics label connections with.
    pub const LABELS: [&'static str; 3] = ["ws", "sse", "poll"];

    /// A dense index into [`Framing::LABELS`].
    pub fn index(self) -> usize {
        match self {
            Framing::WebSocket => 0,
            Framing::Sse => 1,
            Framing::Poll => 2,
        }
    }
}

/// What one connection's bytes look like on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WireFormat {
    pub codec: Codec,
    pub framing: Framing,
}

impl WireFormat {
    /// How many distinct wire formats exist: the size of the hub's encode cache.
    pub const COUNT: usize = 4;

    /// JSON only: EventSource and long-poll bodies are text.
    pub const SSE: Self = Self {
        codec: Codec::Json,
        framing: Framing::Sse,
    };
    pub const POLL: Self = Self {
        codec: Codec::Json,
        framing: Framing::Poll,
    };

    pub const fn websocket(codec: Codec) -> Self {
        Self {
            codec,
            framing: Framing::WebSocket,
        }
    }

    /// A dense index below [`Self::COUNT`], for per-format caches.
    pub fn index(self) -> usize {
        match (self.framing, self.codec) {
            (Framing::WebSocket, Codec::Json) => 0,
            (Framing::WebSocket, Codec::Msgpack) => 1,
            (Framing::Sse, _) => 2,
            (Framing::Poll, _) => 3,
        }
    }

    /// A fanned-out push, ready to write.
    pub fn push(self, push: &Push<'_>) -> Result<Bytes, DataError> {
        let payload = self.codec.encode_push(push)?;
        let tag = match push {
            Push::Message {
                channel,
                position: Some(position),
                ..
            } => Some(cursor::entry(channel, position)),
            _ => None,
        };
        Ok(self.frame(push.op(), tag.as_deref(), &payload))
    }

    /// A reply or control message for one connection, ready to write.
    pub fn message(self, msg: &ServerMsg<'_>) -> Bytes {
        self.frame(msg.op(), None, &self.codec.encode(msg))
    }

    fn frame(self, op: &str, tag: Option<&str>, payload: &[u8]) -> Bytes {
        match self.framing {
            Framing::WebSocket if self.codec.is_text() => frame::text(payload),
            Framing::WebSocket => frame::binary(payload),
            Framing::Sse => sse_event(op, tag, payload),
            Framing::Poll => {
                let mut out = Vec::with_capacity(payload.len() + 80);
                if let Some(tag) = tag {
                    out.push(0);
                    out.extend_from_slice(tag.as_bytes());
                    out.push(b'\n');
                }
                out.extend_from_slice(payload);
                Bytes::from(out)
            }
        }
    }
}

/// One SSE event. JSON has newlines only between tokens (never inside strings), so
/// each line of the payload becomes a `data:` line and the client joins them back into
/// the same JSON text.
fn sse_event(op: &str, tag: Option<&str>, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 96);
    if let Some(tag) = tag {
        out.push(0);
        out.extend_from_slice(tag.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(op.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    for &b in payload {
        match b {
            b'\n' => out.extend_from_slice(b"\ndata: "),
            b'\r' => {}
            _ => out.push(b),
        }
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelName;

    #[test]
    fn indexes_are_dense_and_distinct() {
        let all = [
            WireFormat::websocket(Codec::Json),
            WireFormat::websocket(Codec::Msgpack),
            WireFormat::SSE,
            WireFormat::POLL,
        ];
        let mut seen: Vec<usize> = all.iter().map(|w| w.index()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..WireFormat::COUNT).collect::<Vec<_>>());
    }

    #[test]
    fn websocket_frames_text_for_json_and_binary_for_msgpack() {
        let channel = ChannelName::parse("chat:x").unwrap();
        let push = Push::Message {
            channel: &channel,
            data: b"1",
            position: None,
        };
        let json = WireFormat::websocket(Codec::Json).push(&push).unwrap();
        assert_eq!(json[0], 0x81);
        assert_eq!(
            &json[2..],
            br#"{"op":"message","channel":"chat:x","data":1}"#
        );
        let packed = WireFormat::websocket(Codec::Msgpack).push(&push).unwrap();
        assert_eq!(packed[0], 0x82);
    }

    #[test]
    fn sse_events_name_their_op_and_tag_positioned_messages() {
        let channel = ChannelName::parse("chat:x").unwrap();
        let position = crate::bus::StreamPosition {
            offset: 4,
            epoch: "ep".into(),
        };
        let push = Push::Message {
            channel: &channel,
            data: b"{\"a\":\n1}",
            position: Some(&position),
        };
        let event = WireFormat::SSE.push(&push).unwrap();
        assert_eq!(
            &event[..],
            b"\0chat:x~4~ep\nevent: message\ndata: {\"op\":\"message\",\"channel\":\"chat:x\",\"data\":{\"a\":\ndata: 1},\"offset\":4,\"epoch\":\"ep\"}\n\n"
        );
        let gap = WireFormat::SSE
            .push(&Push::Gap { channel: &channel })
            .unwrap();
        assert!(gap.starts_with(b"event: gap\ndata: {"));
        let polled = WireFormat::POLL.push(&push).unwrap();
        assert!(polled.starts_with(b"\0chat:x~4~ep\n{\"op\":\"message\""));
    }
}
