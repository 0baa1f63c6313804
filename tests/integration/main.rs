//! roomcast's integration tests: one binary, real nodes on port 0, real clients.

mod examples;
mod fanout;
mod http;
mod limits;
mod protocol;
mod support;
