//! The HTTP doors for load: a Server-Sent Events reader and a long-poller, each handing
//! out the protocol messages it receives one at a time, as the WebSocket reader hands out
//! text frames, so that the rest of the load test does not care which door a client uses.

use std::collections::VecDeque;

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Reads a response head; returns its status and the value of `content-length`, if any.
async fn read_head(
    read: &mut OwnedReadHalf,
    buf: &mut BytesMut,
) -> anyhow::Result<(u16, Option<usize>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf.split_to(end + 4);
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok());
            return Ok((status, length));
        }
        if read.read_buf(buf).await? == 0 {
            bail!("closed before the response head");
        }
    }
}

/// A `text/event-stream` response (chunked, as the node sends it), read event by event.
pub struct SseReader {
    read: OwnedReadHalf,
    /// Raw bytes, chunk framing included.
    raw: BytesMut,
    /// The stream's text once the chunk framing is taken out.
    text: BytesMut,
}

impl SseReader {
    /// Sends `GET <path>` and reads the head; expects 200.
    pub async fn open(
        read: OwnedReadHalf,
        write: &mut OwnedWriteHalf,
        host: &str,
        path: &str,
    ) -> anyhow::Result<Self> {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
        write.write_all(req.as_bytes()).await?;
        let mut r = Self {
            read,
            raw: BytesMut::with_capacity(4096),
            text: BytesMut::new(),
        };
        let (status, _) = read_head(&mut r.read, &mut r.raw).await?;
        if status != 200 {
            bail!("stream refused: HTTP {status}");
        }
        Ok(r)
    }

    /// Moves whole chunks from `raw` to `text`.
    fn dechunk(&mut self) {
        loop {
            let Some(line) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = std::str::from_utf8(&self.raw[..line])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .unwrap_or(0);
            if self.raw.len() < line + 2 + size + 2 {
                return;
            }
            self.raw.advance(line + 2);
            self.text.extend_from_slice(&self.raw.split_to(size));
            self.raw.advance(2);
        }
    }

    /// The next event's data (a protocol message), as (1, payload); `None` at the end.
    pub async fn next(&mut self) -> anyhow::Result<Option<(u8, BytesMut)>> {
        loop {
            self.dechunk();
            if let Some(end) = self.text.windows(2).position(|w| w == b"\n\n") {
                let event = self.text.split_to(end + 2);
                let mut data = BytesMut::new();
                for line in event[..].split(|&b| b == b'\n') {
                    if let Some(d) = line.strip_prefix(b"data: ") {
                        if !data.is_empty() {
                            data.extend_from_slice(b"\n");
                        }
                        data.extend_from_slice(d);
                    }
                }
                if data.is_empty() {
                    continue; // a comment or `retry:`
                }
                return Ok(Some((1, data)));
            }
            if self.read.read_buf(&mut self.raw).await? == 0 {
                return Ok(None);
            }
        }
    }
}

#[derive(Deserialize)]
struct Answer<'a> {
    cursor: String,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// A long-polling client on one keep-alive connection, polling with the cursor of each
/// answer.
pub struct Poller {
    read: OwnedReadHalf,
    buf: BytesMut,
    host: String,
    channel: String,
    cursor: String,
    queue: VecDeque<BytesMut>,
}

impl Poller {
    /// Polls once without waiting: the answer's cursor is where the subscription starts.
    pub async fn open(
        read: OwnedReadHalf,
        write: &mut OwnedWriteHalf,
        host: &str,
        channel: &str,
    ) -> anyhow::Result<Self> {
        let mut p = Self {
            read,
            buf: BytesMut::with_capacity(4096),
            host: host.to_string(),
            channel: channel.to_string(),
            cursor: String::new(),
            queue: VecDeque::new(),
        };
        p.poll(write, 0).await?;
        Ok(p)
    }

    async fn poll(&mut self, write: &mut OwnedWriteHalf, timeout: u64) -> anyhow::Result<()> {
        let cursor: String = form_urlencoded::byte_serialize(self.cursor.as_bytes()).collect();
        let req = format!(
            "GET /poll?channel={}&timeout={timeout}&cursor={cursor} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.channel, self.host
        );
        write.write_all(req.as_bytes()).await?;
        let (status, length) = read_head(&mut self.read, &mut self.buf).await?;
        let length = length.context("a poll answer without content-length")?;
        while self.buf.len() < length {
            if self.read.read_buf(&mut self.buf).await? == 0 {
                bail!("closed in the middle of a poll answer");
            }
        }
        let body = self.buf.split_to(length);
        if status != 200 {
            bail!(
                "poll refused: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let answer: Answer<'_> = serde_json::from_slice(&body)?;
        self.cursor = answer.cursor;
        self.queue.extend(
            answer
                .events
                .iter()
                .map(|e| BytesMut::from(e.get().as_bytes())),
        );
        Ok(())
    }

    /// The next message, polling (held up to 25 s) when none is queued.
    pub async fn next(
        &mut self,
        write: &mut OwnedWriteHalf,
    ) -> anyhow::Result<Option<(u8, BytesMut)>> {
        loop {
            if let Some(payload) = self.queue.pop_front() {
                return Ok(Some((1, payload)));
            }
            self.poll(write, 25).await?;
        }
    }
}
