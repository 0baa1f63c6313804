//! A minimal WebSocket client for load: plain TCP from a chosen source address, the
//! handshake, masked client frames, and a frame reader that parses only what it needs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A target: host:port and path of a node's WebSocket endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .context("targets must be ws:// URLs")?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let addr: SocketAddr = host
            .parse()
            .or_else(|_| {
                use std::net::ToSocketAddrs;
                host.to_socket_addrs()?
                    .next()
                    .ok_or_else(|| std::io::Error::other("no address"))
            })
            .with_context(|| format!("cannot resolve {host}"))?;
        Ok(Self {
            addr,
            host: host.to_string(),
            path: format!("/{path}"),
        })
    }
}

/// Opens a TCP connection from `source` (when given) with IP_BIND_ADDRESS_NO_PORT, so the
/// kernel picks the port at connect time per (source, destination) pair: each loopback
/// source address then has its own ~28k ephemeral ports.
pub async fn tcp_connect(target: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(ip) = source {
        bind_address_no_port(&socket)?;
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    Ok(socket.connect(target).await?)
}

#[allow(unsafe_code)]
fn bind_address_no_port(socket: &tokio::net::TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a plain setsockopt on a socket this function borrows, with a pointer to a
    // live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A client on any door: the WebSocket frame reader, an SSE stream, or a long-poller.
/// Named for the door most runs use.
pub struct WsClient {
    pub read: Reader,
    pub write: OwnedWriteHalf,
}

/// Where a client's messages come from.
pub enum Reader {
    Ws(FrameReader),
    Sse(crate::http_client::SseReader),
    Poll(crate::http_client::Poller),
}

/// Which door clients use (`--transport`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Ws,
    Sse,
    Poll,
}

impl WsClient {
    /// The next frame (WebSocket) or message as a text frame (SSE, long-polling):
    /// (opcode, payload); `None` at the end.
    pub async fn next(&mut self) -> anyhow::Result<Option<(u8, BytesMut)>> {
        match &mut self.read {
            Reader::Ws(r) => r.next().await,
            Reader::Sse(r) => r.next().await,
            Reader::Poll(p) => p.next(&mut self.write).await,
        }
    }
}

/// Connects through `transport`, subscribed to `channel` where the door subscribes in
/// its URL (SSE, long-polling); returns once the first message (or poll) is read.
pub async fn connect_as(
    target: &Target,
    source: Option<IpAddr>,
    timeout: Duration,
    transport: Transport,
    channel: &str,
) -> anyhow::Result<WsClient> {
    if transport == Transport::Ws {
        return connect(target, source, timeout).await;
    }
    tokio::time::timeout(timeout, async {
        let stream = tcp_connect(target.addr, source).await?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let read = if transport == Transport::Sse {
            let path = format!("/sse?channel={channel}");
            let mut sse =
                crate::http_client::SseReader::open(read, &mut write, &target.host, &path).await?;
            sse.next().await?.context("closed before welcome")?;
            Reader::Sse(sse)
        } else {
            let poller =
                crate::http_client::Poller::open(read, &mut write, &target.host, channel).await?;
            Reader::Poll(poller)
        };
        Ok(WsClient { read, write })
    })
    .await
    .context("connect timed out")?
}

/// Connects and completes the handshake; returns once the `welcome` is read.
pub async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    timeout: Duration,
) -> anyhow::Result<WsClient> {
    tokio::time::timeout(timeout, async {
        let stream = tcp_connect(target.addr, source).await?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: bG9hZHRlc3QtY2xpZW50IQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            target.path, target.host
        );
        write.write_all(req.as_bytes()).await?;
        let mut read = FrameReader::new(read);
        read.read_head().await?;
        let (op, _) = read.next().await?.context("closed before welcome")?;
        if op != 1 {
            bail!("expected a welcome text frame, got opcode {op}");
        }
        Ok(WsClient {
            read: Reader::Ws(read),
            write,
        })
    })
    .await
    .context("handshake timed out")?
}

/// Encodes a masked client text frame.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x81);
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
    let mask: [u8; 4] = fastrand::u32(..).to_be_bytes();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A masked pong for a server ping.
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = text_frame(payload);
    f[0] = 0x8A;
    f
}

pub struct FrameReader {
    read: OwnedReadHalf,
    buf: BytesMut,
}

impl FrameReader {
    fn new(read: OwnedReadHalf) -> Self {
        Self {
            read,
            buf: BytesMut::with_capacity(4096),
        }
    }

    async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(16 * 1024);
        }
        Ok(self.read.read_buf(&mut self.buf).await? > 0)
    }

    async fn read_head(&mut self) -> anyhow::Result<()> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = self.buf.split_to(end + 4);
                if !head.starts_with(b"HTTP/1.1 101") {
                    let line = String::from_utf8_lossy(&head[..head.len().min(40)]).to_string();
                    bail!("upgrade refused: {line}");
                }
                return Ok(());
            }
            if !self.fill().await? {
                bail!("closed during handshake");
            }
        }
    }

    /// The next frame: (opcode, payload). `None` at end of stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<(u8, BytesMut)>> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    fn parse(&mut self) -> anyhow::Result<Option<(u8, BytesMut)>> {
        if self.buf.len() < 2 {
            return Ok(None);
        }
        let op = self.buf[0] & 0x0F;
        let (len, head) = match self.buf[1] & 0x7F {
            126 if self.buf.len() >= 4 => {
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 if self.buf.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if self.buf.len() < head + len {
            self.buf.reserve(head + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(head);
        Ok(Some((op, self.buf.split_to(len))))
    }
}
