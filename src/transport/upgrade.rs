//! WebSocket upgrades: checks made before any connection state exists (Origin,
//! subprotocol, draining), the handshake (fastwebsockets), and what the handshake saw,
//! handed to the session as a [`ConnInfo`].

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};

use super::admission::{AddressSlot, Refused, client_ip};
use super::http::{Reply, full, text};
use crate::node::Node;
use crate::protocol::Codec;
use crate::session::ConnInfo;
use crate::wire::WireFormat;

/// `GET /ws`: a client connection speaking protocol v1.
pub fn client(mut req: Request<Incoming>, node: Arc<Node>, peer: SocketAddr) -> Reply {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    }
    let slot = match admit(&req, &node, peer) {
        Ok(slot) => slot,
        Err(reply) => return *reply,
    };
    let info = conn_info(&req, peer);
    let offered = info.subprotocols.iter().map(AsRef::as_ref);
    let chosen = match Codec::negotiate(offered) {
        // A browser that offered only a bearer entry fails a handshake whose response
        // names no protocol: tell it what to offer instead.
        Ok(None) if !info.subprotocols.is_empty() => {
            return text(
                StatusCode::BAD_REQUEST,
                "offer roomcast.v1.json or roomcast.v1.msgpack beside roomcast.bearer.<token>\n",
            );
        }
        Ok(chosen) => chosen,
        Err(()) => {
            return text(
                StatusCode::BAD_REQUEST,
                "unsupported subprotocol; use roomcast.v1.json or roomcast.v1.msgpack\n",
            );
        }
    };
    if node.is_draining() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "node draining\n");
    }
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(error) => return text(StatusCode::BAD_REQUEST, &format!("{error}\n")),
    };
    let mut response = response.map(|_| full(bytes::Bytes::new()));
    if let Some(codec) = chosen {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(codec.subprotocol()),
        );
    }
    let wire = WireFormat::websocket(chosen.unwrap_or(Codec::Json));
    let tasks = node.tasks.clone();
    tasks.spawn(async move {
        // Held for as long as the connection lives.
        let _slot = slot;
        match upgrade.await {
            Ok(ws) => super::ws::serve(node, ws.into_inner().into_inner(), wire, info).await,
            Err(error) => tracing::debug!(%error, %peer, "upgrade failed"),
        }
    });
    response
}

/// `GET /echo`: the echo endpoint, under the same Origin rule and connection limits.
pub fn echo(mut req: Request<Incoming>, node: Arc<Node>, peer: SocketAddr) -> Reply {
    let slot = match admit(&req, &node, peer) {
        Ok(slot) => slot,
        Err(reply) => return *reply,
    };
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(error) => return text(StatusCode::BAD_REQUEST, &format!("{error}\n")),
    };
    let tasks = node.tasks.clone();
    tasks.spawn(async move {
        let _slot = slot;
        if let Ok(ws) = upgrade.await {
            super::echo::serve(node, ws.into_inner().into_inner()).await;
        }
    });
    response.map(|_| full(bytes::Bytes::new()))
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
