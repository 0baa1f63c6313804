//! `GET /echo`: a WebSocket echo endpoint for testing clients and proxies, like the
//! classic `ws://host/echo` servers. Echoes each text and binary message whole, once it
//! has arrived. Reads through the same message reader as `/ws`, so it enforces the same
//! framing rules and size limit, with the same close codes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::frame::{self, close_frame, pong_frame};
use super::message::{Message, MessageReader};
use super::reader::FrameReader;
use super::socket::{BoxWrite, Socket};
use crate::node::Node;
use crate::protocol::CloseCode;

/// How long a close frame may take to write before the socket is dropped without it.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn serve(node: Arc<Node>, socket: Socket, early: Bytes) {
    let (read, mut write) = socket.split();
    let max = node.settings.limits.max_message_size;
    let mut reader = MessageReader::new(FrameReader::new(read, early, max), max);
    let idle = node.settings.idle_timeout();
    loop {
        // The reader is cancel-safe, so dropping `next` on shutdown or timeout loses nothing.
        let message = tokio::select! {
            () = node.shutdown.cancelled() => return close(&mut write, CloseCode::GoingAway).await,
            r = tokio::time::timeout(idle, reader.next()) => r,
        };
        let reply: Bytes = match message {
            Err(_) => return close(&mut write, CloseCode::IdleTimeout).await,
            Ok(Err(error)) => {
                if let Some(code) = error.close_code() {
                    close(&mut write, code).await;
                    reader.linger().await;
                }
                return;
            }
            Ok(Ok(Message::Text(payload))) => frame::text(&payload),
            Ok(Ok(Message::Binary(payload))) => frame::binary(&payload),
            Ok(Ok(Message::Ping(payload))) => pong_frame(&payload),
            Ok(Ok(Message::Pong)) => continue,
            Ok(Ok(Message::Close)) => return close(&mut write, CloseCode::Normal).await,
        };
        if write.write_all(&reply).await.is_err() {
            return;
        }
    }
}

async fn close(write: &mut BoxWrite, code: CloseCode) {
    let frame = close_frame(code.code(), code.reason());
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
        write.write_all(&frame).await?;
        write.shutdown().await
    })
    .await;
}
