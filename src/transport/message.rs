//! Assembles client WebSocket frames into messages, with the limits every endpoint shares:
//! the total size of a fragmented message, fragmentation rules, UTF-8 of text messages.
//! Cancel-safe: a message being assembled lives here, not in a future.

use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};

use super::reader::{Frame, FrameReader, OpCode, ReadError};

/// One complete client message, or a control frame the endpoint must answer.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// A text message, checked to be UTF-8.
    Text(Bytes),
    Binary(Bytes),
    /// The ping's payload, to echo in the pong.
    Ping(Bytes),
    Pong,
    /// The client closed.
    Close,
}

pub struct MessageReader {
    frames: FrameReader,
    assembler: Assembler,
}

impl MessageReader {
    pub fn new(frames: FrameReader, max_message: usize) -> Self {
        Self {
            frames,
            assembler: Assembler::new(max_message),
        }
    }

    /// See [`FrameReader::linger`].
    pub async fn linger(&mut self) {
        self.frames.linger().await;
    }

    /// The next message. Control frames may arrive between the fragments of a message
    /// and are handed out at once.
    pub async fn next(&mut self) -> Result<Message, ReadError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`Self::next`], polled.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, ReadError>> {
        loop {
            let frame = ready!(self.frames.poll_next(cx))?;
            if let Some(message) = self.assembler.take(frame)? {
                return Poll::Ready(Ok(message));
            }
        }
    }
}

/// The state between frames: pure, so every rule is tested (and fuzzed) without a socket.
pub struct Assembler {
    max_message: usize,
    /// A fragmented message so far: its opcode and data. Boxed: rare, and every
    /// connection would otherwise keep the 40 bytes.
    partial: Option<Box<(OpCode, BytesMut)>>,
}

impl Assembler {
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
        }
    }

    /// Takes one frame: a whole message or control frame when there is one to hand out.
    pub fn take(&mut self, frame: Frame) -> Result<Option<Message>, ReadError> {
        let Frame {
            opcode,
            fin,
            payload,
        } = frame;
        match opcode {
            OpCode::Ping => Ok(Some(Message::Ping(payload))),
            OpCode::Pong => Ok(Some(Message::Pong)),
            OpCode::Close => check_close(&payload).map(|()| Some(Message::Close)),
            OpCode::Text | OpCode::Binary if self.partial.is_none() => {
                if fin {
                    return finish(opcode, payload).map(Some);
                }
                self.partial = Some(Box::new((opcode, BytesMut::from(&payload[..]))));
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(mut partial) = self.partial.take() else {
                    return Err(ReadError::Protocol("continuation with nothing to continue"));
                };
                let (first, data) = &mut *partial;
                let total = data.len() + payload.len();
                if total > self.max_message {
                    return Err(ReadError::TooBig(total as u64));
                }
                data.extend_from_slice(&payload);
                if fin {
                    return finish(*first, std::mem::take(data).freeze()).map(Some);
                }
                self.partial = Some(partial);
                Ok(None)
            }
            OpCode::Text | OpCode::Binary => {
                Err(ReadError::Protocol("a new message inside a fragmented one"))
            }
        }
    }
}

/// A close frame carries nothing, or a code a peer may send and a UTF-8 reason
/// (RFC 6455 §5.5.1, §7.4): otherwise the node closes with 1002 or 1007.
fn check_close(payload: &[u8]) -> Result<(), ReadError> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return Ok(());
    };
    let code = u16::from_be_bytes(*code);
    let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !sendable {
        return Err(ReadError::Protocol(
            "close frame with a code a peer may not send",
        ));
    }
    std::str::from_utf8(reason).map_err(|_| ReadError::InvalidUtf8)?;
    Ok(())
}

fn finish(opcode: OpCode, data: Bytes) -> Result<Message, ReadError> {
    if opcode == OpCode::Text {
        std::str::from_utf8(&data).map_err(|_| ReadError::InvalidUtf8)?;
        return Ok(Message::Text(data));
    }
    Ok(Message::Binary(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: OpCode, fin: bool, payload: &'static [u8]) -> Frame {
        Frame {
            opcode,
            fin,
            payload: Bytes::from_static(payload),
        }
    }

    fn assembler(max_message: usize) -> Assembler {
        Assembler::new(max_message)
    }

    #[test]
    fn fragments_join_around_control_frames() {
        let mut a = assembler(100);
        assert_eq!(a.take(frame(OpCode::Text, false, b"he")).unwrap(), None);
        assert_eq!(
            a.take(frame(OpCode::Ping, true, b"p")).unwrap(),
            Some(Message::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(
            a.take(frame(OpCode::Continuation, true, b"llo")).unwrap(),
            Some(Message::Text(Bytes::from_static(b"hello")))
        );
    }

    #[test]
    fn limits_and_rules() {
        let mut a = assembler(4);
        a.take(frame(OpCode::Binary, false, b"abc")).unwrap();
        assert!(matches!(
            a.take(frame(OpCode::Continuation, true, b"de")),
            Err(ReadError::TooBig(5))
        ));
        let mut a = assembler(100);
        assert!(matches!(
            a.take(frame(OpCode::Continuation, true, b"x")),
            Err(ReadError::Protocol(_))
        ));
        a.take(frame(OpCode::Text, false, b"x")).unwrap();
        assert!(matches!(
            a.take(frame(OpCode::Text, true, b"y")),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            assembler(100).take(frame(OpCode::Text, true, &[0xff])),
            Err(ReadError::InvalidUtf8)
        ));
        let mut a = assembler(100);
        a.take(frame(OpCode::Text, false, &[0xc3])).unwrap();
        assert!(matches!(
            a.take(frame(OpCode::Continuation, true, &[0x28])),
            Err(ReadError::InvalidUtf8)
        ));
    }

    #[test]
    fn close_codes_and_reasons_are_checked() {
        let close =
            |payload: &'static [u8]| assembler(100).take(frame(OpCode::Close, true, payload));
        assert_eq!(close(b"").unwrap(), Some(Message::Close));
        assert_eq!(
            close(&[0x03, 0xE8, b'o', b'k']).unwrap(),
            Some(Message::Close)
        );
        assert_eq!(close(&[0x0F, 0xA0]).unwrap(), Some(Message::Close), "4000");
        for bad in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
        ] {
            let payload: &'static [u8] = Box::leak(Box::new(bad.to_be_bytes()));
            assert!(
                matches!(close(payload), Err(ReadError::Protocol(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            close(&[0x03, 0xE8, 0xff]),
            Err(ReadError::InvalidUtf8)
        ));
    }
}
