//! Typed settings: defaults in code < `roomcast.toml` (or `--config FILE`) < `ROOMCAST_…`
//! environment < command-line flags. Unknown keys and bad values are errors naming the key.
//!
//! `sections` holds the section structs and their defaults, `validate` the checks that run
//! after loading.

mod sections;
mod validate;

pub use sections::{
    ApiSettings, AuthSettings, Heartbeat, Limits, LogSettings, MetricsSettings, NamespacePolicy,
    OtelSettings, PresenceSettings, RedisSettings, Shutdown, TlsSettings,
};

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
    #[arg(long, value_name = "memory|redis|redis-cluster")]
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
    /// Redis Cluster's sharded pub/sub between nodes; `redis_url` lists seed nodes,
    /// comma-separated.
    #[serde(rename = "redis-cluster")]
    RedisCluster,
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
    pub presence: PresenceSettings,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
    pub api: ApiSettings,
    pub shutdown: Shutdown,
    /// Policy of channels without a namespace (no `:` in the name).
    pub default_namespace: NamespacePolicy,
    /// Policy per namespace (the part of a channel name before the first `:`).
    /// Channels in a namespace not listed here are rejected with `bad_channel`.
    pub namespaces: BTreeMap<String, NamespacePolicy>,
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
            presence: PresenceSettings::default(),
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
            api: ApiSettings::default(),
            shutdown: Shutdown::default(),
            default_namespace: NamespacePolicy::default(),
            namespaces: BTreeMap::from([("chat".into(), NamespacePolicy::chat())]),
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
const TOP_LEVEL_KEYS: [&str; 19] = [
    "api",
    "auth",
    "tls",
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
    "presence",
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
                .with_list_parse_key("limits.trusted_proxies")
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

    /// This node's id: `node_id`, or one generated (`node-xxxxxxxx`) when it is empty.
    pub fn node_id_or_generated(&self) -> String {
        if self.node_id.is_empty() {
            format!("node-{:08x}", fastrand::u32(..))
        } else {
            self.node_id.clone()
        }
    }

    /// Whether any namespace keeps history (the Redis bus then loads its functions).
    pub fn keeps_history(&self) -> bool {
        self.namespaces
            .values()
            .chain([&self.default_namespace])
            .any(|policy| policy.history_size > 0)
    }

    /// The policy for a namespace, or `None` when the namespace is not configured.
    pub fn namespace(&self, ns: &str) -> Option<&NamespacePolicy> {
        if ns.is_empty() {
            Some(&self.default_namespace)
        } else {
            self.namespaces.get(ns)
        }
    }

    /// Whether some namespace admits clients without a token (always, without auth).
    pub fn admits_anonymous(&self) -> bool {
        !self.auth.enabled()
            || self
                .namespaces
                .values()
                .chain([&self.default_namespace])
                .any(|p| p.anonymous)
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat.interval_ms)
    }

    pub fn presence_ttl(&self) -> Duration {
        Duration::from_millis(self.presence.ttl_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat.idle_timeout_ms)
    }
}

#[cfg(test)]
mod tests;
