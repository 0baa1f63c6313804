//! `GET /poll?channel=a&cursor=…&timeout=25`: long-polling, the door of last resort. Each
//! request is a short-lived session: it subscribes, resuming every channel from the
//! cursor, and answers at once with what is newer, or holds until something arrives or
//! the timeout passes. The answer's `cursor` goes into the next request. On channels
//! with history nothing is lost between polls, whichever node answers them; without
//! history only what arrives while a request is held is seen (and `gap` says so when a
//! cursor names a position). A held request holds a connection slot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use tokio::sync::oneshot;

use super::cursor::Cursor;
use super::http::{Reply, error, json_bytes};
use super::query::{self, Query};
use crate::conn::Batch;
use crate::node::Node;
use crate::session::Session;
use crate::wire::WireFormat;

/// How long a request is held when it does not say.
const DEFAULT_WAIT: Duration = Duration::from_secs(25);
/// The longest hold a request may ask for: below common proxy idle timeouts (60 s).
const MAX_WAIT: Duration = Duration::from_secs(55);

pub async fn serve(req: Request<Incoming>, node: Arc<Node>, peer: SocketAddr) -> Reply {
    let slot = match super::upgrade::admit(&req, &node, peer) {
        Ok(slot) => slot,
        Err(reply) => return *reply,
    };
    let query = Query::parse(req.uri().query());
    let channels = match query.channels(node.settings.limits.max_subscriptions, false) {
        Ok(channels) => channels,
        Err(reply) => return *reply,
    };
    let wait = query
        .get("timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(DEFAULT_WAIT, |s| Duration::from_secs(s).min(MAX_WAIT));
    let conn = match query::register(&node, WireFormat::POLL) {
        Ok(conn) => conn,
        Err(reply) => return *reply,
    };
    let info = Box::new(query::conn_info(&req, peer, "poll"));
    let mut session = Session::new(Arc::clone(&node), Arc::clone(&conn), info);
    session.set_transient();
    let resume = Cursor::parse(query.get("cursor").unwrap_or(""));
    let token = query.get("channel_token").map(str::to_owned);
    // The work runs in a task of its own so that its subscriptions are always undone,
    // even when the client goes away and hyper drops this future.
    let (done, answer) = oneshot::channel();
    let _guard = super::sse::CancelOnDrop(Arc::clone(&conn));
    let tasks = node.tasks.clone();
    tasks.spawn(async move {
        let _slot = slot;
        let reply = hold(session, &node, channels, resume, token, wait).await;
        let _ = done.send(reply);
    });
    answer.await.unwrap_or_else(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "poll ended without an answer",
        )
    })
}

async fn hold(
    mut session: Session,
    node: &Node,
    channels: Vec<crate::channel::ChannelName>,
    resume: Cursor,
    token: Option<String>,
    wait: Duration,
) -> Reply {
    let conn = Arc::clone(session.conn());
    let options = super::sse::Options {
        channel_token: token,
        ..Default::default()
    };
    let opened = super::sse::open(&mut session, &channels, &resume, &options, false).await;
    let reply = match opened {
        Err(failure) => query::command_error(&failure),
        Ok(mut cursor) => {
            let batch = tokio::select! {
                () = conn.cancelled() => None,
                batch = tokio::time::timeout(wait, conn.next_batch()) => batch.ok(),
            };
            answer(&mut cursor, batch)
        }
    };
    session.end().await;
    node.deregister(conn.id);
    reply
}

/// `{"cursor": …, "events": [...]}`: the events as a WebSocket would have received them.
fn answer(cursor: &mut Cursor, batch: Option<Batch>) -> Reply {
    let mut events: Vec<u8> = Vec::new();
    if let Some(Batch::Frames(frames)) = batch {
        for frame in &frames {
            let event = match super::sse::untag(&frame.frame) {
                Some((entry, event)) => {
                    cursor.apply(entry);
                    event
                }
                None => &frame.frame[..],
            };
            if !events.is_empty() {
                events.push(b',');
            }
            events.extend_from_slice(event);
        }
    }
    let cursor = serde_json::to_string(&cursor.to_string()).unwrap_or_else(|_| "\"\"".into());
    let mut body = Vec::with_capacity(events.len() + cursor.len() + 32);
    body.extend_from_slice(b"{\"cursor\":");
    body.extend_from_slice(cursor.as_bytes());
    body.extend_from_slice(b",\"events\":[");
    body.extend_from_slice(&events);
    body.extend_from_slice(b"]}");
    json_bytes(StatusCode::OK, Bytes::from(body))
}
