//! Keeps one bus link alive, the same way for every Redis flavour (one Redis, a Sentinel's
//! primary, each shard of a Redis Cluster): connect, resubscribe, serve until the link is
//! lost, report it, back off with jitter, again. Readiness and the link events the node
//! hears come from here and nowhere else. What a link is and how it is served is the
//! [`Link`]'s business.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::probe::Deaf;
use super::{BusError, BusEvents};
use crate::channel::ChannelName;
use crate::metrics::Metrics;

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    #[error("the node is stopping")]
    Stopped,
    #[error("the connection closed")]
    Closed,
    #[error("no probe came back for {:?}", .0.0)]
    Deaf(Deaf),
    #[error("cannot connect")]
    Connect(#[source] BusError),
    #[error("a command failed")]
    Command(#[source] BusError),
}

/// One link the supervisor keeps alive.
pub trait Link: Send + Sync + 'static {
    /// The open connections of one incarnation of the link.
    type Live: Send;
    /// Opens the connections, within the connect timeout.
    fn connect(&self) -> impl Future<Output = Result<Self::Live, BusError>> + Send;
    /// Makes the link usable and subscribes every channel the node wants on it; returns
    /// those channels.
    fn resubscribe(
        &self,
        live: &mut Self::Live,
    ) -> impl Future<Output = Result<Vec<ChannelName>, Lost>> + Send;
    /// Carries traffic until the link is lost.
    fn serve(&self, live: Self::Live) -> impl Future<Output = Lost> + Send;
    /// Forgets the lost incarnation: commands fail fast until the next one is up.
    fn down(&self);
}

/// Reconnect backoff, from the settings of the bus.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// Capped exponential backoff with jitter: somewhere in the upper half of the cap, so
    /// nodes that lost Redis together do not return together.
    pub fn delay(self, attempt: u32) -> Duration {
        let cap = self
            .min_ms
            .saturating_mul(1u64 << attempt.min(16))
            .min(self.max_ms);
        Duration::from_millis(cap / 2 + fastrand::u64(0..=cap / 2))
    }
}

/// What the supervisor needs besides the link.
pub struct Supervisor {
    pub backoff: Backoff,
    /// The node; weak because the node owns the bus.
    pub events: Weak<dyn BusEvents>,
    pub metrics: Arc<Metrics>,
    /// Up and subscribed: what `Bus::is_ready` reports.
    pub ready: Arc<AtomicBool>,
    pub stop: CancellationToken,
}

impl Supervisor {
    /// Runs until `stop` is cancelled.
    pub async fn run<L: Link>(self, link: Arc<L>) {
        let mut attempt: u32 = 0;
        let mut connected_before = false;
        loop {
            let (lost, was_up) = match link.connect().await {
                Ok(live) => {
                    attempt = 0;
                    let reconnected = std::mem::replace(&mut connected_before, true);
                    self.up_and_serve(&*link, live, reconnected).await
                }
                Err(error) => (Lost::Connect(error), false),
            };
            self.ready.store(false, Ordering::Relaxed);
            link.down();
            if was_up {
                self.metrics.bus_connected.dec();
                if let Some(events) = self.events.upgrade() {
                    events.link_lost();
                }
            }
            if matches!(lost, Lost::Stopped) || self.stop.is_cancelled() {
                return;
            }
            self.log_loss(&lost, attempt, was_up);
            let delay = self.backoff.delay(attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            self.metrics.bus_reconnects.inc();
        }
    }

    /// Resubscribes, turns ready, tells the node, and serves. Returns why the link ended
    /// and whether it had been up.
    async fn up_and_serve<L: Link>(
        &self,
        link: &L,
        mut live: L::Live,
        reconnected: bool,
    ) -> (Lost, bool) {
        let channels = match link.resubscribe(&mut live).await {
            Ok(channels) => channels,
            Err(lost) => return (lost, false),
        };
        self.ready.store(true, Ordering::Relaxed);
        self.metrics.bus_connected.inc();
        tracing::info!(channels = channels.len(), reconnected, "redis link up");
        if reconnected && let Some(events) = self.events.upgrade() {
            events.link_back(&channels);
        }
        (link.serve(live).await, true)
    }

    fn log_loss(&self, lost: &Lost, attempt: u32, was_up: bool) {
        let error = lost as &dyn std::error::Error;
        if was_up {
            tracing::warn!(error, "redis link lost; reconnecting");
        } else {
            tracing::warn!(error, attempt, "cannot connect to redis");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff {
            min_ms: 100,
            max_ms: 1_000,
        };
        for _ in 0..100 {
            let first = b.delay(0).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let third = b.delay(2).as_millis();
            assert!((200..=400).contains(&third), "{third}");
            let late = b.delay(30).as_millis();
            assert!((500..=1_000).contains(&late), "{late}");
        }
    }
}
