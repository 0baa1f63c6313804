//! Transports: how bytes from a client become sessions, and queued frames become bytes.

pub mod echo;
pub mod reader;
pub mod ws;
