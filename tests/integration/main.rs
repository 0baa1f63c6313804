//! roomcast's integration tests: one binary, real nodes on port 0, real clients.

mod admission;
mod auth;
mod cluster;
mod examples;
mod fanout;
mod hostile;
mod http;
mod http_support;
mod http_transports;
mod limits;
mod presence;
mod protocol;
mod recovery;
mod redis_cluster;
mod redis_failures;
mod redis_reshard;
mod redis_support;
mod sentinel;
mod support;
mod tls;
mod tracing;
