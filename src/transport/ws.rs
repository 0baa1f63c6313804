//! The WebSocket transport of a client connection: one reader task (frames → session) and
//! one writer task (queued frames → socket, batched). The only code that touches the socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{OpCode, Role, WebSocketError, WebSocketRead};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::conn::{Batch, Conn};
use crate::node::Node;
use crate::protocol::{CloseCode, Codec, close_frame, ping_frame, pong_frame};
use crate::session::Session;

/// How long a close frame may take to write before the socket is dropped without it.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// Splits an upgraded connection into owned halves. For plain TCP (always, with the
/// server in this crate) the halves are lock-free; bytes hyper read past the handshake
/// are replayed first.
fn split(upgraded: Upgraded) -> (BoxRead, BoxWrite) {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (read, write) = parts.io.into_inner().into_split();
            // `read_buf` may pin hyper's whole read buffer; keep only the bytes themselves.
            let early = Bytes::copy_from_slice(&parts.read_buf);
            let read = std::io::Cursor::new(early).chain(read);
            (Box::new(read), Box::new(write))
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            (Box::new(read), Box::new(write))
        }
    }
}

/// Runs a client connection until it ends. The caller has completed the handshake.
pub async fn serve(node: Arc<Node>, upgraded: Upgraded, codec: Codec, peer: std::net::SocketAddr) {
    let (read, mut write) = split(upgraded);
    let limits = &node.settings.limits;
    let conn = Arc::new(Conn::new(
        codec,
        limits.outbox_max_bytes,
        limits.outbox_max_frames,
    ));
    let span = tracing::info_span!("conn", id = %conn.id, %peer, ?codec);
    if !node.register(&conn) {
        tracing::debug!(parent: &span, "node full or draining, refusing connection");
        let code = CloseCode::TryAgainLater;
        node.metrics.closed(code);
        let frame = close_frame(code.code(), code.reason());
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, write.write_all(&frame)).await;
        return;
    }
    tracing::debug!(parent: &span, "connected");
    let writer = node.tasks.spawn(
        write_loop(Arc::clone(&conn), write, node.settings.heartbeat_interval())
            .instrument(span.clone()),
    );
    let mut session = Session::new(Arc::clone(&node), Arc::clone(&conn));
    session.welcome();
    read_loop(&node, &conn, &mut session, read)
        .instrument(span.clone())
        .await;
    session.end().await;
    let _ = writer.await;
    node.deregister(conn.id);
    if let Some(code) = conn.close_code() {
        node.metrics.closed(code);
    }
    tracing::debug!(parent: &span, close = ?conn.close_code(), "disconnected");
}

/// A message being reassembled from fragments.
struct Partial {
    opcode: OpCode,
    data: Vec<u8>,
}

async fn read_loop(node: &Node, conn: &Conn, session: &mut Session, read: BoxRead) {
    let max = node.settings.limits.max_message_size;
    let idle = node.settings.idle_timeout();
    let (mut ws, _) = fastwebsockets::after_handshake_split(read, tokio::io::sink(), Role::Server);
    ws.set_auto_close(false);
    ws.set_auto_pong(false);
    // fastwebsockets refuses frames of `>= max_message_size` bytes; roomcast allows `max`.
    ws.set_max_message_size(max + 1);
    let mut partial: Option<Partial> = None;
    loop {
        // `read_frame` is not cancel-safe, which is fine here: both branches that drop it
        // end the connection, so no half-read frame is ever resumed.
        let frame = tokio::select! {
            biased;
            () = conn.cancelled() => return,
            r = tokio::time::timeout(idle, read_frame(&mut ws)) => r,
        };
        let frame = match frame {
            Err(_) => return conn.close(CloseCode::IdleTimeout),
            Ok(Err(error)) => return on_read_error(conn, error),
            Ok(Ok(frame)) => frame,
        };
        let (opcode, fin, payload) = frame;
        let message = match opcode {
            OpCode::Ping => {
                let _ = conn.push(pong_frame(&payload));
                continue;
            }
            OpCode::Pong => continue,
            OpCode::Close => return conn.close(CloseCode::Normal),
            OpCode::Text | OpCode::Binary if fin && partial.is_none() => Partial {
                opcode,
                data: payload.to_vec(),
            },
            OpCode::Text | OpCode::Binary if partial.is_none() => {
                partial = Some(Partial {
                    opcode,
                    data: payload.to_vec(),
                });
                continue;
            }
            OpCode::Continuation if partial.is_some() => {
                let Some(mut p) = partial.take() else {
                    continue;
                };
                if p.data.len() + payload.len() > max {
                    return conn.close(CloseCode::MessageTooBig);
                }
                p.data.extend_from_slice(&payload);
                if !fin {
                    partial = Some(p);
                    continue;
                }
                p
            }
            _ => return conn.close(CloseCode::ProtocolError),
        };
        if message.opcode == OpCode::Text && std::str::from_utf8(&message.data).is_err() {
            return conn.close(CloseCode::InvalidPayload);
        }
        let expected = match conn.codec {
            Codec::Json => OpCode::Text,
            Codec::Msgpack => OpCode::Binary,
        };
        if message.opcode != expected {
            session.reject(&crate::protocol::Rejection::new(
                None,
                crate::protocol::ErrorCode::BadRequest,
                format!(
                    "this connection speaks {} and expects {:?} frames",
                    conn.codec.subprotocol(),
                    expected
                ),
            ));
            continue;
        }
        session.handle(&message.data).await;
    }
}

/// Reads one frame and copies out what the loop needs, so no borrow of the reader's
/// buffer outlives the call.
async fn read_frame(
    ws: &mut WebSocketRead<BoxRead>,
) -> Result<(OpCode, bool, Bytes), WebSocketError> {
    // auto_close and auto_pong are off, so there is never an obligated frame to send.
    let mut no_obligations = |_| std::future::ready(Ok::<(), std::io::Error>(()));
    let frame = ws.read_frame(&mut no_obligations).await?;
    Ok((
        frame.opcode,
        frame.fin,
        Bytes::copy_from_slice(&frame.payload),
    ))
}

fn on_read_error(conn: &Conn, error: WebSocketError) {
    let code = match error {
        WebSocketError::InvalidUTF8 => CloseCode::InvalidPayload,
        WebSocketError::FrameTooLarge => CloseCode::MessageTooBig,
        // The peer is gone; there is nobody to send a close frame to.
        WebSocketError::UnexpectedEOF
        | WebSocketError::IoError(_)
        | WebSocketError::ConnectionClosed => {
            tracing::debug!(%error, "connection lost");
            conn.cancel();
            return;
        }
        _ => CloseCode::ProtocolError,
    };
    tracing::debug!(%error, close = code.code(), "closing on bad frame");
    conn.close(code);
}

async fn write_loop(conn: Arc<Conn>, mut write: BoxWrite, heartbeat: Duration) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            biased;
            () = conn.cancelled() => {
                // Aborted (e.g. slow consumer): the socket may be stuck, so only try briefly.
                if let Some(code) = conn.close_code() {
                    let frame = close_frame(code.code(), code.reason());
                    let _ = tokio::time::timeout(Duration::from_millis(100), write.write_all(&frame)).await;
                }
                break;
            }
            batch = conn.next_batch() => batch,
            _ = ping.tick() => {
                let _ = conn.push(ping_frame());
                continue;
            }
        };
        match batch {
            Batch::Frames(frames) => {
                let result = tokio::select! {
                    biased;
                    () = conn.cancelled() => break,
                    r = write_frames(&mut write, &frames) => r,
                };
                if let Err(error) = result {
                    tracing::debug!(%error, "write failed");
                    break;
                }
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

/// Writes every ready frame with one `write` call where the kernel takes it all: on
/// loopback one write of many small frames costs about what one write of one does.
async fn write_frames(write: &mut BoxWrite, frames: &[Bytes]) -> std::io::Result<()> {
    if let [frame] = frames {
        return write.write_all(frame).await;
    }
    let total: usize = frames.iter().map(Bytes::len).sum();
    let mut buf = Vec::with_capacity(total);
    for frame in frames {
        buf.extend_from_slice(frame);
    }
    write.write_all(&buf).await
}
