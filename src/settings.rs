//! Typed settings: defaults in code < `roomcast.toml` (or `--config FILE`) < `ROOMCAST_…`
//! environment < command-line flags. Unknown keys and bad values are errors naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

/// Command-line flags. Each flag overrides the same key from file and environment.
#[derive(Debug, Parser, Default)]
#[command(
    name = "roomcast",
    version,
    about = "Multi-node WebSocket pub/sub broker"
)]
pub struct Cli {
    /// Settings file (TOML). Default: ./roomcast.toml if it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [env: ROOMCAST_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// This node's id, shown in `welcome` and logs [env: ROOMCAST_NODE_ID] [default: generated]
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Message bus between nodes [env: ROOMCAST_BUS] [default: memory]
    #[arg(long, value_name = "memory|redis")]
    pub bus: Option<String>,
    /// Redis URL for `--bus redis` [env: ROOMCAST_REDIS_URL] [default: redis://127.0.0.1:6379]
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Log format [env: ROOMCAST_LOG__FORMAT] [default: text]
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<String>,
    /// Set any other key, e.g. `--set limits.max_connections=5000` (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Ask the node on `listen` whether it is ready (GET /readyz); exit 0 if so, 1 if not.
    /// For container health checks.
    #[arg(long)]
    pub healthcheck: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// Embedded, single node: every publish reaches this node's subscribers only.
    Memory,
    /// Redis pub/sub between nodes.
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Empty means "generate one at start".
    pub node_id: String,
    pub bus: BusKind,
    pub redis_url: String,
    pub redis: RedisSettings,
    /// Browser origins allowed besides the node's own host, e.g. `https://app.example.com`;
    /// `*` allows any. Requests without an `Origin` header (non-browsers) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Serve the `/echo` WebSocket test endpoint.
    pub echo: bool,
    pub log: LogSettings,
    pub otel: OtelSettings,
    pub metrics: MetricsSettings,
    pub limits: Limits,
    pub heartbeat: Heartbeat,
    pub shutdown: Shutdown,
    /// Policy of channels without a namespace (no `:` in the name).
    pub default_namespace: NamespacePolicy,
    /// Policy per namespace (the part of a channel name before the first `:`).
    /// Channels in a namespace not listed here are rejected with `bad_channel`.
    pub namespaces: BTreeMap<String, NamespacePolicy>,
}

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NamespacePolicy {
    /// Whether clients may `publish` to channels of this namespace (backends always may).
    pub publish: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            node_id: String::new(),
            bus: BusKind::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis: RedisSettings::default(),
            allowed_origins: Vec::new(),
            echo: true,
            log: LogSettings::default(),
            otel: OtelSettings::default(),
            metrics: MetricsSettings::default(),
            limits: Limits::default(),
            heartbeat: Heartbeat::default(),
            shutdown: Shutdown::default(),
            default_namespace: NamespacePolicy { publish: false },
            namespaces: BTreeMap::from([("chat".into(), NamespacePolicy { publish: true })]),
        }
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

/// A setting that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("`--set {0}`: expected KEY=VALUE")]
    BadOverride(String),
}

/// The top-level keys, as environment variables name them (`ROOMCAST_<KEY>[__<SUBKEY>]`).
const TOP_LEVEL_KEYS: [&str; 15] = [
    "otel",
    "metrics",
    "listen",
    "node_id",
    "bus",
    "redis_url",
    "redis",
    "allowed_origins",
    "echo",
    "log",
    "limits",
    "heartbeat",
    "shutdown",
    "default_namespace",
    "namespaces",
];

/// Keeps the `ROOMCAST_…` variables that name a settings key. Others are ignored, not
/// rejected: orchestrators set variables of their own under the same prefix (Kubernetes
/// gives a Service named `roomcast` `ROOMCAST_PORT` and `ROOMCAST_SERVICE_HOST`). Within a
/// section, an unknown key is still an error.
fn known_env(env: config::Map<String, String>) -> config::Map<String, String> {
    env.into_iter()
        .filter(|(name, _)| {
            let Some(rest) = name.strip_prefix("ROOMCAST_") else {
                return false;
            };
            let top = rest
                .split("__")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            TOP_LEVEL_KEYS.contains(&top.as_str())
        })
        .collect()
}

impl Settings {
    /// Loads settings from every layer, with `env` (when given) standing in for the process
    /// environment.
    pub fn load(
        cli: &Cli,
        env: Option<config::Map<String, String>>,
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder().add_source(Config::try_from(&Settings::default())?);
        builder = match &cli.config {
            Some(path) => builder.add_source(File::from(path.as_path()).format(FileFormat::Toml)),
            None => {
                builder.add_source(File::new("roomcast.toml", FileFormat::Toml).required(false))
            }
        };
        let env = env.unwrap_or_else(|| std::env::vars().collect());
        builder = builder.add_source(
            Environment::with_prefix("ROOMCAST")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("allowed_origins")
                .source(Some(known_env(env))),
        );
        let flags = [
            ("listen", &cli.listen),
            ("node_id", &cli.node_id),
            ("bus", &cli.bus),
            ("redis_url", &cli.redis_url),
            ("log.format", &cli.log_format),
        ];
        for (key, value) in flags {
            if let Some(value) = value {
                builder = builder.set_override(key, value.as_str())?;
            }
        }
        for pair in &cli.set {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| SettingsError::BadOverride(pair.clone()))?;
            builder = builder.set_override(key.trim(), value.trim())?;
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, reason: &str| {
            Err(SettingsError::Invalid {
                key,
                reason: reason.into(),
            })
        };
        let l = &self.limits;
        if l.max_message_size < 128 {
            return invalid("limits.max_message_size", "must be at least 128 bytes");
        }
        if l.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if !(l.publish_rate > 0.0 && l.publish_rate.is_finite()) {
            return invalid("limits.publish_rate", "must be a positive number");
        }
        if !(l.publish_burst >= 1.0 && l.publish_burst.is_finite()) {
            return invalid("limits.publish_burst", "must be at least 1");
        }
        if l.outbox_max_bytes < l.max_message_size {
            return invalid(
                "limits.outbox_max_bytes",
                "must be at least limits.max_message_size",
            );
        }
        if l.outbox_max_frames == 0 {
            return invalid("limits.outbox_max_frames", "must be at least 1");
        }
        if self.heartbeat.interval_ms == 0 {
            return invalid("heartbeat.interval_ms", "must be at least 1");
        }
        if self.heartbeat.idle_timeout_ms <= self.heartbeat.interval_ms {
            return invalid(
                "heartbeat.idle_timeout_ms",
                "must be longer than heartbeat.interval_ms",
            );
        }
        if self.node_id.len() > 64
            || !self
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return invalid("node_id", "at most 64 of A-Z a-z 0-9 - _ .");
        }
        if self.bus == BusKind::Redis
            && !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://"))
        {
            return invalid("redis_url", "must start with redis:// or rediss://");
        }
        if !(0.0..=1.0).contains(&self.otel.sample_ratio) {
            return invalid("otel.sample_ratio", "must be between 0 and 1");
        }
        let r = &self.redis;
        if r.prefix.is_empty() || r.prefix.contains(char::is_whitespace) {
            return invalid("redis.prefix", "must be non-empty, without spaces");
        }
        for (key, value) in [
            ("redis.probe_interval_ms", r.probe_interval_ms),
            ("redis.reconnect_min_ms", r.reconnect_min_ms),
            ("redis.connect_timeout_ms", r.connect_timeout_ms),
            ("redis.response_timeout_ms", r.response_timeout_ms),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if r.probe_timeout_ms <= r.probe_interval_ms {
            return invalid(
                "redis.probe_timeout_ms",
                "must be longer than redis.probe_interval_ms",
            );
        }
        if r.reconnect_max_ms < r.reconnect_min_ms {
            return invalid(
                "redis.reconnect_max_ms",
                "must be at least redis.reconnect_min_ms",
            );
        }
        for ns in self.namespaces.keys() {
            if ns.is_empty() || crate::channel::ChannelName::parse(ns).is_err() || ns.contains(':')
            {
                return invalid(
                    "namespaces",
                    "namespace names use A-Z a-z 0-9 _ - . @ / only",
                );
            }
        }
        Ok(())
    }

    /// This node's id: `node_id`, or one generated (`node-xxxxxxxx`) when it is empty.
    pub fn node_id_or_generated(&self) -> String {
        if self.node_id.is_empty() {
            format!("node-{:08x}", fastrand::u32(..))
        } else {
            self.node_id.clone()
        }
    }

    /// The policy for a namespace, or `None` when the namespace is not configured.
    pub fn namespace(&self, ns: &str) -> Option<&NamespacePolicy> {
        if ns.is_empty() {
            Some(&self.default_namespace)
        } else {
            self.namespaces.get(ns)
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat.interval_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat.idle_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<config::Map<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::load(&Cli::default(), env(&[])).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn env_then_flags_override() {
        let cli = Cli {
            bus: Some("redis".into()),
            set: vec!["limits.max_subscriptions=3".into()],
            ..Cli::default()
        };
        let s = Settings::load(
            &cli,
            env(&[
                ("ROOMCAST_LISTEN", "0.0.0.0:9000"),
                ("ROOMCAST_BUS", "memory"),
                ("ROOMCAST_LIMITS__MAX_CONNECTIONS", "7"),
                ("ROOMCAST_ALLOWED_ORIGINS", "http://a,http://b"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.bus, BusKind::Redis);
        assert_eq!(s.limits.max_connections, 7);
        assert_eq!(s.limits.max_subscriptions, 3);
        assert_eq!(s.allowed_origins, ["http://a", "http://b"]);
    }

    #[test]
    fn foreign_variables_under_the_prefix_are_ignored() {
        let s = Settings::load(
            &Cli::default(),
            env(&[
                ("ROOMCAST_PORT", "tcp://10.0.0.1:8080"),
                ("ROOMCAST_SERVICE_HOST", "10.0.0.1"),
                ("ROOMCAST_BIN", "/x"),
            ]),
        )
        .unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn top_level_keys_are_complete() {
        let value = serde_json::to_value(Settings::default()).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut known = TOP_LEVEL_KEYS.to_vec();
        keys.sort_unstable();
        known.sort_unstable();
        assert_eq!(keys, known);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = |pairs: &[(&str, &str)]| {
            Settings::load(&Cli::default(), env(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("ROOMCAST_LISTEN", "nowhere")]).contains("listen"));
        assert!(err(&[("ROOMCAST_BUS", "kafka")]).contains("bus"));
        assert!(err(&[("ROOMCAST_LIMITS__MAX_CONECTIONS", "1")]).contains("max_conections"));
        assert!(
            err(&[("ROOMCAST_LIMITS__MAX_CONNECTIONS", "0")]).contains("limits.max_connections")
        );
    }
}
