//! WebSocket framing of server-to-client payloads, built once and shared as `Bytes` by
//! every subscriber: server frames are never masked (RFC 6455 §5.1), so the bytes are
//! identical for everyone. Knows nothing of what the payload says.

use bytes::{BufMut, Bytes, BytesMut};

const FIN: u8 = 0x80;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

fn build(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = BytesMut::with_capacity(len + 10);
    out.put_u8(FIN | opcode);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

pub fn text(payload: &[u8]) -> Bytes {
    build(OP_TEXT, payload)
}

pub fn binary(payload: &[u8]) -> Bytes {
    build(OP_BINARY, payload)
}

/// A close frame with a code and a short reason (control frames carry at most 125 bytes).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    build(OP_CLOSE, &payload)
}

pub fn ping_frame() -> Bytes {
    build(OP_PING, b"")
}

/// A pong echoing the ping's payload (at most 125 bytes; the frame reader enforces that).
pub fn pong_frame(payload: &[u8]) -> Bytes {
    build(OP_PONG, &payload[..payload.len().min(125)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_encodings() {
        assert_eq!(&text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let mid = text(&[0u8; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 0x01, 0x2C]);
        let big = binary(&vec![0u8; 70_000]);
        assert_eq!(big[1], 127);
        assert_eq!(big.len(), 70_000 + 10);
    }

    #[test]
    fn close_frame_carries_code_and_reason() {
        assert_eq!(
            &close_frame(1001, "bye")[..],
            &[0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']
        );
        assert!(close_frame(4000, &"é".repeat(100)).len() <= 127);
    }
}
