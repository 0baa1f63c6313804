//! Test harness: real nodes on port 0, real WebSocket clients, raw sockets for bad input.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast::node::Node;
use roomcast::settings::Settings;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct TestNode {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    pub server: JoinHandle<()>,
}

impl TestNode {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings {
            node_id: "test".into(),
            ..Settings::default()
        };
        settings.shutdown.drain_window_ms = 200;
        settings.shutdown.grace_ms = 2_000;
        // The tests read /metrics on the node's one port.
        settings.metrics.public = true;
        configure(&mut settings);
        settings.validate().expect("valid test settings");
        let node = Node::new(settings).expect("node starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(roomcast::server::serve(listener, Arc::clone(&node)));
        Self { addr, node, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub async fn json(&self) -> Client {
        Client::connect(&self.url("/ws"), None).await
    }

    pub async fn msgpack(&self) -> Client {
        Client::connect(&self.url("/ws"), Some("roomcast.v1.msgpack")).await
    }

    /// A plain HTTP/1.1 GET; returns the status code and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path, &[]).await
    }

    pub async fn stop(self) {
        self.node.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.server)
            .await
            .expect("server stops in time")
            .unwrap();
    }
}

pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub msgpack: bool,
    next_id: u64,
    /// Messages read while waiting for a reply, handed out by `recv` first.
    pending: std::collections::VecDeque<Value>,
}

/// What a client saw when the server closed.
#[derive(Debug, PartialEq)]
pub enum Closed {
    Code(u16),
    /// The socket ended without a close frame.
    NoFrame,
}

impl Client {
    pub async fn connect(url: &str, protocol: Option<&str>) -> Self {
        Self::try_connect(url, protocol, &[])
            .await
            .expect("connects")
    }

    pub async fn try_connect(
        url: &str,
        protocol: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> Result<Self, tungstenite::Error> {
        let (client, welcome) = Self::open(url, protocol, headers).await?;
        assert_eq!(welcome["op"], "welcome", "{welcome}");
        Ok(client)
    }

    /// Completes the handshake and returns the first message, whatever it is.
    pub async fn open(
        url: &str,
        protocol: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> Result<(Self, Value), tungstenite::Error> {
        let mut req = url.into_client_request().unwrap();
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        for (k, v) in headers {
            req.headers_mut().insert(*k, v.parse().unwrap());
        }
        let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .expect("handshake in time")?;
        let mut client = Self {
            ws,
            msgpack: protocol.is_some_and(|p| p.starts_with("roomcast.v1.msgpack")),
            next_id: 1,
            pending: Default::default(),
        };
        let first = client.recv().await;
        Ok((client, first))
    }

    pub async fn send(&mut self, value: Value) {
        let msg = if self.msgpack {
            Message::Binary(rmp_serde::to_vec_named(&value).unwrap().into())
        } else {
            Message::Text(value.to_string().into())
        };
        self.ws.send(msg).await.unwrap();
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.unwrap();
    }

    /// The next protocol message, skipping pings and pongs.
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        self.recv_wire().await
    }

    async fn recv_wire(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a message in time")
                .expect("stream open")
                .expect("no error");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                Message::Binary(b) => return rmp_serde::from_slice(&b).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next `message` push, skipping replies and other pushes.
    pub async fn next_message(&mut self) -> Value {
        loop {
            let msg = self.recv().await;
            if msg["op"] == "message" {
                return msg;
            }
        }
    }

    /// Sends a request with a fresh id and returns the reply to it.
    pub async fn request(&mut self, mut value: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        value["id"] = id.into();
        self.send(value).await;
        loop {
            let reply = self.recv_wire().await;
            if reply["id"] == id && reply["op"] != "message" {
                return reply;
            }
            self.pending.push_back(reply);
        }
    }

    pub async fn subscribe(&mut self, channel: &str) {
        let reply = self
            .request(serde_json::json!({"op": "subscribe", "channel": channel}))
            .await;
        assert_eq!(reply["op"], "ok", "{reply}");
    }

    pub async fn publish(&mut self, channel: &str, data: Value) -> Value {
        self.request(serde_json::json!({"op": "publish", "channel": channel, "data": data}))
            .await
    }

    /// Reads until the server closes; returns the close code seen.
    pub async fn closed(&mut self) -> Closed {
        loop {
            let next = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("close in time");
            match next {
                Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
                    return Closed::Code(code.into());
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Closed::NoFrame,
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// A socket that speaks raw bytes after a valid handshake, for frames no client library
/// would produce.
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    /// A client of `/ws`, past its `welcome`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut raw = Self::handshake(addr, "/ws").await;
        let (op, _) = raw.read_frame().await.expect("welcome");
        assert_eq!(op, 1);
        raw
    }

    /// A client of `/echo`, which sends nothing first.
    pub async fn connect_echo(addr: SocketAddr) -> Self {
        Self::handshake(addr, "/echo").await
    }

    async fn handshake(addr: SocketAddr, path: &str) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        Self::upgrade(stream, path, &[]).await
    }

    /// Upgrades `stream` to a WebSocket on `path`, sending `early` (whole client frames)
    /// in the same write as the request, before any answer.
    pub async fn upgrade(mut stream: TcpStream, path: &str, early: &[u8]) -> Self {
        let addr = stream.peer_addr().unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(early);
        stream.write_all(&req).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        Self { stream }
    }

    /// Sends one client frame (masked, as RFC 6455 requires of clients).
    pub async fn send_frame(&mut self, first_byte: u8, payload: &[u8]) {
        let out = Self::frame(first_byte, payload);
        self.stream.write_all(&out).await.unwrap();
    }

    /// One client frame's bytes (masked).
    pub fn frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first_byte];
        let mask = [1u8, 2, 3, 4];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Reads one server frame: (opcode, payload); `None` at end of stream.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        tokio::time::timeout(TIMEOUT, self.stream.read_exact(&mut head))
            .await
            .expect("frame in time")
            .ok()?;
        let len = match head[1] & 0x7F {
            126 => {
                let mut l = [0u8; 2];
                self.stream.read_exact(&mut l).await.ok()?;
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                self.stream.read_exact(&mut l).await.ok()?;
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some((head[0] & 0x0F, payload))
    }

    /// Reads frames until a close frame; returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            let (op, payload) = self.read_frame().await?;
            if op == 8 {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }
}

/// Waits until `cond` holds, for at most [`TIMEOUT`].
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
