//! `GET /sse?channel=a&channel=b`: Server-Sent Events. The same session as a WebSocket
//! (auth, policy, limits, the slow-consumer rule), subscribed to the channels in the URL,
//! its pushes written as `text/event-stream` events named by their `op`. Every message
//! on a channel with history carries an `id` holding the stream's position on each of its
//! channels (see `cursor`), so an `EventSource` that reconnects with `Last-Event-ID`
//! resumes every channel where it stopped, on any node. Publishing and the other requests
//! go through `POST /rpc`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::cursor::Cursor;
use super::http::{Reply, error};
use super::query::{self, Query};
use crate::conn::{Batch, Conn};
use crate::node::Node;
use crate::protocol::{CloseCode, Command, ReplyData, ServerMsg};
use crate::session::{CommandError, Session};
use crate::wire::WireFormat;

/// How long an `EventSource` waits before it reconnects, sent as `retry:`.
const RETRY_MS: u64 = 2_000;

pub async fn serve(req: Request<Incoming>, node: Arc<Node>, peer: SocketAddr) -> Reply {
    let slot = match super::upgrade::admit(&req, &node, peer) {
        Ok(slot) => slot,
        Err(reply) => return *reply,
    };
    let query = Query::parse(req.uri().query());
    let channels = match query.channels(node.settings.limits.max_subscriptions, true) {
        Ok(channels) => channels,
        Err(reply) => return *reply,
    };
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok());
    let resume = Cursor::parse(last_event_id.or(query.get("cursor")).unwrap_or(""));
    let conn = match query::register(&node, WireFormat::SSE) {
        Ok(conn) => conn,
        Err(reply) => return *reply,
    };
    let info = Box::new(query::conn_info(&req, peer, "sse"));
    let mut session = Session::new(Arc::clone(&node), Arc::clone(&conn), info);
    let options = match Options::from_query(&query) {
        Ok(options) => options,
        Err(reply) => {
            node.deregister(conn.id);
            return *reply;
        }
    };
    let cursor = match open(&mut session, &channels, &resume, &options, true).await {
        Ok(cursor) => cursor,
        Err(failure) => {
            session.end().await;
            node.deregister(conn.id);
            return query::command_error(&failure);
        }
    };
    node.tasks.spawn(drive(session, Arc::clone(&node), slot));
    stream(conn, cursor, &node)
}

/// Authenticates, sends `welcome` (when asked) and subscribes to every channel, resuming
/// from the client's cursor; a channel that cannot resume gets `gap`. Returns the cursor
/// the client starts from: for each channel, where the client is, not where the channel
/// is (its missed messages are still to come). Shared with long-polling.
pub(super) async fn open(
    session: &mut Session,
    channels: &[crate::channel::ChannelName],
    resume: &Cursor,
    options: &Options,
    welcome: bool,
) -> Result<Cursor, CommandError> {
    session.authenticate()?;
    if welcome {
        session.welcome();
    }
    let mut cursor = Cursor::default();
    for channel in channels {
        let recover = resume.get(channel);
        let cmd = Command::Subscribe {
            id: 0,
            channel: channel.clone(),
            recover: recover.clone(),
            info: options.info.clone(),
            join_leave: options.join_leave,
            token: options.channel_token.clone(),
        };
        if let Some(ReplyData::Position {
            offset,
            epoch,
            recovered,
        }) = session.run(cmd).await?
        {
            match (recover, recovered) {
                (Some(from), Some(true)) => cursor.set(channel, from.offset, &from.epoch),
                (_, Some(false)) => {
                    cursor.set(channel, offset, &epoch);
                    let gap = ServerMsg::Gap {
                        channel: channel.as_str(),
                    };
                    let wire = session.conn().wire;
                    let _ = session.conn().push(wire.message(&gap));
                }
                _ => cursor.set(channel, offset, &epoch),
            }
        }
    }
    Ok(cursor)
}

/// What a stream asks for besides its channels, the same for each of them.
#[derive(Debug, Default)]
pub(super) struct Options {
    /// Presence info (`?info=<json>`).
    pub info: Option<Bytes>,
    /// `?join_leave=true`: `join` and `leave` events.
    pub join_leave: bool,
    /// A private channel's token (`?channel_token=`).
    pub channel_token: Option<String>,
}

impl Options {
    fn from_query(query: &Query) -> Result<Self, Box<Reply>> {
        let bad = |message: &str| Box::new(error(StatusCode::BAD_REQUEST, "bad_request", message));
        let info = match query.get("info") {
            None => None,
            Some(raw) => {
                let valid = serde_json::from_str::<serde::de::IgnoredAny>(raw).is_ok()
                    && crate::protocol::deliverable(raw.as_bytes());
                if !valid {
                    return Err(bad("`info` must be JSON every codec can carry"));
                }
                Some(Bytes::copy_from_slice(raw.as_bytes()))
            }
        };
        let join_leave = match query.get("join_leave") {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(_) => return Err(bad("`join_leave` must be true or false")),
        };
        Ok(Self {
            info,
            join_leave,
            channel_token: query.get("channel_token").map(str::to_owned),
        })
    }
}

/// Owns the session while the stream lives: token deadlines, then the unsubscribes.
async fn drive(mut session: Session, node: Arc<Node>, slot: super::admission::AddressSlot) {
    let _slot = slot;
    let conn = Arc::clone(session.conn());
    loop {
        let due = session.due();
        tokio::select! {
            () = conn.cancelled() => break,
            () = due => session.on_deadline(),
        }
    }
    session.end().await;
    node.deregister(conn.id);
    if let Some(code) = conn.close_code() {
        node.metrics.closed(code);
    }
}

/// Ends the connection when hyper drops the body: the client went away.
pub(super) struct CancelOnDrop(pub(super) Arc<Conn>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

struct Writer {
    conn: Arc<Conn>,
    cursor: Cursor,
    ping: tokio::time::Interval,
    metrics: Arc<crate::metrics::Metrics>,
    _guard: CancelOnDrop,
}

fn stream(conn: Arc<Conn>, cursor: Cursor, node: &Node) -> Reply {
    let every = node.settings.heartbeat_interval();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let writer = Writer {
        conn: Arc::clone(&conn),
        cursor,
        ping,
        metrics: Arc::clone(&node.metrics),
        _guard: CancelOnDrop(conn),
    };
    let retry = Bytes::from(format!("retry: {RETRY_MS}\n\n"));
    let first = futures_util::stream::once(async move { retry });
    let events = futures_util::stream::unfold(writer, |mut w| async move {
        let bytes = w.next().await?;
        w.metrics.bytes_out.add(bytes.len() as u64);
        Some((bytes, w))
    });
    let body = first
        .chain(events)
        .map(|bytes| Ok::<_, std::convert::Infallible>(Frame::data(bytes)));
    let mut reply = Response::new(StreamBody::new(body).boxed_unsync());
    let headers = reply.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and some other proxies buffer responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    reply
}

impl Writer {
    /// The next bytes to send; `None` once the connection is over.
    async fn next(&mut self) -> Option<Bytes> {
        tokio::select! {
            biased;
            () = self.conn.cancelled() => None,
            batch = self.conn.next_batch() => match batch {
                Batch::Frames(frames) => Some(self.render(frames.iter().map(|o| &o.frame))),
                Batch::Close(code) => {
                    self.conn.cancel();
                    Some(close_event(code))
                }
                Batch::Ended => None,
            },
            _ = self.ping.tick() => Some(Bytes::from_static(b": ping\n\n")),
        }
    }

    /// Replaces each message's tag with the stream's cumulative `id:`.
    fn render<'a>(&mut self, frames: impl Iterator<Item = &'a Bytes>) -> Bytes {
        let mut out = Vec::new();
        for frame in frames {
            match untag(frame) {
                Some((entry, event)) => {
                    self.cursor.apply(entry);
                    out.extend_from_slice(b"id: ");
                    out.extend_from_slice(self.cursor.to_string().as_bytes());
                    out.push(b'\n');
                    out.extend_from_slice(event);
                }
                None => out.extend_from_slice(frame),
            }
        }
        Bytes::from(out)
    }
}

/// Splits a tagged frame (`\0<entry>\n<rest>`) into its cursor entry and the rest.
pub fn untag(frame: &[u8]) -> Option<(&str, &[u8])> {
    let rest = frame.strip_prefix(b"\0")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let entry = std::str::from_utf8(&rest[..end]).ok()?;
    Some((entry, &rest[end + 1..]))
}

/// The last event of a stream the node ends: the close code a WebSocket would have got.
fn close_event(code: CloseCode) -> Bytes {
    Bytes::from(format!(
        "event: close\ndata: {{\"code\":{},\"reason\":\"{}\"}}\n\n",
        code.code(),
        code.reason()
    ))
}
