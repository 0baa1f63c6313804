//! A client connection's socket once the handshake is done: plain TCP or TLS, split into a
//! read side the frame reader waits on and a write side the writer task owns.

use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWrite, ReadHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio_rustls::server::TlsStream;

pub type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// Room added at a time for incoming bytes, whatever length a frame header claims. Small:
/// client messages are mostly tens of bytes, and thousands of connections reading at once
/// (a connection burst) each hold one; a large frame still grows its buffer geometrically.
pub const READ_CHUNK: usize = 512;

/// Where a connection's bytes come from.
pub enum ReadSide {
    /// Waits for readiness before it allocates: an idle connection holds no buffer.
    Tcp(OwnedReadHalf),
    /// TLS records must be decrypted into a buffer, so one is reserved while waiting; the
    /// TLS session holds buffers of its own anyway.
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

impl ReadSide {
    /// Reads what has arrived into `buf`, growing it by at most a chunk. `Ok(0)` at end
    /// of stream. Cancel-safe: a dropped call loses no bytes.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            ReadSide::Tcp(stream) => loop {
                stream.readable().await?;
                buf.reserve(READ_CHUNK);
                match stream.try_read_buf(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            },
            ReadSide::Tls(stream) => {
                buf.reserve(READ_CHUNK);
                stream.read_buf(buf).await
            }
        }
    }
}

/// Takes the stream back from hyper: the bytes that arrived with the handshake, the read
/// side and the write side. `None` for a stream this crate never hands hyper.
pub fn split(upgraded: Upgraded) -> Option<(ReadSide, Bytes, BoxWrite)> {
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (read, write) = parts.io.into_inner().into_split();
            return Some((ReadSide::Tcp(read), parts.read_buf, Box::new(write)));
        }
        Err(upgraded) => upgraded,
    };
    let parts = upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>().ok()?;
    let (read, write) = tokio::io::split(parts.io.into_inner());
    Some((ReadSide::Tls(read), parts.read_buf, Box::new(write)))
}
