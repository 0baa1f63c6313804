//! The HTTP API for backends (`/api/…`), behind `api.key` (`Authorization: Bearer <key>`,
//! compared in constant time); off, with 404, while no key is set. A convenience beside
//! the one documented way to publish (over Redis): the same checks on what is published,
//! no client policy (backends may publish anywhere a namespace exists). Schema:
//! `proto/openapi.yaml`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use super::http::{Reply, error, json as json_reply, json_bytes};
use super::query::{self, Query};
use crate::channel::ChannelName;
use crate::conn::Conn;
use crate::node::Node;
use crate::protocol::{Codec, Command, ServerMsg};
use crate::session::{CommandError, Session};
use crate::wire::WireFormat;

/// Most channels one broadcast may name.
pub const MAX_BROADCAST: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody<'a> {
    channels: Vec<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

pub async fn serve(req: Request<Incoming>, node: Arc<Node>, peer: SocketAddr) -> Reply {
    let Some(key) = node.settings.api.key.as_deref() else {
        return super::http::text(StatusCode::NOT_FOUND, "not found\n");
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(key.as_bytes()))) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key",
        );
    }
    let path = req.uri().path().to_owned();
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    let max = node.settings.limits.max_message_size;
    match (method, path.as_str()) {
        (Method::GET, "/api/channels") => match node.channels().await {
            Ok(channels) => {
                let list: Vec<_> = channels
                    .into_iter()
                    .map(|(channel, n)| json!({"channel": channel, "subscribers": n}))
                    .collect();
                json_reply(StatusCode::OK, &json!({ "channels": list }))
            }
            Err(e) => query::command_error(&CommandError::from(e)),
        },
        (Method::POST, "/api/disconnect") => {
            let body = match super::rpc::read_body(req.into_body(), 4096).await {
                Ok(body) => body,
                Err(reply) => return *reply,
            };
            disconnect(&node, &body).await
        }
        (_, "/api/channels") => query::method_not_allowed("GET"),
        (_, "/api/disconnect") => query::method_not_allowed("POST"),
        (Method::POST, "/api/publish" | "/api/broadcast") => {
            let body = match super::rpc::read_body(req.into_body(), max + 16 * 1024).await {
                Ok(body) => body,
                Err(reply) => return *reply,
            };
            if path == "/api/publish" {
                publish(&node, &body).await
            } else {
                broadcast(&node, &body).await
            }
        }
        (Method::GET, p) if p.starts_with("/api/history/") => {
            let channel = &p["/api/history/".len()..];
            let numbers = (
                query.number("since", 0),
                query.number("before", 0),
                query.number("limit", 0),
            );
            let (since, before, limit) = match numbers {
                (Ok(since), Ok(before), Ok(limit)) => (since, before, limit),
                (Err(reply), _, _) | (_, Err(reply), _) | (_, _, Err(reply)) => return *reply,
            };
            let cmd = |channel| Command::History {
                id: 0,
                channel,
                since,
                before,
                limit,
            };
            read(&node, peer, channel, cmd).await
        }
        (Method::GET, p) if p.starts_with("/api/presence/") => {
            let channel = &p["/api/presence/".len()..];
            let limit = match query.number("limit", 1) {
                Ok(limit) => limit,
                Err(reply) => return *reply,
            };
            if query.get("cursor").is_some_and(|c| c.len() > 256) {
                let message = "`cursor` must be a string from a presence reply";
                return error(StatusCode::BAD_REQUEST, "bad_request", message);
            }
            let cmd = |channel| Command::Presence {
                id: 0,
                channel,
                cursor: query.get("cursor").map(str::to_owned),
                limit,
            };
            read(&node, peer, channel, cmd).await
        }
        (_, "/api/publish" | "/api/broadcast") => query::method_not_allowed("POST"),
        (_, p) if p.starts_with("/api/history/") || p.starts_with("/api/presence/") => {
            query::method_not_allowed("GET")
        }
        _ => error(StatusCode::NOT_FOUND, "bad_request", "no such API route"),
    }
}

/// The data as JSON text every codec can carry, or the answer refusing it.
fn checked_data(node: &Node, data: &RawValue) -> Result<Bytes, Box<Reply>> {
    let bytes = data.get().as_bytes();
    if bytes.len() > node.settings.limits.max_message_size {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "data is larger than limits.max_message_size",
        )));
    }
    if !crate::protocol::deliverable(bytes) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "data is nested deeper than 127 levels or has a number no double can hold",
        )));
    }
    Ok(Bytes::copy_from_slice(bytes))
}

fn bad_json(e: &serde_json::Error) -> Reply {
    error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        &format!("bad JSON body: {e}"),
    )
}

/// A channel that exists: valid name, known namespace.
fn channel(node: &Node, raw: &str) -> Result<ChannelName, Box<Reply>> {
    let channel = ChannelName::parse(raw).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_channel",
            &e.to_string(),
        ))
    })?;
    if node.settings.namespace(channel.namespace()).is_none() {
        let message = format!("unknown namespace {:?}", channel.namespace());
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "bad_channel",
            &message,
        )));
    }
    Ok(channel)
}

async fn publish(node: &Node, body: &[u8]) -> Reply {
    let parsed: PublishBody<'_> = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(e) => return bad_json(&e),
    };
    let (channel, data) = match (
        channel(node, &parsed.channel),
        checked_data(node, parsed.data),
    ) {
        (Ok(channel), Ok(data)) => (channel, data),
        (Err(reply), _) | (_, Err(reply)) => return *reply,
    };
    match node.publish(&channel, data).await {
        Ok(published) => json_reply(StatusCode::OK, &position(published.position.as_ref())),
        Err(e) => query::command_error(&CommandError::from(e)),
    }
}

async fn broadcast(node: &Node, body: &[u8]) -> Reply {
    let parsed: BroadcastBody<'_> = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(e) => return bad_json(&e),
    };
    if parsed.channels.is_empty() || parsed.channels.len() > MAX_BROADCAST {
        let message = format!("name 1 to {MAX_BROADCAST} channels");
        return error(StatusCode::BAD_REQUEST, "bad_request", &message);
    }
    let data = match checked_data(node, parsed.data) {
        Ok(data) => data,
        Err(reply) => return *reply,
    };
    let mut channels = Vec::with_capacity(parsed.channels.len());
    for raw in &parsed.channels {
        match channel(node, raw) {
            Ok(channel) => channels.push(channel),
            Err(reply) => return *reply,
        }
    }
    let mut results = Vec::with_capacity(channels.len());
    for channel in &channels {
        let mut result = match node.publish(channel, data.clone()).await {
            Ok(published) => position(published.position.as_ref()),
            Err(e) => {
                let e = CommandError::from(e);
                json!({"code": e.code().as_str(), "message": e.to_string()})
            }
        };
        result["channel"] = json!(channel.as_str());
        results.push(result);
    }
    json_reply(StatusCode::OK, &json!({ "results": results }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: String,
}

async fn disconnect(node: &Node, body: &[u8]) -> Reply {
    let parsed: DisconnectBody = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(e) => return bad_json(&e),
    };
    if parsed.user.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_request", "`user` is empty");
    }
    match node.disconnect_user(&parsed.user).await {
        Ok(()) => json_reply(StatusCode::OK, &json!({})),
        Err(e) => query::command_error(&CommandError::from(e)),
    }
}

fn position(position: Option<&crate::bus::StreamPosition>) -> serde_json::Value {
    match position {
        Some(p) => json!({"offset": p.offset, "epoch": &*p.epoch}),
        None => json!({}),
    }
}

/// `history` and `presence` as a backend: a session whose identity may read anything.
async fn read(
    node: &Arc<Node>,
    peer: SocketAddr,
    raw: &str,
    cmd: impl FnOnce(ChannelName) -> Command,
) -> Reply {
    let raw = form_urlencoded::parse(format!("c={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let channel = match channel(node, &raw) {
        Ok(channel) => channel,
        Err(reply) => return *reply,
    };
    let conn = Arc::new(Conn::new(WireFormat::POLL, 1, 1, Arc::clone(&node.metrics)));
    let info = Box::new(crate::session::ConnInfo::new(peer, "api"));
    let mut session = Session::trusted(Arc::clone(node), conn, info);
    let reply = match session.run(cmd(channel)).await {
        Ok(data) => {
            let msg = Codec::Json.encode(&ServerMsg::Ok { id: 0, data });
            // The reply's fields without `op` and `id`: the resource itself.
            let mut value: serde_json::Value =
                serde_json::from_slice(&msg).unwrap_or_else(|_| json!({}));
            if let Some(object) = value.as_object_mut() {
                object.remove("op");
                object.remove("id");
            }
            json_bytes(StatusCode::OK, Bytes::from(value.to_string()))
        }
        Err(e) => query::command_error(&e),
    };
    session.end().await;
    reply
}
