//! One client connection as the rest of the node sees it: an id, its wire format, and a
//! bounded outbound queue (the outbox) that producers push to without ever waiting. The
//! one place that decides what overflow means: the connection is cut off as a slow
//! consumer (close 4000), counted, and nobody else waits. Owns no socket.

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
    max_bytes: usize,
    max_frames: usize,
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
    bytes: usize,
    close: Option<CloseCode>,
    /// The connection must end now: the one record of it, read under the queue's lock
    /// (the token, when there is one, follows it).
    ended: bool,
    /// The writer waiting for frames. A waker in the queue rather than a `Notify`: a
    /// delivery then costs one lock and one wake-up, with no waiter list to join and
    /// leave (a few % of a fan-out's CPU).
    writer: Option<Waker>,
    /// Live messages of a channel whose history is being replayed to this connection,
    /// kept back until the replay is queued. They count against the queue's bounds.
    /// Boxed: held only for the moment of a replay, and 40 bytes in every queue otherwise.
    held: Option<Box<Held>>,
    /// Replays whose live side has not caught up yet: the history read may have seen
    /// messages that are still on their way here through pub/sub. Until the first live
    /// message past the replay arrives, those at or before it are dropped. Empty but for
    /// the moments after a subscribe on a channel with history.
    seams: Vec<(ChannelName, StreamPosition)>,
}

struct Held {
    channel: ChannelName,
    frames: Vec<(Option<u64>, Outgoing)>,
    bytes: usize,
}

/// Where a fanned-out frame comes from: its channel, and its offset there when the
/// channel keeps history. Lets the outbox hold a channel back during a replay.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub channel: &'a ChannelName,
    pub position: Option<&'a StreamPosition>,
}

impl Queue {
    /// Whether a live message is one a replay already covered; the first one past the
    /// replay closes the seam.
    fn past_seam(&mut self, origin: Origin<'_>) -> bool {
        let Some(at) = self.seams.iter().position(|(c, _)| c == origin.channel) else {
            return false;
        };
        let covered = origin.position.is_some_and(|p| {
            p.epoch == self.seams[at].1.epoch && p.offset <= self.seams[at].1.offset
        });
        if !covered {
            self.seams.swap_remove(at);
            if self.seams.is_empty() {
                self.seams = Vec::new();
            }
        }
        covered
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
            max_bytes,
            max_frames,
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
        if let Some(origin) = origin
            && !q.seams.is_empty()
            && q.past_seam(origin)
        {
            return Ok(());
        }
        let (held_frames, held_bytes) = q
            .held
            .as_ref()
            .map_or((0, 0), |h| (h.frames.len(), h.bytes));
        if q.frames.len() + held_frames >= self.max_frames
            || q.bytes + held_bytes + frame.len() > self.max_bytes
        {
            drop(q);
            self.metrics.slow_consumers.inc();
            self.metrics.dropped(DropReason::SlowConsumer, 1);
            tracing::info!(conn = %self.id, "slow consumer disconnected");
            self.abort(CloseCode::SlowConsumer);
            return Err(PushError::Overflowed);
        }
        let outgoing = Outgoing {
            frame,
            published_ms,
        };
        if let (Some(held), Some(origin)) = (&mut q.held, origin)
            && held.channel == *origin.channel
        {
            held.bytes += outgoing.frame.len();
            held.frames
                .push((origin.position.map(|p| p.offset), outgoing));
            return Ok(());
        }
        q.bytes += outgoing.frame.len();
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
        self.state.lock().held = Some(Box::new(Held {
            channel: channel.clone(),
            frames: Vec::new(),
            bytes: 0,
        }));
    }

    /// Queues the held messages whose offset is past `after` (and those without an
    /// offset), and stops holding. Those at or before `after` were replayed already, or
    /// precede where the subscription starts; any still on their way are dropped when
    /// they come (see `seams`).
    pub fn release(&self, after: Option<&StreamPosition>) {
        let mut q = self.state.lock();
        let Some(held) = q.held.take().map(|held| *held) else {
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
            q.bytes += outgoing.frame.len();
            q.frames.push_back(outgoing);
            queued += 1;
        }
        if let (Some(after), false) = (after, caught_up) {
            // Exact: most connections subscribe once, and an idle one keeps its seam until
            // the channel's next message (a doubling Vec held 4 for 1, 0.16 KiB).
            q.seams.reserve_exact(1);
            q.seams.push((held.channel, after.clone()));
        }
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
            dropped = queued + q.held.take().map_or(0, |h| h.frames.len());
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

/// Wakes the writer taken from the queue, once its lock is released.
fn wake(writer: Option<Waker>) {
    if let Some(writer) = writer {
        writer.wake();
    }
}

#[cfg(test)]
mod tests;
