//! A connection's write side: the outbox's frames onto the socket, batched.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::CLOSE_WRITE_TIMEOUT;
use crate::conn::{Batch, Conn, Outgoing};
use crate::metrics::Metrics;
use crate::protocol::CloseCode;
use crate::transport::frame::close_frame;
use crate::transport::socket::BoxWrite;

/// Writes what the outbox hands out until the connection ends; then ends it for everyone
/// else (the reader included).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(super) fn write_loop<'a>(
    conn: &'a Conn,
    write: &'a mut BoxWrite,
    metrics: &'a Metrics,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        loop {
            let frames = match conn.next_batch().await {
                Batch::Frames(frames) => frames,
                Batch::Ended => {
                    // Aborted (e.g. slow consumer): the socket may be stuck, so only try briefly.
                    if let Some(code) = conn.close_code() {
                        let brief = Duration::from_millis(100);
                        Box::pin(write_close(write, code, brief, false)).await;
                    }
                    break;
                }
                Batch::Close(code) => {
                    Box::pin(write_close(write, code, CLOSE_WRITE_TIMEOUT, true)).await;
                    break;
                }
            };
            let mut out = Outbound::new(&frames);
            // Most writes complete at once; one the socket makes wait watches for the end
            // meanwhile, in a box: that watch is larger than the rest of the writer, and
            // only needed then.
            let first = poll_fn(|cx| Poll::Ready(out.poll_write(write, cx))).await;
            let result = match first {
                Poll::Ready(result) => result,
                Poll::Pending => match Box::pin(out.write_unless_ended(conn, write)).await {
                    Some(result) => result,
                    None => break,
                },
            };
            if let Err(error) = result {
                tracing::debug!(%error, "write failed");
                break;
            }
            record_written(metrics, &frames);
        }
        // Nothing more will be written, so the connection is over.
        conn.cancel();
    }
}

/// Writes a close frame, then shuts the socket's write side down if asked, giving up
/// after `limit`. Boxed by its callers: each connection's task keeps room for the largest
/// step it may take, and this one is taken once.
pub(super) async fn write_close(
    write: &mut BoxWrite,
    code: CloseCode,
    limit: Duration,
    shutdown: bool,
) {
    let frame = close_frame(code.code(), code.reason());
    let _ = tokio::time::timeout(limit, async {
        write.write_all(&frame).await?;
        if shutdown {
            write.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// A batch of frames on its way to the socket: every ready frame in one `write` where the
/// kernel takes it all (on loopback one write of many small frames costs about what one
/// write of one does), and how much of it the socket took so far.
struct Outbound<'a> {
    bytes: Cow<'a, [u8]>,
    at: usize,
}

impl<'a> Outbound<'a> {
    fn new(frames: &'a [Outgoing]) -> Self {
        let bytes = match frames {
            // Borrowed: every subscriber's frame is the same `Bytes`, and a clone per write
            // was an atomic on one cache line from every worker (2% of node CPU).
            [one] => Cow::Borrowed(&one.frame[..]),
            _ => {
                let total = frames.iter().map(|o| o.frame.len()).sum();
                let mut buf = Vec::with_capacity(total);
                for o in frames {
                    buf.extend_from_slice(&o.frame);
                }
                Cow::Owned(buf)
            }
        };
        Self { bytes, at: 0 }
    }

    /// Writes on from where the socket stopped taking bytes, until all are written.
    fn poll_write(&mut self, write: &mut BoxWrite, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.at < self.bytes.len() {
            let n = ready!(Pin::new(&mut *write).poll_write(cx, &self.bytes[self.at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.at += n;
        }
        Poll::Ready(Ok(()))
    }

    /// The rest of the write; `None` if the connection must end before the socket takes it.
    async fn write_unless_ended(
        &mut self,
        conn: &Conn,
        write: &mut BoxWrite,
    ) -> Option<io::Result<()>> {
        tokio::select! {
            biased;
            () = conn.cancelled() => None,
            result = poll_fn(|cx| self.poll_write(write, cx)) => Some(result),
        }
    }
}

/// Bytes out, and publish-to-write latency for the frames that carry a message.
fn record_written(metrics: &Metrics, frames: &[Outgoing]) {
    let bytes: usize = frames.iter().map(|o| o.frame.len()).sum();
    metrics.bytes_out.add(bytes as u64);
    if frames.iter().any(|o| o.published_ms != 0) {
        let now_us = crate::clock::unix_micros();
        for o in frames.iter().filter(|o| o.published_ms != 0) {
            metrics
                .publish_to_write
                .observe_us(now_us.saturating_sub(o.published_ms * 1000));
        }
    }
}
