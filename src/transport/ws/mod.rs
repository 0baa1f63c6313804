//! The WebSocket transport of a client connection: a reader (messages → session, and the
//! connection's timers) and a writer (queued frames → socket, batched), both in the
//! connection's one task. The only code that touches a client's socket.
//!
//! What that task's future holds across its `.await`s, every connection keeps for its
//! whole life, so the steps taken once (refusal, close, the session's end) are boxed,
//! and the state is built before the future exists rather than inside it.

mod duplex;
mod read;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use tracing::Instrument;

use super::admission::AddressSlot;
use super::message::MessageReader;
use super::reader::FrameReader;
use super::socket::{BoxWrite, Socket};
use crate::conn::Conn;
use crate::node::Node;
use crate::protocol::CloseCode;
use crate::session::{ConnInfo, Session};
use crate::wire::WireFormat;

/// How long a close frame may take to write before the socket is dropped without it.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs a client connection until it ends. The caller has completed the handshake.
/// `early` holds the bytes that came after the handshake; `slot` is the connection's
/// place among its address's connections, held for as long as it lives.
///
/// Not an `async fn`: one would keep its arguments (socket, early bytes, handshake
/// details) in the future for the connection's life, long after they were used.
pub fn serve(
    node: Arc<Node>,
    socket: Socket,
    early: Bytes,
    wire: WireFormat,
    info: Box<ConnInfo>,
    slot: AddressSlot,
) -> impl Future<Output = ()> + Send + 'static {
    let peer = info.peer;
    let (read, write) = socket.split();
    let limits = &node.settings.limits;
    let conn = node.new_conn(wire);
    // Debug level: at the default level nothing inside a connection logs, and an enabled
    // span costs ~300 bytes per connection for nothing.
    let span = tracing::debug_span!("conn", id = %conn.id, %peer, codec = ?wire.codec);
    let started = node.register(&conn).then(|| {
        let mut session = Session::new(Arc::clone(&node), Arc::clone(&conn), info);
        session.start();
        let frames = FrameReader::new(read, early, limits.max_message_size);
        (session, MessageReader::new(frames, limits.max_message_size))
    });
    match started {
        None => Either::Left(refuse(node, write).instrument(span)),
        Some((session, reader)) => {
            let run = run(node, conn, session, reader, write, slot);
            // The span only where it records something: instrumenting costs every
            // connection's future 40 bytes even while the span is disabled.
            Either::Right(if span.is_disabled() {
                Either::Left(run)
            } else {
                Either::Right(Box::pin(run.instrument(span)))
            })
        }
    }
}

/// Turns a connection away when the node is full or draining.
async fn refuse(node: Arc<Node>, mut write: BoxWrite) {
    tracing::debug!("node full or draining, refusing connection");
    let code = CloseCode::TryAgainLater;
    node.metrics.closed(code);
    write::write_close(&mut write, code, CLOSE_WRITE_TIMEOUT, false).await;
}

/// Reads and writes until the connection ends, then lets go of it. Not an `async fn`: one
/// keeps each argument twice, as passed and as bound (measured: 360 bytes).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn run(
    node: Arc<Node>,
    conn: Arc<Conn>,
    mut session: Session,
    mut reader: MessageReader,
    mut write: BoxWrite,
    slot: AddressSlot,
) -> impl Future<Output = ()> + Send {
    async move {
        tracing::debug!("connected");
        {
            let reading = read::read_loop(&node, &conn, &mut session, &mut reader);
            let writing = write::write_loop(&conn, &mut write, &node.metrics);
            // Reader and writer share the connection's one task: a task of its own for
            // the writer cost 0.6 KiB per connection.
            tokio::pin!(writing, reading);
            duplex::run(writing, reading).await;
        }
        Box::pin(finish(&node, &conn, &mut session, &mut reader)).await;
        drop(slot);
    }
}

/// What is left once reader and writer are done: the session leaves its channels, a
/// client closed for bad input still gets to read its close frame, and the node lets go
/// of the connection.
async fn finish(node: &Node, conn: &Conn, session: &mut Session, reader: &mut MessageReader) {
    session.end().await;
    let bad_input = [
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
    ];
    if conn
        .close_code()
        .is_some_and(|code| bad_input.contains(&code))
    {
        reader.linger().await;
    }
    node.deregister(conn.id);
    if let Some(code) = conn.close_code() {
        node.metrics.closed(code);
    }
    tracing::debug!(close = ?conn.close_code(), "disconnected");
}
