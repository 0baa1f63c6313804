//! HTTP responses every route builds: one body type for whole bodies and streams (SSE),
//! and the small helpers for text and JSON answers.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// A response body: whole, or streamed as it is written.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

pub type Reply = Response<Body>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &str) -> Reply {
    with_type(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(body.as_bytes()),
    )
}

/// A JSON response.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Reply {
    with_type(status, "application/json", Bytes::from(body.to_string()))
}

/// A JSON response from bytes that already are JSON.
pub fn json_bytes(status: StatusCode, body: Bytes) -> Reply {
    with_type(status, "application/json", body)
}

/// A JSON error in the shape every HTTP route uses: `{"code", "message"}`, the code one
/// of the protocol's error codes.
pub fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    json(
        status,
        &serde_json::json!({"code": code, "message": message}),
    )
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
