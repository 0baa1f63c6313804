//! A connection's write side: the outbox's frames onto the socket, batched.

use std::future::Future;
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

/// Writes what the outbox hands out until the connection ends; then says so.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(super) fn write_loop<'a>(
    conn: &'a Conn,
    mut write: BoxWrite,
    metrics: &'a Metrics,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        loop {
            let batch = conn.next_batch().await;
            match batch {
                Batch::Ended => {
                    // Aborted (e.g. slow consumer): the socket may be stuck, so only try briefly.
                    if let Some(code) = conn.close_code() {
                        let brief = Duration::from_millis(100);
                        Box::pin(write_close(&mut write, code, brief, false)).await;
                    }
                    break;
                }
                Batch::Frames(frames) => {
                    let Some(result) = write_unless_ended(conn, &mut write, &frames).await else {
                        break;
                    };
                    if let Err(error) = result {
                        tracing::debug!(%error, "write failed");
                        break;
                    }
                    record_written(metrics, &frames);
                }
                Batch::Close(code) => {
                    Box::pin(write_close(&mut write, code, CLOSE_WRITE_TIMEOUT, true)).await;
                    break;
                }
            }
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

/// Writes the frames, unless the connection must end before the socket takes them. Every
/// ready frame goes into one `write` where the kernel takes it all: on loopback one write
/// of many small frames costs about what one write of one does.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn write_unless_ended<'a>(
    conn: &'a Conn,
    write: &'a mut BoxWrite,
    frames: &'a [Outgoing],
) -> impl Future<Output = Option<std::io::Result<()>>> + Send + 'a {
    async move {
        let joined: Vec<u8>;
        let bytes: &[u8] = match frames {
            [one] => &one.frame,
            _ => {
                let total = frames.iter().map(|o| o.frame.len()).sum();
                let mut buf = Vec::with_capacity(total);
                for o in frames {
                    buf.extend_from_slice(&o.frame);
                }
                joined = buf;
                &joined
            }
        };
        let mut at = 0;
        // Most writes complete at once, and need nothing kept while they wait.
        let first =
            std::future::poll_fn(|cx| Poll::Ready(poll_write_from(write, cx, bytes, &mut at)));
        if let Poll::Ready(result) = first.await {
            return Some(result);
        }
        // One the socket makes wait watches for the end meanwhile; boxed, as the watch is
        // larger than the rest of the writer and only needed here.
        Box::pin(async {
            tokio::select! {
                biased;
                () = conn.cancelled() => None,
                result = std::future::poll_fn(|cx| poll_write_from(write, cx, bytes, &mut at)) => {
                    Some(result)
                }
            }
        })
        .await
    }
}

/// Writes `bytes` from `at` on, keeping `at` up to date, until all are written.
fn poll_write_from(
    write: &mut BoxWrite,
    cx: &mut Context<'_>,
    bytes: &[u8],
    at: &mut usize,
) -> Poll<std::io::Result<()>> {
    while *at < bytes.len() {
        let n = ready!(Pin::new(&mut *write).poll_write(cx, &bytes[*at..]))?;
        if n == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        *at += n;
    }
    Poll::Ready(Ok(()))
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
