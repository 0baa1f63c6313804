//! WebSocket upgrades: checks made before any connection state exists (Origin,
//! subprotocol, draining), the handshake (fastwebsockets' checks and answer), and what the
//! handshake saw, handed to the session as a [`ConnInfo`]. A connection's first request is
//! answered here directly ([`serve`]); a later one on a kept-alive connection through hyper.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::upgrade::UpgradeFut;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::admission::{AddressSlot, Refused, client_ip};
use super::head;
use super::http::{Reply, full, text};
use super::socket::{IntoSocket, Socket};
use crate::node::Node;
use crate::protocol::Codec;
use crate::session::ConnInfo;
use crate::wire::WireFormat;

/// A WebSocket upgrade that passed every check: the `101` answer and what the connection
/// starts with. Holds the connection's place among the node's connections.
pub struct Accepted {
    response: Response<Empty<Bytes>>,
    upgrade: UpgradeFut,
    slot: AddressSlot,
    endpoint: Endpoint,
}

enum Endpoint {
    Client {
        wire: WireFormat,
        /// Whether the client offered a subprotocol, so the answer must name one.
        named: bool,
        info: Box<ConnInfo>,
    },
    Echo,
}

/// The WebSocket endpoints: the paths whose upgrades the node answers without hyper.
pub fn is_endpoint<B>(req: &Request<B>, node: &Node) -> bool {
    req.method() == Method::GET
        && (req.uri().path() == "/ws" || (req.uri().path() == "/echo" && node.settings.echo))
        && fastwebsockets::upgrade::is_upgrade_request(req)
}

/// `GET /ws` or `GET /echo` through hyper: on a connection that carried other requests
/// first (the first request of a connection is answered by [`serve`]).
pub fn through_hyper(mut req: Request<Incoming>, node: Arc<Node>, peer: SocketAddr) -> Reply {
    let accepted = match accept(&mut req, &node, peer) {
        Ok(accepted) => accepted,
        Err(reply) => return *reply,
    };
    let Accepted {
        response,
        upgrade,
        slot,
        endpoint,
    } = accepted;
    let tasks = node.tasks.clone();
    tasks.spawn(async move {
        let upgraded = match upgrade.await {
            Ok(ws) => ws.into_inner().into_inner(),
            Err(error) => return tracing::debug!(%error, %peer, "upgrade failed"),
        };
        let Some((socket, early)) = Socket::from_upgraded(upgraded) else {
            // The server in this crate only ever hands hyper TCP and TLS streams.
            return tracing::error!(%peer, "upgraded connection is neither TCP nor TLS");
        };
        start(endpoint, slot, node, socket, early);
    });
    response.map(|_| full(Bytes::new()))
}

/// Answers a connection's first request, an upgrade to a WebSocket endpoint, and starts
/// the connection in a task of its own. `early` holds what the client sent after the head.
/// A task of its own because what a task's future holds across its `.await`s, every
/// connection keeps: this one with the handshake's state took 3.4 KiB; the connection's
/// own task is 896 bytes with its reader and writer (see `ws`).
pub async fn serve<S: IntoSocket>(
    mut stream: S,
    req: Box<Request<()>>,
    early: Bytes,
    node: Arc<Node>,
    peer: SocketAddr,
) {
    let Some((slot, endpoint)) = Box::pin(handshake(&mut stream, req, &node, peer)).await else {
        return;
    };
    start(endpoint, slot, node, stream.into_socket(), early);
}

/// Checks the upgrade and writes the answer: `101`, or a refusal (and then `None`).
async fn handshake<S: IntoSocket>(
    stream: &mut S,
    mut req: Box<Request<()>>,
    node: &Node,
    peer: SocketAddr,
) -> Option<(AddressSlot, Endpoint)> {
    let accepted = accept(&mut *req, node, peer);
    drop(req);
    let Accepted {
        response,
        slot,
        endpoint,
        ..
    } = match accepted {
        Ok(accepted) => accepted,
        Err(reply) => {
            head::answer(stream, *reply).await;
            return None;
        }
    };
    let answer = head::encode_switch(&response);
    drop(response);
    if let Err(error) = head::write(stream, answer).await {
        tracing::debug!(%error, %peer, "upgrade answer not written");
        return None;
    }
    Some((slot, endpoint))
}

/// Starts an upgraded connection in a task of its own; `slot` is held for as long as it
/// lives.
fn start(endpoint: Endpoint, slot: AddressSlot, node: Arc<Node>, socket: Socket, early: Bytes) {
    let tasks = node.tasks.clone();
    match endpoint {
        Endpoint::Client { wire, info, .. } => {
            tasks.spawn(super::ws::serve(node, socket, early, wire, info, slot));
        }
        Endpoint::Echo => {
            tasks.spawn(async move {
                let _slot = slot;
                super::echo::serve(node, socket, early).await;
            });
        }
    }
}

/// Every check an upgrade goes through, cheapest first, before any connection state
/// exists; the refusal is the reply to send.
fn accept<B>(req: &mut Request<B>, node: &Node, peer: SocketAddr) -> Result<Accepted, Box<Reply>> {
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade\n",
        )));
    }
    let slot = admit(req, node, peer)?;
    let endpoint = if req.uri().path() == "/echo" {
        Endpoint::Echo
    } else {
        client_endpoint(req, node, peer)?
    };
    let (mut response, upgrade) = fastwebsockets::upgrade::upgrade(req)
        .map_err(|error| Box::new(text(StatusCode::BAD_REQUEST, &format!("{error}\n"))))?;
    if let Endpoint::Client {
        wire, named: true, ..
    } = &endpoint
    {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(wire.codec.subprotocol()),
        );
    }
    Ok(Accepted {
        response,
        upgrade,
        slot,
        endpoint,
    })
}

/// `/ws`: the subprotocol chosen and what the handshake saw; refused while draining.
fn client_endpoint<B>(
    req: &Request<B>,
    node: &Node,
    peer: SocketAddr,
) -> Result<Endpoint, Box<Reply>> {
    let refuse = |status, body: &str| Err(Box::new(text(status, body)));
    let info = conn_info(req, peer);
    let offered = info.subprotocols.iter().map(AsRef::as_ref);
    let chosen = match Codec::negotiate(offered) {
        // A browser that offered only a bearer entry fails a handshake whose response
        // names no protocol: tell it what to offer instead.
        Ok(None) if !info.subprotocols.is_empty() => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "offer roomcast.v1.json or roomcast.v1.msgpack beside roomcast.bearer.<token>\n",
            );
        }
        Ok(chosen) => chosen,
        Err(()) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "unsupported subprotocol; use roomcast.v1.json or roomcast.v1.msgpack\n",
            );
        }
    };
    if node.is_draining() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "node draining\n");
    }
    Ok(Endpoint::Client {
        wire: WireFormat::websocket(chosen.unwrap_or(Codec::Json)),
        named: chosen.is_some(),
        info,
    })
}

/// A place among the node's connections, or the reply refusing one: before any
/// WebSocket work, so that a flood of upgrades costs only this check.
/// The Origin rule comes first: it costs nothing and refuses other sites' pages.
pub(super) fn admit<B>(
    req: &Request<B>,
    node: &Node,
    peer: SocketAddr,
) -> Result<AddressSlot, Box<Reply>> {
    if !origin_allowed(req, &node.settings.allowed_origins) {
        node.metrics.rejected_origin.inc();
        return Err(Box::new(text(
            StatusCode::FORBIDDEN,
            "origin not allowed\n",
        )));
    }
    let ip = client_ip(req, peer, &node.settings.limits.trusted_proxies);
    node.addresses.take(ip).map_err(|refused| {
        node.metrics.refused(refused);
        tracing::debug!(%ip, ?refused, "connection refused");
        Box::new(refusal(refused))
    })
}

/// 503 for a full node, 429 for a full address; both say when to come back.
fn refusal(refused: Refused) -> Reply {
    let (status, body) = match refused {
        Refused::Full => (StatusCode::SERVICE_UNAVAILABLE, "node full\n"),
        Refused::Address => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address\n",
        ),
    };
    let mut reply = text(status, body);
    reply
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    reply
}

/// What the request shows that the session may need. Every `Sec-WebSocket-Protocol`
/// header counts (a client may send several), each split at commas.
fn conn_info<B>(req: &Request<B>, peer: SocketAddr) -> Box<ConnInfo> {
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(Box::from)
    };
    let subprotocols = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(Box::from)
        .collect();
    Box::new(ConnInfo {
        origin: header(header::ORIGIN),
        subprotocols,
        query: req.uri().query().map(Box::from),
        authorization: header(header::AUTHORIZATION),
        ..ConnInfo::new(peer, "ws")
    })
}

/// Browsers always send `Origin`; other clients usually do not, and are allowed. A browser
/// is allowed from the node's own host, from a listed origin, or from anywhere with `*`.
fn origin_allowed<B>(req: &Request<B>, allowed: &[String]) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match (origin.split_once("://"), host) {
        (Some((_, origin_host)), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(origin: Option<&str>, host: &str) -> Request<()> {
        let mut b = Request::builder().header(header::HOST, host);
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn origin_rules() {
        let none: Vec<String> = vec![];
        assert!(origin_allowed(&req(None, "a:1"), &none));
        assert!(origin_allowed(&req(Some("http://a:1"), "a:1"), &none));
        assert!(!origin_allowed(&req(Some("http://evil"), "a:1"), &none));
        let list = vec!["https://app.example".to_string()];
        assert!(origin_allowed(
            &req(Some("https://app.example"), "a:1"),
            &list
        ));
        assert!(origin_allowed(
            &req(Some("http://x"), "a"),
            &["*".to_string()]
        ));
    }

    #[test]
    fn conn_info_carries_what_the_handshake_saw() {
        let req = Request::builder()
            .uri("/ws?room=a&x=1")
            .header(header::ORIGIN, "https://app.example")
            .header(header::SEC_WEBSOCKET_PROTOCOL, "roomcast.v1.json, other")
            .header(header::SEC_WEBSOCKET_PROTOCOL, "third")
            .header(header::AUTHORIZATION, "Bearer t")
            .body(())
            .unwrap();
        let peer: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        let info = conn_info(&req, peer);
        assert_eq!(info.peer, peer);
        assert_eq!(info.transport, "ws");
        assert_eq!(info.origin.as_deref(), Some("https://app.example"));
        let offered: Vec<&str> = info.subprotocols.iter().map(AsRef::as_ref).collect();
        assert_eq!(offered, ["roomcast.v1.json", "other", "third"]);
        assert_eq!(info.query.as_deref(), Some("room=a&x=1"));
        assert_eq!(info.authorization.as_deref(), Some("Bearer t"));
    }
}
