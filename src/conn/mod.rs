//! One client connection as the rest of the node sees it: an id, its wire format, and a
//! bounded outbound queue (the outbox) that producers push to without ever waiting. The
//! one place that decides what overflow means: the connection is cut off as a slow
//! consumer (close 4000), counted, and nobody else waits. Owns no socket.

mod replay;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::bus::StreamPosition;
use crate::channel::ChannelName;
use crate::metrics::{DropReason, Metrics};
use crate::protocol::CloseCode;
use crate::wire::WireFormat;
use replay::Replay;

/// A connection id, unique within one node's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue went over its byte or frame bound: the connection has just been cut
    /// off as a slow consumer.
    Overflowed,
    /// The connection is closing; the frame is not needed any more.
    Closed,
}

pub struct Conn {
    pub id: ConnId,
    /// The authenticated user, once there is one: what `/api/disconnect` matches.
    user: OnceLock<Box<str>>,
    /// How frames for this connection are encoded; the hub shares them per format.
    pub wire: WireFormat,
    metrics: Arc<Metrics>,
    /// The outbox's bounds; u32 like the queue's byte count, which keeps `Conn` within
    /// the allocator's 160-byte class.
    max_bytes: u32,
    max_frames: u32,
    state: Mutex<Queue>,
    /// Cancelled when the connection must end now, for those who wait for that (a write
    /// the socket makes wait, the SSE and long-poll transports). Made by the first of them:
    /// most connections never have one, and a token is a 112-byte allocation. Whoever
    /// does not wait learns it from the queue's `ended`.
    cancel: OnceLock<CancellationToken>,
}

/// A frame waiting for the writer, with the publish time of the message it carries (ms
/// since the epoch; 0 for replies and control frames), for the publish-to-write latency.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub frame: Bytes,
    pub published_ms: u64,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Outgoing>,
    /// Bytes queued; below `max_bytes`, a u32.
    bytes: u32,
    close: Option<CloseCode>,
    /// The connection must end now: the one record of it, read under the queue's lock
    /// (the token, when there is one, follows it).
    ended: bool,
    /// The writer waiting for frames. A waker in the queue rather than a `Notify`: a
    /// delivery then costs one lock and one wake-up, with no waiter list to join and
    /// leave (a few % of a fan-out's CPU).
    writer: Option<Waker>,
    /// Held messages and seams of replays; `None` when there are neither.
    replay: Option<Box<Replay>>,
}

/// Where a fanned-out frame comes from: its channel, and its offset there when the
/// channel keeps history. Lets the outbox hold a channel back during a replay.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub channel: &'a ChannelName,
    pub position: Option<&'a StreamPosition>,
}

impl Queue {
    fn replay(&mut self) -> &mut Replay {
        self.replay.get_or_insert_with(Box::default)
    }

    /// Lets go of the replay state once it holds nothing.
    fn tidy(&mut self) {
        if self.replay.as_ref().is_some_and(|r| r.is_empty()) {
            self.replay = None;
        }
    }
}

/// What the writer should do next.
pub enum Batch {
    /// Write these frames, in order.
    Frames(Vec<Outgoing>),
    /// Everything queued before the close has been handed out: send this close and stop.
    Close(CloseCode),
    /// The connection must end now (aborted, or its peer is gone): stop writing.
    Ended,
}

impl Conn {
    pub fn new(
        wire: WireFormat,
        max_bytes: usize,
        max_frames: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            id: ConnId::next(),
            user: OnceLock::new(),
            wire,
            metrics,
            max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
            max_frames: u32::try_from(max_frames).unwrap_or(u32::MAX),
            state: Mutex::new(Queue::default()),
            cancel: OnceLock::new(),
        }
    }

    /// Queues a ready frame (a reply, a control frame, a replayed message) for the writer.
    /// Never blocks.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        self.push_message(frame, 0, None)
    }

    /// Queues the frame of a message published at `published_ms`. Never blocks. A push
    /// that overflows the queue cuts the connection off as a slow consumer. A message of a
    /// held channel waits with the held ones.
    pub fn push_message(
        &self,
        frame: Bytes,
        published_ms: u64,
        origin: Option<Origin<'_>>,
    ) -> Result<(), PushError> {
        let mut q = self.state.lock();
        if q.close.is_some() {
            return Err(PushError::Closed);
        }
        if let (Some(origin), Some(replay)) = (origin, &mut q.replay)
            && replay.covers(origin)
        {
            return Ok(());
        }
        let (held_frames, held_bytes) = q.replay.as_ref().map_or((0, 0), |r| r.held());
        if q.frames.len() + held_frames >= self.max_frames as usize
            || q.bytes as usize + held_bytes + frame.len() > self.max_bytes as usize
        {
            drop(q);
            self.metrics.slow_consumers.inc();
            self.metrics.dropped(DropReason::SlowConsumer, 1);
            tracing::info!(conn = %self.id, "slow consumer disconnected");
            self.abort(CloseCode::SlowConsumer);
            return Err(PushError::Overflowed);
        }
        let mut outgoing = Outgoing {
            frame,
            published_ms,
        };
        if let (Some(origin), Some(replay)) = (origin, &mut q.replay) {
            let Some(live) = replay.hold(origin, outgoing) else {
                return Ok(());
            };
            outgoing = live;
            q.tidy();
        }
        q.bytes += frame_len(&outgoing);
        q.frames.push_back(outgoing);
        let writer = q.writer.take();
        drop(q);
        self.metrics.queued_frames.inc();
        wake(writer);
        Ok(())
    }

    /// Holds back live messages of `channel` until [`Conn::release`]: one channel at a
    /// time, which is all a session needs (it runs one command at a time).
    pub fn hold(&self, channel: &ChannelName) {
        self.state.lock().replay().start_holding(channel);
    }

    /// Queues the held messages whose offset is past `after` (and those without an
    /// offset), and stops holding. Those at or before `after` were replayed already, or
    /// precede where the subscription starts; any still on their way are dropped when
    /// they come (see `replay`).
    pub fn release(&self, after: Option<&StreamPosition>) {
        let mut q = self.state.lock();
        let Some(held) = q.replay.as_mut().and_then(|r| r.take_held()) else {
            return;
        };
        let mut queued = 0;
        let mut caught_up = false;
        for (offset, outgoing) in held.frames {
            if let (Some(offset), Some(after)) = (offset, after) {
                if offset <= after.offset {
                    continue;
                }
                caught_up = true;
            }
            q.bytes += frame_len(&outgoing);
            q.frames.push_back(outgoing);
            queued += 1;
        }
        if let (Some(after), false) = (after, caught_up) {
            q.replay().add_seam(held.channel, after.clone());
        }
        q.tidy();
        let writer = if queued > 0 { q.writer.take() } else { None };
        drop(q);
        if queued > 0 {
            self.metrics.queued_frames.add(queued);
            wake(writer);
        }
    }

    /// Asks for an orderly close: frames already queued are still written, then the close
    /// frame. The first close asked for wins.
    pub fn close(&self, code: CloseCode) {
        self.update(|q| {
            q.close.get_or_insert(code);
        });
    }

    /// Changes the queue, then wakes the writer to look at it.
    fn update(&self, change: impl FnOnce(&mut Queue)) {
        let mut q = self.state.lock();
        change(&mut q);
        let writer = q.writer.take();
        drop(q);
        wake(writer);
    }

    /// Ends the connection now, dropping what is queued: for slow consumers, whose socket
    /// may never drain, for errors, and for what is left when the shutdown grace period
    /// ends. The writer still tries a close frame, briefly. Dropped frames are counted
    /// under the reason of the close.
    pub fn abort(&self, code: CloseCode) {
        let (mut queued, mut dropped) = (0, 0);
        self.update(|q| {
            q.close.get_or_insert(code);
            queued = q.frames.len();
            let held = q.replay.as_mut().and_then(|r| r.take_held());
            dropped = queued + held.map_or(0, |h| h.frames.len());
            q.frames.clear();
            q.bytes = 0;
            q.ended = true;
        });
        self.metrics.queued_frames.add(-(queued as i64));
        let reason = match code {
            CloseCode::SlowConsumer => DropReason::SlowConsumer,
            _ => DropReason::Closing,
        };
        self.metrics.dropped(reason, dropped as u64);
        self.cancel_waiters();
    }

    /// The close asked for, if any.
    /// Records the connection's user; a connection never changes user.
    pub fn set_user(&self, user: &str) {
        let _ = self.user.set(Box::from(user));
    }

    pub fn user(&self) -> Option<&str> {
        self.user.get().map(|u| &**u)
    }

    pub fn close_code(&self) -> Option<CloseCode> {
        self.state.lock().close
    }

    /// Completes once the connection must end now.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + '_ {
        // The token first, then the flag: a `cancel` that the flag does not show yet
        // sets it later and then finds the token (both go through the queue's lock).
        let token = self.cancel.get_or_init(CancellationToken::new);
        let ended = self.is_cancelled();
        async move {
            if !ended {
                token.cancelled().await;
            }
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.state.lock().ended
    }

    /// Ends the connection now, keeping what is queued from the writer.
    pub fn cancel(&self) {
        self.update(|q| q.ended = true);
        self.cancel_waiters();
    }

    fn cancel_waiters(&self) {
        if let Some(token) = self.cancel.get() {
            token.cancel();
        }
    }

    /// Waits until there is something for the writer, then takes all of it at once so the
    /// writer can put every ready frame into one write. [`Batch::Ended`] once the
    /// connection must end now, before anything still queued.
    pub fn next_batch(&self) -> impl Future<Output = Batch> + '_ {
        std::future::poll_fn(move |cx| {
            let mut q = self.state.lock();
            if q.ended {
                return Poll::Ready(Batch::Ended);
            }
            if !q.frames.is_empty() {
                q.bytes = 0;
                let frames: Vec<Outgoing> = std::mem::take(&mut q.frames).into();
                drop(q);
                self.metrics.queued_frames.add(-(frames.len() as i64));
                return Poll::Ready(Batch::Frames(frames));
            }
            if let Some(code) = q.close {
                return Poll::Ready(Batch::Close(code));
            }
            if !q.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                q.writer = Some(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

/// A frame's length as the queue counts it: frames are far below 4 GiB (they are bounded
/// by the message size limit), and the queue's bound is a u32.
fn frame_len(outgoing: &Outgoing) -> u32 {
    u32::try_from(outgoing.frame.len()).unwrap_or(u32::MAX)
}

/// Wakes the writer taken from the queue, once its lock is released.
fn wake(writer: Option<Waker>) {
    if let Some(writer) = writer {
        writer.wake();
    }
}

#[cfg(test)]
mod tests;
