//! Scenario files (`loadtest/scenarios/*.toml`) and the run plan derived from them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Client connections, over all targets.
    pub connections: usize,
    /// Number of rooms; or give `room_size` instead.
    #[serde(default)]
    pub rooms: Option<usize>,
    /// Connections per room; rooms = connections / room_size.
    #[serde(default)]
    pub room_size: Option<usize>,
    /// Messages per second, in total over all rooms (0: publish nothing).
    pub rate: f64,
    /// How long to publish, in seconds.
    pub duration_s: u64,
    /// Size of the `data` JSON of each message, roughly.
    #[serde(default = "default_payload")]
    pub payload_bytes: usize,
    #[serde(default)]
    pub publish_via: PublishVia,
    /// Share of connections that disconnect and reconnect every second (churn scenario).
    #[serde(default)]
    pub churn_per_s: f64,
    /// With churn: reconnect to another node and recover from the last message received
    /// (resume scenario), staying in the loss and duplicate accounting.
    #[serde(default)]
    pub resume: bool,
    /// The subscribers' door: `ws`, `sse` or `poll`.
    #[serde(default)]
    pub transport: crate::client::Transport,
    /// Handshakes each worker keeps in flight while connecting: 512 connects in small
    /// steps; the connection count makes every client connect at once (a burst).
    #[serde(default = "default_connect_concurrency")]
    pub connect_concurrency: usize,
}

fn default_payload() -> usize {
    100
}

fn default_connect_concurrency() -> usize {
    512
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishVia {
    /// `PUBLISH` on Redis with the backend envelope: the backend path.
    #[default]
    Redis,
    /// A WebSocket client publishing through the first target node.
    Ws,
    /// `FCALL roomcast_publish` on Redis: the backend path into channel history.
    History,
}

impl Scenario {
    pub fn rooms(&self) -> usize {
        match (self.rooms, self.room_size) {
            (Some(r), _) => r.max(1),
            (None, Some(size)) => self.connections.div_ceil(size.max(1)).max(1),
            (None, None) => 1,
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.connections > 0, "connections must be at least 1");
        anyhow::ensure!(
            self.connections <= 200_000,
            "connections is capped at 200,000"
        );
        anyhow::ensure!(
            self.rate >= 0.0 && self.rate <= 1_000_000.0,
            "rate must be 0..=1e6"
        );
        anyhow::ensure!(self.duration_s <= 600, "duration_s is capped at 600 s");
        anyhow::ensure!(
            (0.0..=0.5).contains(&self.churn_per_s),
            "churn_per_s must be 0..=0.5"
        );
        anyhow::ensure!(
            !self.resume || (self.churn_per_s > 0.0 && self.publish_via == PublishVia::History),
            "resume needs churn_per_s > 0 and publish_via = \"history\""
        );
        anyhow::ensure!(
            self.churn_per_s == 0.0 || self.transport == crate::client::Transport::Ws,
            "churn and resume run over WebSocket only"
        );
        anyhow::ensure!(
            self.payload_bytes <= 60_000,
            "payload_bytes is capped at 60,000"
        );
        Ok(())
    }
}

/// The channel of room `r`. The `chat` namespace lets WebSocket clients publish too.
pub fn channel(r: usize) -> String {
    format!("chat:load-{r}")
}
