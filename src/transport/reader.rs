//! Reads client WebSocket frames (RFC 6455 §5) from a TCP socket, holding no buffer while
//! the connection is idle. `message` assembles them into messages; every WebSocket
//! endpoint reads through both, with the same limits.
//!
//! Why not fastwebsockets' reader: it keeps an 8 KiB buffer per connection for the
//! connection's whole life, which is most of an idle connection's memory (measured: 8.2 KiB
//! of 8.4 KiB per idle connection). This reader waits for readiness first and allocates
//! only when bytes arrive, a chunk at a time (never the length a header merely claims), and
//! lets go once the frame is handed out.
//! fastwebsockets still does the handshake.

use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};

use super::socket::ReadSide;
use crate::protocol::CloseCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

#[derive(Debug)]
pub struct Frame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the TCP connection, or it broke.
    #[error("connection lost: {0}")]
    Lost(#[from] std::io::Error),
    #[error("connection closed without a close frame")]
    Eof,
    /// A frame larger than the limit (before reading its payload).
    #[error("frame of {0} bytes is over the limit")]
    TooBig(u64),
    /// Broken framing: the connection must close with 1002.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A text message that is not UTF-8.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
}

impl ReadError {
    /// The close code the node answers with; `None` when the peer is already gone and
    /// there is nobody to send a close frame to.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            ReadError::TooBig(_) => Some(CloseCode::MessageTooBig),
            ReadError::Protocol(_) => Some(CloseCode::ProtocolError),
            ReadError::InvalidUtf8 => Some(CloseCode::InvalidPayload),
            ReadError::Eof | ReadError::Lost(_) => None,
        }
    }
}

pub struct FrameReader {
    stream: ReadSide,
    /// Bytes read and not yet handed out; empty, without an allocation, when idle.
    buf: BytesMut,
    max_payload: usize,
}

impl FrameReader {
    /// `early` holds bytes that arrived with the handshake. Taken, copied and let go: the
    /// slice may pin the whole buffer the handshake was read into, for the connection's life.
    pub fn new(stream: ReadSide, early: Bytes, max_payload: usize) -> Self {
        Self {
            stream,
            buf: BytesMut::from(&early[..]),
            max_payload,
        }
    }

    /// The next frame, unmasked. Cancel-safe: a dropped call loses no bytes.
    pub async fn next(&mut self) -> Result<Frame, ReadError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`Self::next`], polled: what a waiting connection holds is this reader, no future.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Frame, ReadError>> {
        loop {
            if let Parsed::Frame(frame) = parse(&mut self.buf, self.max_payload)? {
                if self.buf.is_empty() {
                    // Release the allocation with the last frame taken from it.
                    self.buf = BytesMut::new();
                }
                return Poll::Ready(Ok(frame));
            }
            // Room for one chunk at a time, not for the length a header claims: what a
            // partly received frame holds grows with the bytes that actually arrived
            // (BytesMut grows geometrically, so a large frame still costs few copies).
            if ready!(self.stream.poll_read_into(cx, &mut self.buf))? == 0 {
                return Poll::Ready(Err(ReadError::Eof));
            }
        }
    }
}

/// Parses every whole frame `buf` holds, leaving a partial one in it: the code the reader
/// runs on a socket's bytes, callable without a socket (fuzzing, tests).
pub fn parse_frames(buf: &mut BytesMut, max_payload: usize) -> Result<Vec<Frame>, ReadError> {
    let mut frames = Vec::new();
    while let Parsed::Frame(frame) = parse(buf, max_payload)? {
        frames.push(frame);
    }
    Ok(frames)
}

/// How long a connection closed for bad input keeps reading: long enough for the close frame
/// to reach a client that is still sending, short enough to cost nothing.
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

impl FrameReader {
    /// After a close for bad input, reads and discards what the client still sends, until it
    /// closes or [`LINGER`] passes. Dropping a socket with unread bytes makes the kernel
    /// answer with a reset, and the client would never see the close frame and its code.
    pub async fn linger(&mut self) {
        let drain = async {
            loop {
                self.buf.clear();
                if !matches!(self.stream.read_into(&mut self.buf).await, Ok(1..)) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

enum Parsed {
    Frame(Frame),
    /// More bytes are needed.
    Need,
}

fn parse(buf: &mut BytesMut, max_payload: usize) -> Result<Parsed, ReadError> {
    if buf.len() < 2 {
        return Ok(Parsed::Need);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(ReadError::Protocol("reserved bits set"));
    }
    let opcode = opcode(b0 & 0x0F)?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(ReadError::Protocol("client frames must be masked"));
    }
    let Some((len, len_bytes)) = payload_len(buf, b1 & 0x7F) else {
        return Ok(Parsed::Need);
    };
    let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
    if control && (!fin || len > 125) {
        return Err(ReadError::Protocol(
            "control frames must be whole and at most 125 bytes",
        ));
    }
    if len > max_payload as u64 {
        return Err(ReadError::TooBig(len));
    }
    let head = 2 + len_bytes + 4;
    let total = head + len as usize;
    if buf.len() < total {
        return Ok(Parsed::Need);
    }
    let mask = [buf[head - 4], buf[head - 3], buf[head - 2], buf[head - 1]];
    buf.advance(head);
    let mut payload = buf.split_to(len as usize);
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
    if opcode == OpCode::Close && payload.len() == 1 {
        return Err(ReadError::Protocol("close frame with a 1-byte payload"));
    }
    Ok(Parsed::Frame(Frame {
        fin,
        opcode,
        payload: payload.freeze(),
    }))
}

fn opcode(bits: u8) -> Result<OpCode, ReadError> {
    Ok(match bits {
        0x0 => OpCode::Continuation,
        0x1 => OpCode::Text,
        0x2 => OpCode::Binary,
        0x8 => OpCode::Close,
        0x9 => OpCode::Ping,
        0xA => OpCode::Pong,
        _ => return Err(ReadError::Protocol("reserved opcode")),
    })
}

/// The payload length and how many extended-length bytes carried it; `None` while those
/// bytes have not all arrived.
fn payload_len(buf: &[u8], len7: u8) -> Option<(u64, usize)> {
    match len7 {
        126 => {
            let b = buf.get(2..4)?;
            Some((u64::from(u16::from_be_bytes([b[0], b[1]])), 2))
        }
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            Some((u64::from_be_bytes(b), 8))
        }
        n => Some((u64::from(n), 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [9u8, 8, 7, 6];
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn parse_all(bytes: &[u8], max: usize) -> Result<Vec<Frame>, ReadError> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        // Byte by byte: every split point must work.
        for b in bytes {
            buf.extend_from_slice(&[*b]);
            while let Parsed::Frame(f) = parse(&mut buf, max)? {
                frames.push(f);
            }
        }
        Ok(frames)
    }

    #[test]
    fn parses_frames_split_anywhere() {
        let mut bytes = masked(0x81, b"hello");
        bytes.extend(masked(0x02, &[7u8; 300]));
        bytes.extend(masked(0x80, &[1u8; 70_000]));
        bytes.extend(masked(0x89, b"p"));
        let frames = parse_all(&bytes, 1 << 20).unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(
            (frames[0].opcode, frames[0].fin, &frames[0].payload[..]),
            (OpCode::Text, true, &b"hello"[..])
        );
        assert_eq!(
            (frames[1].opcode, frames[1].fin, frames[1].payload.len()),
            (OpCode::Binary, false, 300)
        );
        assert_eq!(
            (frames[2].opcode, frames[2].payload.len()),
            (OpCode::Continuation, 70_000)
        );
        assert_eq!(frames[3].opcode, OpCode::Ping);
    }

    #[test]
    fn rejects_broken_framing() {
        let protocol = |bytes: &[u8]| matches!(parse_all(bytes, 1024), Err(ReadError::Protocol(_)));
        assert!(protocol(&masked(0xC1, b"x")), "reserved bit");
        assert!(protocol(&masked(0x83, b"x")), "reserved opcode");
        assert!(protocol(&masked(0x09, b"")), "fragmented ping");
        assert!(protocol(&masked(0x89, &[0u8; 126])), "long ping");
        assert!(protocol(&masked(0x88, b"x")), "1-byte close");
        assert!(protocol(&[0x81, 0x01, b'x']), "unmasked");
        assert!(matches!(
            parse_all(&masked(0x81, &[0u8; 1025]), 1024),
            Err(ReadError::TooBig(1025))
        ));
    }

    /// A header that claims a large frame reserves nothing for bytes that never came.
    #[tokio::test]
    async fn memory_follows_the_bytes_that_arrived_not_the_claimed_length() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, _write) = server.into_split();
        let mut reader = FrameReader::new(ReadSide::Tcp(read), Bytes::new(), 16 << 20);
        let mut claim = vec![0x82, 0x80 | 127];
        claim.extend_from_slice(&(15u64 << 20).to_be_bytes());
        claim.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        client.write_all(&claim).await.unwrap();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(100), reader.next()).await;
        assert!(waited.is_err(), "the frame is not complete");
        assert!(
            reader.buf.capacity() < 64 * 1024,
            "{} bytes held for a 15 MiB claim",
            reader.buf.capacity()
        );
    }
}
