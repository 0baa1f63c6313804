//! Client WebSocket frames, as the node reads them from a socket, then assembled into
//! messages: never a panic; text messages are UTF-8; no message over the size limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use roomcast::transport::message::{Assembler, Message};
use roomcast::transport::reader::parse_frames;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let Ok(frames) = parse_frames(&mut buf, MAX) else {
        return;
    };
    let mut assembler = Assembler::new(MAX);
    for frame in frames {
        match assembler.take(frame) {
            Ok(Some(Message::Text(text))) => {
                assert!(text.len() <= MAX);
                assert!(std::str::from_utf8(&text).is_ok());
            }
            Ok(Some(Message::Binary(bytes))) => assert!(bytes.len() <= MAX),
            Ok(_) => {}
            Err(_) => return,
        }
    }
});
