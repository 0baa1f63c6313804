//! roomcast: a multi-node WebSocket pub/sub broker.
//!
//! Data flow: `server` (HTTP routes) → `transport` (upgrade → `session::ConnInfo`;
//! frames ↔ messages; a reader and a writer in one task per connection) → `session` (protocol
//! state, one file per command) → `node` (the core: policy, first/last subscriber ↔ bus,
//! what bus events mean for clients) → `bus` (between nodes; reports back to the node
//! through `bus::BusEvents`) → `hub` (local fan-out, encoded once per `wire` format) →
//! `conn` (each connection's bounded outbox) → writer.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bus;
pub mod channel;
pub mod clock;
pub mod conn;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod reload;
pub mod server;
pub mod session;
pub mod settings;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod wire;
