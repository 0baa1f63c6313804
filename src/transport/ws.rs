//! The WebSocket transport of a client connection: one reader task (messages → session)
//! and one writer task (queued frames → socket, batched). The only code that touches a
//! client's socket.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use super::frame::{close_frame, ping_frame, pong_frame};
use super::message::{Message, MessageReader};
use super::reader::{FrameReader, ReadError};
use super::socket::{BoxWrite, Socket};
use crate::conn::{Batch, Conn, Outgoing};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::protocol::{CloseCode, ErrorCode, Rejection};
use crate::session::{CommandError, ConnInfo, Session};
use crate::wire::WireFormat;

/// How long a close frame may take to write before the socket is dropped without it.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs a client connection until it ends. The caller has completed the handshake.
/// `early` holds the bytes that came after the handshake.
pub async fn serve(
    node: Arc<Node>,
    socket: Socket,
    early: Bytes,
    wire: WireFormat,
    info: Box<ConnInfo>,
) {
    let peer = info.peer;
    let (read, mut write) = socket.split();
    let limits = &node.settings.limits;
    let conn = Arc::new(Conn::new(
        wire,
        limits.outbox_max_bytes,
        limits.outbox_max_frames,
        Arc::clone(&node.metrics),
    ));
    // Debug level: at the default level nothing inside a connection logs, and an enabled
    // span costs ~300 bytes per connection for nothing.
    let span = tracing::debug_span!("conn", id = %conn.id, %peer, codec = ?wire.codec);
    if !node.register(&conn) {
        tracing::debug!(parent: &span, "node full or draining, refusing connection");
        let code = CloseCode::TryAgainLater;
        node.metrics.closed(code);
        let frame = close_frame(code.code(), code.reason());
        let refusal = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, write.write_all(&frame));
        let _ = Box::pin(refusal).await;
        return;
    }
    tracing::debug!(parent: &span, "connected");
    let writer = node.tasks.spawn(
        write_loop(
            Arc::clone(&conn),
            write,
            node.settings.heartbeat_interval(),
            Arc::clone(&node.metrics),
        )
        .instrument(span.clone()),
    );
    let mut session = Session::new(Arc::clone(&node), Arc::clone(&conn), info);
    session.start();
    let frames = FrameReader::new(read, early, limits.max_message_size);
    let mut reader = MessageReader::new(frames, limits.max_message_size);
    read_loop(&node, &conn, &mut session, &mut reader)
        .instrument(span.clone())
        .await;
    // Boxed, like every step after the connection's life: this future's size is what
    // each connection keeps while it lives.
    Box::pin(session.end()).await;
    let _ = writer.await;
    let bad_input = [
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
    ];
    if conn
        .close_code()
        .is_some_and(|code| bad_input.contains(&code))
    {
        Box::pin(reader.linger()).await;
    }
    node.deregister(conn.id);
    if let Some(code) = conn.close_code() {
        node.metrics.closed(code);
    }
    tracing::debug!(parent: &span, close = ?conn.close_code(), "disconnected");
}

async fn read_loop(node: &Node, conn: &Conn, session: &mut Session, reader: &mut MessageReader) {
    let idle = node.settings.idle_timeout();
    loop {
        let due = session.due();
        let message = tokio::select! {
            biased;
            () = conn.cancelled() => return,
            () = due => {
                session.on_deadline();
                continue;
            }
            r = tokio::time::timeout(idle, reader.next()) => r,
        };
        let payload = match message {
            Err(_) => return conn.close(CloseCode::IdleTimeout),
            Ok(Err(error)) => return on_read_error(conn, &error),
            Ok(Ok(Message::Ping(payload))) => {
                node.metrics.bytes_in.add(payload.len() as u64);
                let _ = conn.push(pong_frame(&payload));
                continue;
            }
            Ok(Ok(Message::Pong)) => continue,
            Ok(Ok(Message::Close)) => return conn.close(CloseCode::Normal),
            // Text frames carry text codecs, binary frames the others.
            Ok(Ok(Message::Text(payload))) if conn.wire.codec.is_text() => payload,
            Ok(Ok(Message::Binary(payload))) if !conn.wire.codec.is_text() => payload,
            Ok(Ok(Message::Text(_) | Message::Binary(_))) => {
                wrong_frame_type(session, conn.wire);
                continue;
            }
        };
        node.metrics.bytes_in.add(payload.len() as u64);
        // Boxed: the handling future is large and only needed while a message is handled,
        // not in every idle connection's reader task.
        Box::pin(session.handle(&payload)).await;
    }
}

fn wrong_frame_type(session: &Session, wire: WireFormat) {
    let expected = if wire.codec.is_text() {
        "Text"
    } else {
        "Binary"
    };
    let rejection = Rejection::new(
        None,
        ErrorCode::BadRequest,
        format!(
            "this connection speaks {} and expects {expected} frames",
            wire.codec.subprotocol(),
        ),
    );
    session.reject(None, &CommandError::Decode(rejection));
}

fn on_read_error(conn: &Conn, error: &ReadError) {
    let Some(code) = error.close_code() else {
        // The peer is gone; there is nobody to send a close frame to.
        tracing::debug!(%error, "connection lost");
        conn.cancel();
        return;
    };
    tracing::debug!(%error, close = code.code(), "closing on bad input");
    conn.close(code);
}

async fn write_loop(
    conn: Arc<Conn>,
    mut write: BoxWrite,
    heartbeat: Duration,
    metrics: Arc<Metrics>,
) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            biased;
            batch = conn.next_batch() => batch,
            _ = ping.tick() => {
                let _ = conn.push(ping_frame());
                continue;
            }
        };
        match batch {
            Batch::Ended => {
                // Aborted (e.g. slow consumer): the socket may be stuck, so only try briefly.
                if let Some(code) = conn.close_code() {
                    let frame = close_frame(code.code(), code.reason());
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), write.write_all(&frame))
                            .await;
                }
                break;
            }
            Batch::Frames(frames) => {
                let Some(result) = write_unless_ended(&conn, &mut write, &frames).await else {
                    break;
                };
                if let Err(error) = result {
                    tracing::debug!(%error, "write failed");
                    break;
                }
                record_written(&metrics, &frames);
            }
            Batch::Close(code) => {
                let frame = close_frame(code.code(), code.reason());
                let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
                    write.write_all(&frame).await?;
                    write.shutdown().await
                })
                .await;
                break;
            }
        }
    }
    // Tell the reader: nothing more will be written, so the connection is over.
    conn.cancel();
}

/// Writes the frames, unless the connection must end before the socket takes them: most
/// writes complete at once, so only one the socket makes wait watches for that.
async fn write_unless_ended(
    conn: &Conn,
    write: &mut BoxWrite,
    frames: &[Outgoing],
) -> Option<std::io::Result<()>> {
    let write = write_frames(write, frames);
    tokio::pin!(write);
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if let Poll::Ready(result) = first {
        return Some(result);
    }
    tokio::select! {
        biased;
        () = conn.cancelled() => None,
        result = write => Some(result),
    }
}

/// Writes every ready frame with one `write` call where the kernel takes it all: on
/// loopback one write of many small frames costs about what one write of one does.
async fn write_frames(write: &mut BoxWrite, frames: &[Outgoing]) -> std::io::Result<()> {
    if let [one] = frames {
        return write.write_all(&one.frame).await;
    }
    let total: usize = frames.iter().map(|o| o.frame.len()).sum();
    let mut buf = Vec::with_capacity(total);
    for o in frames {
        buf.extend_from_slice(&o.frame);
    }
    write.write_all(&buf).await
}

/// Bytes out, and publish-to-write latency for the frames that carry a message.
fn record_written(metrics: &Metrics, frames: &[Outgoing]) {
    let bytes: usize = frames.iter().map(|o| o.frame.len()).sum();
    metrics.bytes_out.add(bytes as u64);
    if frames.iter().any(|o| o.published_ms != 0) {
        let now_us = crate::clock::unix_micros();
        for o in frames.iter().filter(|o| o.published_ms != 0) {
            metrics
                .publish_to_write
                .observe_us(now_us.saturating_sub(o.published_ms * 1000));
        }
    }
}
