//! Transports: how a client's bytes become messages for its session, and its outbox's
//! frames become bytes on its socket. `upgrade` turns an HTTP request into a connection
//! and the [`ConnInfo`](crate::session::ConnInfo) the session starts from.

pub mod admission;
pub mod echo;
pub mod frame;
pub mod message;
pub mod reader;
pub mod socket;
pub mod upgrade;
pub mod ws;
