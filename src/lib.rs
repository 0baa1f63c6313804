//! roomcast: a multi-node WebSocket pub/sub broker.
//!
//! Data flow: `server` (HTTP, upgrade) → `transport::ws` (reader and writer task per
//! connection) → `session` (protocol state) → `node` (orchestration) → `bus` (between
//! nodes) → `hub` (local fan-out) → `conn` (bounded queue) → writer.
#![forbid(unsafe_code)]

pub mod bus;
pub mod channel;
pub mod conn;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod server;
pub mod session;
pub mod settings;
pub mod telemetry;
pub mod transport;
