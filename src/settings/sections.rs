//! The settings sections below the top level, each with its defaults. Every field's doc
//! comment is its documentation; README.md's configuration table repeats it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::LogFormat;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// Every channel is `<prefix>:<channel>` on Redis.
    pub prefix: String,
    /// How often the node publishes to its own probe channel.
    pub probe_interval_ms: u64,
    /// A pub/sub link that has not delivered a probe for this long is deaf: it is torn
    /// down and rebuilt. Detection takes at most this plus one probe interval.
    pub probe_timeout_ms: u64,
    /// Reconnect backoff: starts near this, doubles per failed attempt…
    pub reconnect_min_ms: u64,
    /// …up to this.
    pub reconnect_max_ms: u64,
    pub connect_timeout_ms: u64,
    /// A publish with no reply within this fails with `unavailable`.
    pub response_timeout_ms: u64,
    /// Largest message accepted from Redis, in bytes; a larger one is dropped, counted
    /// and logged with its channel, and never reaches (nor disconnects) its subscribers.
    pub max_envelope_bytes: usize,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            prefix: "roomcast".into(),
            probe_interval_ms: 1_000,
            probe_timeout_ms: 3_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5_000,
            connect_timeout_ms: 2_000,
            response_timeout_ms: 2_000,
            max_envelope_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtelSettings {
    /// OTLP/HTTP endpoint, e.g. `http://collector:4318`; unset: the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, and without either, no traces are exported.
    pub endpoint: Option<String>,
    /// Share of messages published without a trace context that start a sampled trace.
    /// A message that carries a sampled `traceparent` is always traced.
    pub sample_ratio: f64,
    pub service_name: String,
}

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            sample_ratio: 0.01,
            service_name: "roomcast".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Serve `/metrics` (with `/healthz` and `/readyz`) only on this separate admin
    /// address, e.g. `127.0.0.1:9090`; unset: on the main port.
    pub listen: Option<SocketAddr>,
    /// When set, `/metrics` answers only requests with `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `roomcast=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest client message in bytes; larger closes the connection with 1009.
    pub max_message_size: usize,
    /// Connections this node holds at once; beyond, new ones are closed with 1013.
    pub max_connections: usize,
    /// Channels one connection may be subscribed to at once (`limit_exceeded`).
    pub max_subscriptions: usize,
    /// Sustained client publishes per second per connection (`rate_limited` beyond).
    pub publish_rate: f64,
    /// Publishes a connection may burst above the sustained rate.
    pub publish_burst: f64,
    /// Bytes queued for one connection before it counts as a slow consumer (close 4000).
    pub outbox_max_bytes: usize,
    /// Frames queued for one connection before it counts as a slow consumer (close 4000).
    pub outbox_max_frames: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceSettings {
    /// A member whose node stops refreshing it (the node died) is gone after this long;
    /// nodes refresh their members every third of it.
    pub ttl_ms: u64,
    /// Largest `info` a client may attach to its presence, in bytes of JSON.
    pub max_info_bytes: usize,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            ttl_ms: 30_000,
            max_info_bytes: 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Heartbeat {
    /// The node sends a WebSocket ping this often.
    pub interval_ms: u64,
    /// A connection that sends nothing (no frame, no pong) for this long is closed with 4001.
    pub idle_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// Clients are closed with 1001 spread evenly over this window, so that they do not
    /// all reconnect elsewhere at the same instant.
    pub drain_window_ms: u64,
    /// After the window, how long to wait for connections to finish before exiting anyway.
    pub grace_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NamespacePolicy {
    /// Whether clients may `publish` to channels of this namespace (backends always may).
    pub publish: bool,
    /// Messages kept per channel, for recovery and the `history` op; 0 keeps none.
    pub history_size: usize,
    /// Seconds a channel's history is kept after its last message.
    pub history_ttl_s: u64,
    /// Whether the channel's subscribers are listed (`presence`, `presence_count`) and
    /// told when one joins or leaves.
    pub presence: bool,
}

impl Default for NamespacePolicy {
    fn default() -> Self {
        Self {
            publish: false,
            history_size: 0,
            history_ttl_s: 300,
            presence: false,
        }
    }
}

impl NamespacePolicy {
    /// The shipped `chat` namespace: clients publish, the last 100 messages of each room
    /// are kept for 5 minutes so reconnecting clients miss nothing, and rooms know who is in.
    pub fn chat() -> Self {
        Self {
            publish: true,
            history_size: 100,
            presence: true,
            ..Self::default()
        }
    }

    /// The channel's history policy, when it keeps history.
    pub fn history(&self) -> Option<crate::bus::history::HistoryPolicy> {
        (self.history_size > 0).then(|| crate::bus::history::HistoryPolicy {
            size: self.history_size,
            ttl: std::time::Duration::from_secs(self.history_ttl_s),
        })
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            max_connections: 50_000,
            max_subscriptions: 128,
            publish_rate: 20.0,
            publish_burst: 40.0,
            outbox_max_bytes: 1 << 20,
            outbox_max_frames: 4096,
        }
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval_ms: 25_000,
            idle_timeout_ms: 60_000,
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            drain_window_ms: 5_000,
            grace_ms: 5_000,
        }
    }
}
