//! The end-to-end liveness probe of a pub/sub link: the node publishes to a probe channel
//! of its own every interval and expects to hear it back on its subscription. A link that
//! stays open but stops delivering (a failover, a dead middlebox) is caught by this and
//! nothing else. Pure timing; the link sends and receives the probes.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

pub struct Probe {
    interval: Interval,
    deaf_after: Duration,
    last_heard: Instant,
}

/// No probe came back for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deaf(pub Duration);

impl Probe {
    pub fn new(interval: Duration, deaf_after: Duration) -> Self {
        let mut interval = tokio::time::interval(interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            interval,
            deaf_after,
            last_heard: Instant::now(),
        }
    }

    /// A probe came back.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// Waits for the next tick: `Ok` when the next probe is due, `Err` once nothing has
    /// been heard for longer than the timeout. Cancel-safe.
    pub async fn due(&mut self) -> Result<(), Deaf> {
        self.interval.tick().await;
        let silent = self.last_heard.elapsed();
        if silent > self.deaf_after {
            return Err(Deaf(silent));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deaf_only_after_the_timeout_without_an_answer() {
        let mut probe = Probe::new(Duration::from_millis(100), Duration::from_millis(250));
        for _ in 0..5 {
            assert_eq!(probe.due().await, Ok(()));
            probe.heard();
        }
        // Heard at 400 ms: 500 and 600 are fine, 700 is 300 ms of silence.
        assert_eq!(probe.due().await, Ok(()));
        assert_eq!(probe.due().await, Ok(()));
        assert!(matches!(probe.due().await, Err(Deaf(d)) if d > Duration::from_millis(250)));
    }
}
