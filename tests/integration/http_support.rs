//! Plain HTTP for the SSE, long-poll, `/rpc` and API tests: requests over raw sockets, and
//! an SSE reader that parses events as an `EventSource` would.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TIMEOUT;

/// One request; returns the status and the body (JSON when it parses, else a string).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT * 7, stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, value)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value) {
    let mut headers = headers.to_vec();
    headers.push(("Content-Type", "application/json"));
    request(addr, "POST", path, &headers, body.to_string().as_bytes()).await
}

/// One SSE event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// A `text/event-stream` being read.
pub struct Sse {
    stream: TcpStream,
    buf: String,
    pub status: u16,
}

impl Sse {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut sse = Self {
            stream,
            buf: String::new(),
            status: 0,
        };
        while !sse.buf.contains("\r\n\r\n") {
            sse.fill().await;
        }
        let (head, rest) = sse.buf.split_once("\r\n\r\n").unwrap();
        sse.status = head[9..12].parse().unwrap();
        sse.buf = rest.to_string();
        sse
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk))
            .await
            .expect("bytes in time")
            .unwrap();
        assert!(n > 0, "the stream ended");
        self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }

    /// The next event with data (comments and `retry:` skipped). Chunked encoding's size
    /// lines are dropped on the way: they never look like SSE fields.
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                let mut event = Event::default();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event.event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        event.id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v);
                    }
                }
                if !data.is_empty() {
                    event.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    return event;
                }
                continue;
            }
            self.fill().await;
        }
    }

    /// The next `message` event.
    pub async fn next_message(&mut self) -> Event {
        loop {
            let event = self.next().await;
            if event.event == "message" {
                return event;
            }
        }
    }
}
