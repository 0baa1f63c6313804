//! What a connection's handshake showed, built by the transport at the upgrade and handed
//! to the session: where auth (a token in a subprotocol entry, a header or the query) and
//! per-IP limits start. Kept small: it lives as long as the connection.

use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The TCP peer (a load balancer's address when there is one in front).
    pub peer: SocketAddr,
    /// Which door the client came through: `ws` for now.
    pub transport: &'static str,
    /// The `Origin` header: browsers always send one.
    pub origin: Option<Box<str>>,
    /// Every `Sec-WebSocket-Protocol` entry offered, in order.
    pub subprotocols: Vec<Box<str>>,
    /// The request's query string, as sent (not decoded).
    pub query: Option<Box<str>>,
    /// The `Authorization` header, for clients that can set one.
    pub authorization: Option<Box<str>>,
}

impl ConnInfo {
    /// A connection about which nothing is known but its peer.
    pub fn new(peer: SocketAddr, transport: &'static str) -> Self {
        Self {
            peer,
            transport,
            origin: None,
            subprotocols: Vec::new(),
            query: None,
            authorization: None,
        }
    }
}
