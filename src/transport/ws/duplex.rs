//! Runs a connection's writer and reader in the connection's one task, polling the reader
//! only when something of its own woke it.
//!
//! Why by hand: `tokio::join!` polls both halves on every wake-up, and most wake-ups are
//! deliveries for the writer; polling the idle reader each time (its socket readiness, its
//! timer) cost 7% of the node's CPU per delivery at 10,000 subscribers. The crates that
//! poll precisely (`futures-concurrency`) do not let one half's end be seen by the other
//! in the same poll, which the reader relies on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The reader's waker: notes that the reader was woken, then wakes the task.
struct ReaderWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for ReaderWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Runs both to completion. The writer is polled first and on every wake-up; the reader
/// when it was woken, and at once after the writer ended, so that it sees the end. Pinned
/// by the caller: a future that owned them would hold each twice.
pub(super) fn run<'a, W, R>(writing: Pin<&'a mut W>, reading: Pin<&'a mut R>) -> Duplex<'a, W, R>
where
    W: Future<Output = ()>,
    R: Future<Output = ()>,
{
    let wake = Arc::new(ReaderWake {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    Duplex {
        writing: Some(writing),
        reading: Some(reading),
        reader_waker: Waker::from(Arc::clone(&wake)),
        wake,
    }
}

/// A future by hand rather than an `async` block: every connection keeps it, and this is
/// half the size (what each half still has to do is whether its future is still there).
pub(super) struct Duplex<'a, W, R> {
    writing: Option<Pin<&'a mut W>>,
    reading: Option<Pin<&'a mut R>>,
    wake: Arc<ReaderWake>,
    reader_waker: Waker,
}

impl<W, R> Future for Duplex<'_, W, R>
where
    W: Future<Output = ()>,
    R: Future<Output = ()>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Unpin: it holds only pinned references and handles.
        let this = self.get_mut();
        if let Some(writing) = &mut this.writing
            && writing.as_mut().poll(cx).is_ready()
        {
            this.writing = None;
            this.wake.woken.store(true, Ordering::Release);
        }
        if let Some(reading) = &mut this.reading
            && poll_reader(&this.wake, &this.reader_waker, reading.as_mut(), cx)
        {
            this.reading = None;
        }
        match (&this.writing, &this.reading) {
            (None, None) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }
}

/// Polls the reader if it was woken; whether it is done.
fn poll_reader<R: Future<Output = ()>>(
    wake: &ReaderWake,
    reader_waker: &Waker,
    reading: Pin<&mut R>,
    cx: &mut Context<'_>,
) -> bool {
    // Registered before the flag is taken: a wake-up in between is not lost.
    wake.task.register(cx.waker());
    if !wake.woken.swap(false, Ordering::AcqRel) {
        return false;
    }
    reading
        .poll(&mut Context::from_waker(reader_waker))
        .is_ready()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Wake-ups meant for the writer leave the reader alone; once the writer ends, the
    /// reader is polled at once, with no wake-up of its own.
    #[tokio::test]
    async fn the_reader_is_polled_when_woken_and_when_the_writer_ends() {
        let reader_polls = AtomicUsize::new(0);
        let written = AtomicBool::new(false);
        let mut writer_polls = 0;
        let writing = std::future::poll_fn(|cx| {
            writer_polls += 1;
            if writer_polls == 5 {
                written.store(true, Ordering::Relaxed);
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        let reading = std::future::poll_fn(|_| {
            reader_polls.fetch_add(1, Ordering::Relaxed);
            match written.load(Ordering::Relaxed) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        });
        tokio::pin!(writing, reading);
        run(writing, reading).await;
        // Once at the start, once after the writer ended.
        assert_eq!(reader_polls.load(Ordering::Relaxed), 2);
    }

    /// A reader woken by its own source (a socket, a timer) gets polled.
    #[tokio::test]
    async fn a_reader_woken_by_its_own_source_runs() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut got = Vec::new();
        let writing = async {
            for i in 0..3 {
                tx.send(i).unwrap();
                tokio::task::yield_now().await;
            }
            drop(tx);
        };
        let reading = async {
            while let Some(i) = rx.recv().await {
                got.push(i);
            }
        };
        {
            tokio::pin!(writing, reading);
            run(writing, reading).await;
        }
        assert_eq!(got, [0, 1, 2]);
    }
}
