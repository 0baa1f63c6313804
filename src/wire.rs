//! Wire formats: a codec's payload (JSON, MessagePack) inside a transport's framing
//! (a WebSocket frame today; an SSE event or a long-poll body next). The hub encodes each
//! push once per wire format and shares the bytes with every subscriber of that format;
//! sessions frame their replies here too. Owns no socket and no connection state.

use bytes::Bytes;

use crate::protocol::{Codec, DataError, Push, ServerMsg};
use crate::transport::frame;

/// How a transport wraps one payload for its wire.
///
/// An enum rather than a trait: the set of transports is closed (they all live in this
/// crate), and a small `Copy` value indexes the hub's per-message encode cache with no
/// allocation and no dynamic dispatch per subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// RFC 6455 frames: text frames for text codecs, binary frames for the others.
    WebSocket,
}

/// What one connection's bytes look like on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WireFormat {
    pub codec: Codec,
    pub framing: Framing,
}

impl WireFormat {
    /// How many distinct wire formats exist: the size of the hub's encode cache.
    pub const COUNT: usize = 2;

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
        }
    }

    /// A fanned-out push, ready to write.
    pub fn push(self, push: &Push<'_>) -> Result<Bytes, DataError> {
        Ok(self.frame(&self.codec.encode_push(push)?))
    }

    /// A reply or control message for one connection, ready to write.
    pub fn message(self, msg: &ServerMsg<'_>) -> Bytes {
        self.frame(&self.codec.encode(msg))
    }

    fn frame(self, payload: &[u8]) -> Bytes {
        match self.framing {
            Framing::WebSocket if self.codec.is_text() => frame::text(payload),
            Framing::WebSocket => frame::binary(payload),
        }
    }
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
}
