//! What the HTTP transports (SSE, long-polling, `/rpc`) read from a request: its query,
//! the [`ConnInfo`] a session starts from, and how a refused command becomes an HTTP
//! answer.

use std::net::SocketAddr;

use hyper::header;
use hyper::{Request, StatusCode};

use super::http::{Reply, error};
use std::sync::Arc;

use crate::channel::ChannelName;
use crate::conn::Conn;
use crate::node::Node;
use crate::protocol::ErrorCode;
use crate::session::{CommandError, ConnInfo};
use crate::wire::WireFormat;

/// A request's query parameters, decoded; a name may repeat (`channel=a&channel=b`).
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned();
        Self(pairs.collect())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A whole number parameter of at least `min`, when present; a bad one is a 400.
    pub fn number(&self, name: &str, min: u64) -> Result<Option<u64>, Box<Reply>> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => match raw.parse::<u64>() {
                Ok(n) if n >= min => Ok(Some(n)),
                _ => Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("`{name}` must be a whole number of at least {min}"),
                ))),
            },
        }
    }

    /// Every `channel`, validated: at least one (unless `may_be_empty`), at most `max`,
    /// no repeats.
    pub fn channels(&self, max: usize, may_be_empty: bool) -> Result<Vec<ChannelName>, Box<Reply>> {
        let mut channels: Vec<ChannelName> = Vec::new();
        for (_, raw) in self.0.iter().filter(|(k, _)| k == "channel") {
            let channel = ChannelName::parse(raw).map_err(|e| {
                Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "bad_channel",
                    &e.to_string(),
                ))
            })?;
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        if channels.is_empty() && !may_be_empty {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "name at least one `channel`",
            )));
        }
        if channels.len() > max {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "limit_exceeded",
                &format!("at most {max} channels"),
            )));
        }
        Ok(channels)
    }
}

/// What a plain HTTP request shows a session: the token may come in `Authorization` or,
/// for browsers' `EventSource` and other header-less requests, as `?token=`.
pub fn conn_info<B>(req: &Request<B>, peer: SocketAddr, transport: &'static str) -> ConnInfo {
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(Box::from)
    };
    ConnInfo {
        origin: header(header::ORIGIN),
        query: req.uri().query().map(Box::from),
        authorization: header(header::AUTHORIZATION),
        ..ConnInfo::new(peer, transport)
    }
}

/// A new connection of an HTTP transport, registered with the node like a WebSocket's
/// (it counts, drains and closes the same way); 503 when the node is full or draining.
pub fn register(node: &Node, wire: WireFormat) -> Result<Arc<Conn>, Box<Reply>> {
    let conn = node.new_conn(wire);
    if node.register(&conn) {
        Ok(conn)
    } else {
        Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "node full or draining",
        )))
    }
}

/// The HTTP status a refused command answers with over plain HTTP.
pub fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthorized
        | ErrorCode::TokenMalformed
        | ErrorCode::TokenAlgorithm
        | ErrorCode::TokenSignature
        | ErrorCode::TokenAudience
        | ErrorCode::TokenIssuer
        | ErrorCode::TokenExpired
        | ErrorCode::TokenNotYetValid
        | ErrorCode::TokenMismatch => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::BadRequest
        | ErrorCode::UnknownOp
        | ErrorCode::BadChannel
        | ErrorCode::LimitExceeded => StatusCode::BAD_REQUEST,
    }
}

/// The HTTP status of a refused command: its code's, except that a namespace that is
/// not configured is a resource that does not exist (404), not a malformed request.
pub fn command_status(failure: &CommandError) -> StatusCode {
    match failure {
        CommandError::UnknownNamespace(_) => StatusCode::NOT_FOUND,
        other => status(other.code()),
    }
}

/// A refused command as an HTTP answer: `{"code", "message"}` with its status.
pub fn command_error(failure: &CommandError) -> Reply {
    error(
        command_status(failure),
        failure.code().as_str(),
        &failure.to_string(),
    )
}

/// 405, with the `Allow` header RFC 9110 asks for.
pub fn method_not_allowed(allow: &'static str) -> Reply {
    let mut reply = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "bad_request",
        &format!("use {allow}"),
    );
    reply
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    reply
}
