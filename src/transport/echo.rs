//! `GET /echo`: a WebSocket echo endpoint for testing clients and proxies, like the
//! classic `ws://host/echo` servers. Echoes text and binary messages as they arrive.

use std::sync::Arc;

use fastwebsockets::{FragmentCollector, Frame, OpCode, WebSocket};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

use crate::node::Node;
use crate::protocol::CloseCode;

pub async fn serve(node: Arc<Node>, ws: WebSocket<TokioIo<Upgraded>>) {
    let mut ws = ws;
    ws.set_max_message_size(node.settings.limits.max_message_size + 1);
    let mut ws = FragmentCollector::new(ws);
    let idle = node.settings.idle_timeout();
    loop {
        // Dropping `read_frame` on shutdown or timeout is fine: the connection ends there.
        let frame = tokio::select! {
            () = node.shutdown.cancelled() => {
                let code = CloseCode::GoingAway;
                let _ = ws.write_frame(Frame::close(code.code(), code.reason().as_bytes())).await;
                return;
            }
            frame = tokio::time::timeout(idle, ws.read_frame()) => frame,
        };
        let frame = match frame {
            Ok(Ok(frame)) => frame,
            Ok(Err(error)) => {
                tracing::debug!(%error, "echo connection ended");
                return;
            }
            Err(_) => {
                let code = CloseCode::IdleTimeout;
                let _ = ws
                    .write_frame(Frame::close(code.code(), code.reason().as_bytes()))
                    .await;
                return;
            }
        };
        match frame.opcode {
            OpCode::Close => return,
            OpCode::Text | OpCode::Binary => {
                let echoed = ws.write_frame(frame).await;
                if echoed.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}
