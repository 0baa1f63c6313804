//! `POST /rpc`: one protocol request over plain HTTP, for clients on SSE or long-polling
//! (and scripts): `publish`, `history`, `presence`, `presence_count`, `ping`. The body is
//! the request as a WebSocket would send it; the answer is the `ok` or `error` it would
//! get back. Same auth (a token in `Authorization` or `?token=`), same namespace policy;
//! publishes share a budget per client address (`limits.publish_rate`), since there is no
//! connection to hang one on. Any node answers: nothing is kept between requests.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::http::{Reply, error, json_bytes};
use super::query;
use crate::conn::Conn;
use crate::node::Node;
use crate::protocol::{Command, ServerMsg};
use crate::session::{CommandError, Session, TokenBucket};
use crate::wire::WireFormat;

/// Publish budgets of HTTP clients, by address.
pub struct Budgets {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (TokenBucket, Instant)>>,
}

/// Past this many addresses, those idle for a minute are forgotten.
const MAX_TRACKED: usize = 10_000;

impl Budgets {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, (_, used)| now.duration_since(*used).as_secs() < 60);
        }
        let (bucket, used) = buckets
            .entry(ip)
            .or_insert_with(|| (TokenBucket::new(self.rate, self.burst), now));
        *used = now;
        bucket.take(now)
    }
}

pub async fn serve(req: Request<Incoming>, node: Arc<Node>, peer: SocketAddr) -> Reply {
    let info = Box::new(query::conn_info(&req, peer, "http"));
    let ip = super::admission::client_ip(&req, peer, &node.settings.limits.trusted_proxies);
    let max = node.settings.limits.max_message_size;
    let body = match read_body(req.into_body(), max).await {
        Ok(body) => body,
        Err(reply) => return *reply,
    };
    let conn = Arc::new(Conn::new(
        WireFormat::POLL,
        max,
        1,
        Arc::clone(&node.metrics),
    ));
    let mut session = Session::new(Arc::clone(&node), conn, info);
    let reply = match session.authenticate() {
        Err(failure) => query::command_error(&failure),
        Ok(()) => answer(&mut session, &node, ip, &body).await,
    };
    session.end().await;
    reply
}

/// Reads a request body of at most `max` bytes (413 beyond).
pub async fn read_body(body: Incoming, max: usize) -> Result<Bytes, Box<Reply>> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("the body is larger than {max} bytes"),
        ))),
    }
}

async fn answer(session: &mut Session, node: &Node, ip: IpAddr, body: &[u8]) -> Reply {
    let cmd = match crate::protocol::Codec::Json.decode(body) {
        Ok(cmd) => cmd,
        Err(rejection) => {
            return reply(&ServerMsg::from(&rejection), query::status(rejection.code));
        }
    };
    let id = cmd.id();
    let refused = match cmd {
        Command::Subscribe { .. } | Command::Unsubscribe { .. } => {
            Some("subscriptions live on a stream: use /sse, /poll or /ws")
        }
        Command::Connect { .. } | Command::Refresh { .. } => {
            Some("send the token with each request (Authorization: Bearer …)")
        }
        _ => None,
    };
    if let Some(message) = refused {
        let msg = ServerMsg::Error {
            id: Some(id),
            code: crate::protocol::ErrorCode::BadRequest,
            message,
        };
        return reply(&msg, StatusCode::BAD_REQUEST);
    }
    if matches!(cmd, Command::Publish { .. }) && !node.http_budgets.take(ip) {
        return failure(id, &CommandError::RateLimited, node);
    }
    match session.run(cmd).await {
        Ok(data) => reply(&ServerMsg::Ok { id, data }, StatusCode::OK),
        Err(e) => failure(id, &e, node),
    }
}

fn failure(id: u64, e: &CommandError, node: &Node) -> Reply {
    node.metrics.error(e.code());
    e.log(Some(id));
    let message = e.to_string();
    let msg = ServerMsg::Error {
        id: Some(id),
        code: e.code(),
        message: &message,
    };
    reply(&msg, query::command_status(e))
}

fn reply(msg: &ServerMsg<'_>, status: StatusCode) -> Reply {
    json_bytes(
        status,
        Bytes::from(crate::protocol::Codec::Json.encode(msg)),
    )
}
