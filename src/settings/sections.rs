//! The settings sections below the top level, each with its defaults. Every field's doc
//! comment is its documentation; README.md's configuration table repeats it.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Also serve `/metrics` on the main (public) port. Off by default: metrics tell an
    /// attacker about load and limits.
    pub public: bool,
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
    /// Connections (`/ws` and `/echo`) this node holds at once; beyond, upgrades are
    /// refused with HTTP 503 before any WebSocket work.
    pub max_connections: usize,
    /// Connections one source address may hold; beyond, upgrades are refused with HTTP
    /// 429. 0: no limit.
    pub max_connections_per_ip: usize,
    /// Peers whose `X-Forwarded-For` names the client (CIDR, e.g. `172.16.0.0/12`): a load
    /// balancer in front. Without it, every client behind one shares the balancer's limit.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A connection must send its complete request head within this long.
    pub handshake_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes; beyond, HTTP 431.
    pub max_header_bytes: usize,
    /// Channels one connection may be subscribed to at once (`limit_exceeded`).
    pub max_subscriptions: usize,
    /// Sustained client publishes per second per connection (`rate_limited` beyond).
    pub publish_rate: f64,
    /// Publishes a connection may burst above the sustained rate.
    pub publish_burst: f64,
    /// Sustained subscribes plus unsubscribes per second per connection (`rate_limited`).
    pub subscribe_rate: f64,
    /// Subscribes and unsubscribes a connection may burst above the sustained rate.
    pub subscribe_burst: f64,
    /// Bytes queued for one connection before it counts as a slow consumer (close 4000).
    pub outbox_max_bytes: usize,
    /// Frames queued for one connection before it counts as a slow consumer (close 4000).
    pub outbox_max_frames: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// The key backends send as `Authorization: Bearer <key>` to use `/api/…`; unset, the
    /// HTTP API is off (404).
    pub key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain (leaf first); with `key_file`, the main port speaks TLS only
    /// (`wss://`, `https://`). Read again when it changes and on SIGHUP.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HS256 shared secret for connection and channel tokens. Auth is on when this or a
    /// key file is set.
    pub hmac_secret: Option<String>,
    /// PEM file with an RSA (RS256) or EC P-256 (ES256) public key.
    pub public_key_file: Option<PathBuf>,
    /// JWKS file (RS256/ES256 keys, chosen by the token's `kid`), read again when it
    /// changes and on SIGHUP.
    pub jwks_file: Option<PathBuf>,
    /// Tokens must carry this `aud`, when set.
    pub audience: Option<String>,
    /// Tokens must carry this `iss`, when set.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Also accept the token as `?token=` on `/ws` (it then shows in URLs and logs).
    pub query_param: bool,
    /// The `expiring` push comes this many seconds before the token expires.
    pub expiry_warning_s: u64,
    /// A connection still anonymous after this long is closed (4002), unless some
    /// namespace admits anonymous clients.
    pub connect_timeout_ms: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            hmac_secret: None,
            public_key_file: None,
            jwks_file: None,
            audience: None,
            issuer: None,
            leeway_s: 5,
            query_param: false,
            expiry_warning_s: 30,
            connect_timeout_ms: 10_000,
        }
    }
}

impl AuthSettings {
    /// Whether any key is configured: tokens are then checked.
    pub fn enabled(&self) -> bool {
        self.hmac_secret.is_some() || self.public_key_file.is_some() || self.jwks_file.is_some()
    }
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
    /// Whether clients may `subscribe`.
    pub subscribe: bool,
    /// Whether clients may read the history (`history`; recovery comes with `subscribe`).
    pub read_history: bool,
    /// Whether clients may list members (`presence`, `presence_count`).
    pub read_presence: bool,
    /// With auth configured: whether clients without a token may do what this policy
    /// allows. Without auth every client is anonymous and this is not consulted.
    pub anonymous: bool,
    /// Subscribing needs a channel token for the client's user and the channel; history,
    /// presence and publish need a subscription. Needs auth.
    pub private: bool,
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
            subscribe: true,
            read_history: true,
            read_presence: true,
            anonymous: false,
            private: false,
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
            max_connections_per_ip: 1_000,
            trusted_proxies: Vec::new(),
            handshake_timeout_ms: 10_000,
            max_header_bytes: 16 * 1024,
            max_subscriptions: 128,
            publish_rate: 20.0,
            publish_burst: 40.0,
            subscribe_rate: 50.0,
            subscribe_burst: 200.0,
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
