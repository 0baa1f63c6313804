//! Transports: how a client's bytes become messages for its session, and its outbox's
//! frames become bytes on its socket. `upgrade` turns an HTTP request into a connection
//! and the [`ConnInfo`](crate::session::ConnInfo) the session starts from.

pub mod admission;
pub mod api;
pub mod cursor;
pub mod echo;
pub mod frame;
pub mod head;
pub mod http;
pub mod message;
pub mod poll;
pub mod query;
pub mod reader;
pub mod rpc;
pub mod socket;
pub mod sse;
pub mod upgrade;
pub mod ws;
