//! A connection's first request head, read by the node itself so that a WebSocket upgrade
//! never goes through hyper: hyper's connection reserves an 8 KiB read buffer and an 8 KiB
//! header buffer for every request (fixed in hyper 1), and after a burst of upgrades the
//! allocator keeps those pages (measured: most of what 5,000 clients connecting at once
//! left behind). Here the head is read into a buffer that grows with the bytes that came,
//! parsed with `httparse`, and dropped before the connection starts. Anything that is not
//! a complete request head in reach goes to hyper with the bytes put back in front.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::http::Reply;

/// Room added at a time for the head: a browser's upgrade request is 400–700 bytes.
const CHUNK: usize = 1024;
/// Headers parsed here at most; a request with more goes to hyper (which allows 100).
const MAX_HEADERS: usize = 48;

/// What the first bytes of a connection held.
pub enum First {
    /// A complete request head, and every byte read: the head's `len` bytes, then what
    /// came after it (the client's first frames, when it did not wait for the answer).
    Head {
        request: Box<Request<()>>,
        bytes: Bytes,
        len: usize,
    },
    /// Everything read so far, for hyper: a head too large or with too many headers, one
    /// `httparse` refuses, or a connection closed early. hyper answers each as it did.
    Other(Bytes),
}

/// Reads until a request head is complete, `max` bytes have come, or the peer stops.
/// Not cancel-safe: the caller bounds it with the handshake timeout and drops the
/// connection when that passes.
pub async fn read_first<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> std::io::Result<First> {
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(CHUNK.min(max.saturating_sub(buf.len())).max(1));
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(First::Other(buf.freeze()));
        }
        match parse(&buf) {
            Parsed::Complete(request, len) => {
                let bytes = buf.freeze();
                return Ok(First::Head {
                    request,
                    bytes,
                    len,
                });
            }
            Parsed::Partial if buf.len() < max => continue,
            Parsed::Partial | Parsed::Refused => return Ok(First::Other(buf.freeze())),
        }
    }
}

enum Parsed {
    /// The request and the length of its head.
    Complete(Box<Request<()>>, usize),
    Partial,
    Refused,
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let len = match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Refused,
    };
    match request(&head) {
        Some(request) => Parsed::Complete(Box::new(request), len),
        None => Parsed::Refused,
    }
}

/// The parsed head as an `http` request, for the checks hyper's requests go through.
fn request(head: &httparse::Request<'_, '_>) -> Option<Request<()>> {
    let version = match head.version? {
        1 => Version::HTTP_11,
        _ => return None,
    };
    let mut builder = Request::builder()
        .method(Method::from_bytes(head.method?.as_bytes()).ok()?)
        .uri(head.path?.parse::<Uri>().ok()?)
        .version(version);
    for header in head.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    builder.body(()).ok()
}

/// The `101 Switching Protocols` answer of an upgrade, as bytes.
pub fn encode_switch<B>(response: &Response<B>) -> Vec<u8> {
    encode(response.status(), response.headers(), &[])
}

/// Writes an answer, consuming it: it is not held once written.
pub async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: Vec<u8>) -> std::io::Result<()> {
    stream.write_all(&bytes).await
}

/// Writes a refusal and closes the connection: after a refused upgrade the client opens a
/// new one anyway.
pub async fn answer<S: AsyncWrite + Unpin>(stream: &mut S, reply: Reply) {
    let (parts, body) = reply.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes());
    let mut headers = parts.headers;
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let bytes = encode(parts.status, &headers, &body);
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
}

/// How long a refusal may take to write before the connection is dropped without it.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

fn encode(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    let reason = status.canonical_reason().unwrap_or("");
    out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", status.as_u16()).as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn first(bytes: &[&[u8]], max: usize) -> First {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        for part in bytes {
            client.write_all(part).await.unwrap();
        }
        drop(client);
        read_first(&mut server, max).await.unwrap()
    }

    #[tokio::test]
    async fn a_head_split_anywhere_is_parsed_and_what_follows_kept() {
        let head = b"GET /ws?room=a HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Protocol: x, y\r\n\r\n";
        let First::Head {
            request,
            bytes,
            len,
        } = first(&[&head[..9], &head[9..], b"\x81"], 1024).await
        else {
            panic!("a head");
        };
        assert_eq!(len, head.len());
        assert_eq!(request.uri().path(), "/ws");
        assert_eq!(request.uri().query(), Some("room=a"));
        assert_eq!(request.headers()["sec-websocket-protocol"], "x, y");
        assert_eq!(&bytes[len..], b"\x81");
    }

    #[tokio::test]
    async fn what_is_not_a_head_in_reach_goes_to_hyper_whole() {
        let long = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 2000]].concat();
        for (bytes, max) in [
            (&b"GET / HTTP/1.1\r\nHost"[..], 1024),
            (&b"\x16\x03\x01 binary"[..], 1024),
            (&b"GET / HTTP/1.0\r\n\r\n"[..], 1024),
            (&long[..], 1024),
        ] {
            match first(&[bytes], max).await {
                First::Other(kept) => assert_eq!(&kept[..], &bytes[..kept.len()]),
                First::Head { .. } => {
                    panic!("{:?} is not for the node", String::from_utf8_lossy(bytes))
                }
            }
        }
    }
}
