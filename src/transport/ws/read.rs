//! A connection's read side: the client's messages into the session, and the connection's
//! timers (idle timeout, heartbeat ping, the session's auth deadline).

use std::future::Future;
use std::task::Poll;

use bytes::Bytes;
use tokio::time::Instant;

use crate::conn::Conn;
use crate::node::Node;
use crate::protocol::{CloseCode, ErrorCode, Rejection};
use crate::session::{CommandError, Session};
use crate::settings::Settings;
use crate::transport::frame::{ping_frame, pong_frame};
use crate::transport::message::{Message, MessageReader};
use crate::transport::reader::ReadError;
use crate::wire::WireFormat;

/// Every timer of a connection behind one `Sleep`: a tokio timer is 112 bytes that each
/// connection would keep for each of the three. The sleep is set for the earliest of them
/// and not moved as messages arrive: when it fires before the idle deadline it is simply
/// set again, so a busy connection costs no timer work per message.
struct Timers {
    last_heard: Instant,
    next_ping: Instant,
}

impl Timers {
    fn new(settings: &Settings) -> Self {
        let now = Instant::now();
        Self {
            last_heard: now,
            next_ping: now + settings.heartbeat_interval(),
        }
    }

    /// When the connection goes idle, unless the client is heard before.
    fn idle_at(&self, settings: &Settings) -> Instant {
        self.last_heard + settings.idle_timeout()
    }

    /// When the sleep must next wake.
    fn next(&self, settings: &Settings, session: &Session) -> Instant {
        let soonest = self.idle_at(settings).min(self.next_ping);
        session.deadline().map_or(soonest, |at| soonest.min(at))
    }

    /// Runs what is due; `false` once the connection went idle and is closing.
    fn fire(&mut self, settings: &Settings, conn: &Conn, session: &mut Session) -> bool {
        let now = Instant::now();
        if now >= self.idle_at(settings) {
            conn.close(CloseCode::IdleTimeout);
            return false;
        }
        if now >= self.next_ping {
            let _ = conn.push(ping_frame());
            self.next_ping = now + settings.heartbeat_interval();
        }
        if session.deadline().is_some_and(|at| now >= at) {
            session.on_deadline();
        }
        true
    }
}

/// Reads and handles the client's messages until the connection closes, or until the
/// writer has ended (which ends the connection; the writer always ends once it must).
///
/// Not an `async fn`, here and in the writer: one keeps each argument twice, as passed
/// and as bound, in a future every connection holds.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(super) fn read_loop<'a>(
    node: &'a Node,
    conn: &'a Conn,
    session: &'a mut Session,
    reader: &'a mut MessageReader,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        let settings = &node.settings;
        let mut timers = Timers::new(settings);
        let timer = tokio::time::sleep_until(timers.next(settings, session));
        // No waker needed: the writer ends (and ends the connection) inside the task's
        // poll that then polls this.
        let writer_ended = std::future::poll_fn(|_| match conn.is_cancelled() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        });
        tokio::pin!(timer, writer_ended);
        loop {
            // In a block of its own, so that the message is not kept beside its payload
            // while the payload is handled (40 bytes in every connection's future).
            let payload = {
                let message = tokio::select! {
                    biased;
                    () = &mut writer_ended => return,
                    () = &mut timer => {
                        if !timers.fire(settings, conn, session) {
                            return;
                        }
                        timer.as_mut().reset(timers.next(settings, session));
                        continue;
                    }
                    message = std::future::poll_fn(|cx| reader.poll_next(cx)) => message,
                };
                timers.last_heard = Instant::now();
                match take(node, conn, session, message) {
                    Next::Handle(payload) => payload,
                    Next::Read => continue,
                    Next::Stop => return,
                }
            };
            // Boxed: the handling future is large and only needed while a message is handled,
            // not in every idle connection's future.
            Box::pin(session.handle(&payload)).await;
            // Handling may have set a deadline sooner than the sleep (a token that expires).
            let next = timers.next(settings, session);
            if next < timer.deadline() {
                timer.as_mut().reset(next);
            }
        }
    }
}

/// What a message asks of the read loop.
enum Next {
    /// Hand this payload to the session.
    Handle(Bytes),
    /// Nothing to hand on (a control frame, a rejected frame): read on.
    Read,
    /// The connection is closing.
    Stop,
}

/// Answers control frames and wrong frame types, and picks out what the session handles.
fn take(node: &Node, conn: &Conn, session: &Session, message: Result<Message, ReadError>) -> Next {
    let payload = match message {
        Err(error) => {
            on_read_error(conn, &error);
            return Next::Stop;
        }
        Ok(Message::Ping(payload)) => {
            node.metrics.bytes_in.add(payload.len() as u64);
            let _ = conn.push(pong_frame(&payload));
            return Next::Read;
        }
        Ok(Message::Pong) => return Next::Read,
        Ok(Message::Close) => {
            conn.close(CloseCode::Normal);
            return Next::Stop;
        }
        // Text frames carry text codecs, binary frames the others.
        Ok(Message::Text(payload)) if conn.wire.codec.is_text() => payload,
        Ok(Message::Binary(payload)) if !conn.wire.codec.is_text() => payload,
        Ok(Message::Text(_) | Message::Binary(_)) => {
            wrong_frame_type(session, conn.wire);
            return Next::Read;
        }
    };
    node.metrics.bytes_in.add(payload.len() as u64);
    Next::Handle(payload)
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
