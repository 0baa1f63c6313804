//! A client connection's socket once the handshake is done: plain TCP or TLS, split into a
//! read side the frame reader polls and a write side the writer owns.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio_rustls::server::TlsStream;
use tokio_util::io::poll_read_buf;

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
    /// of stream. Poll-based, so that a connection waiting for bytes keeps no future's
    /// state for it (an `async` read through tokio's readiness took 208 bytes).
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<std::io::Result<usize>> {
        match self {
            ReadSide::Tcp(stream) if buf.is_empty() => {
                // Through the stack, so that the buffer is allocated only when bytes came,
                // and to their size. Readiness is often stale (it clears only when a read
                // finds nothing), and reserving first kept a chunk in every waiting
                // connection (measured: 0.5 KiB per connection).
                let mut chunk = [const { MaybeUninit::uninit() }; READ_CHUNK];
                let mut read = ReadBuf::uninit(&mut chunk);
                ready!(Pin::new(stream).poll_read(cx, &mut read))?;
                buf.extend_from_slice(read.filled());
                Poll::Ready(Ok(read.filled().len()))
            }
            ReadSide::Tcp(stream) => {
                buf.reserve(READ_CHUNK);
                poll_read_buf(Pin::new(stream), cx, buf)
            }
            ReadSide::Tls(stream) => {
                buf.reserve(READ_CHUNK);
                poll_read_buf(Pin::new(stream), cx, buf)
            }
        }
    }

    /// [`Self::poll_read_into`] as a future.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_into(cx, buf)).await
    }
}

/// A client connection's stream once the handshake is done.
pub enum Socket {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The streams the server accepts, each able to become a [`Socket`].
pub trait IntoSocket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn into_socket(self) -> Socket;
}

impl IntoSocket for TcpStream {
    fn into_socket(self) -> Socket {
        Socket::Tcp(self)
    }
}

impl IntoSocket for TlsStream<TcpStream> {
    fn into_socket(self) -> Socket {
        Socket::Tls(Box::new(self))
    }
}

impl Socket {
    /// The read side the frame reader waits on and the write side the writer owns.
    pub fn split(self) -> (ReadSide, BoxWrite) {
        match self {
            Socket::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (ReadSide::Tcp(read), Box::new(write))
            }
            Socket::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (ReadSide::Tls(read), Box::new(write))
            }
        }
    }

    /// Takes the stream back from hyper after an upgrade it served (a WebSocket asked for
    /// on a connection that carried other requests first), with the bytes that arrived
    /// after the handshake. `None` for a stream this crate never hands hyper.
    pub fn from_upgraded(upgraded: Upgraded) -> Option<(Socket, Bytes)> {
        let upgraded = match upgraded.downcast::<TokioIo<Prefixed<TcpStream>>>() {
            Ok(parts) => {
                let (early, stream) = parts.io.into_inner().into_parts(parts.read_buf);
                return Some((Socket::Tcp(stream), early));
            }
            Err(upgraded) => upgraded,
        };
        let parts = upgraded
            .downcast::<TokioIo<Prefixed<TlsStream<TcpStream>>>>()
            .ok()?;
        let (early, stream) = parts.io.into_inner().into_parts(parts.read_buf);
        Some((Socket::Tls(Box::new(stream)), early))
    }
}

/// A stream with bytes already read from it put back in front: what hyper reads when the
/// node looked at a connection's first request head itself and left the request to hyper.
/// By hand because the only such type in reach (hyper-util's `Rewind`) is private, and
/// `AsyncReadExt::chain` gives up the write side.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }

    /// The bytes not read yet, those in `more` after them, and the stream.
    fn into_parts(self, more: Bytes) -> (Bytes, S) {
        let early = match (self.prefix.is_empty(), more.is_empty()) {
            (true, _) => more,
            (false, true) => self.prefix,
            (false, false) => [self.prefix, more].concat().into(),
        };
        (early, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
