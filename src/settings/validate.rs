//! Checks that run once settings are loaded: each names the key it rejects, so a bad
//! value stops the node at start (exit 64) instead of misbehaving later.

use super::{BusKind, Settings, SettingsError};

type Checked = Result<(), SettingsError>;

/// More than this is a database, not a recovery window.
const MAX_HISTORY_SIZE: usize = 100_000;

fn invalid(key: &'static str, reason: &str) -> Checked {
    Err(SettingsError::Invalid {
        key,
        reason: reason.into(),
    })
}

impl Settings {
    pub fn validate(&self) -> Checked {
        self.check_limits()?;
        self.check_heartbeat()?;
        self.check_identity()?;
        self.check_redis()?;
        self.check_auth()?;
        self.check_namespaces()
    }

    fn check_auth(&self) -> Checked {
        let a = &self.auth;
        // RFC 7518 §3.2: an HS256 key at least as long as the hash.
        if a.hmac_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return invalid("auth.hmac_secret", "must be at least 32 bytes");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid("tls", "set both tls.cert_file and tls.key_file, or neither");
        }
        if self.api.key.as_ref().is_some_and(|k| k.len() < 16) {
            return invalid("api.key", "must be at least 16 bytes");
        }
        if a.connect_timeout_ms == 0 {
            return invalid("auth.connect_timeout_ms", "must be at least 1");
        }
        Ok(())
    }

    fn check_limits(&self) -> Checked {
        let l = &self.limits;
        if l.max_message_size < 128 {
            return invalid("limits.max_message_size", "must be at least 128 bytes");
        }
        if l.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if l.handshake_timeout_ms == 0 {
            return invalid("limits.handshake_timeout_ms", "must be at least 1");
        }
        // hyper's read buffer cannot be smaller.
        if l.max_header_bytes < 8192 {
            return invalid("limits.max_header_bytes", "must be at least 8192");
        }
        if !(l.publish_rate > 0.0 && l.publish_rate.is_finite()) {
            return invalid("limits.publish_rate", "must be a positive number");
        }
        if !(l.publish_burst >= 1.0 && l.publish_burst.is_finite()) {
            return invalid("limits.publish_burst", "must be at least 1");
        }
        if !(l.subscribe_rate > 0.0 && l.subscribe_rate.is_finite()) {
            return invalid("limits.subscribe_rate", "must be a positive number");
        }
        if !(l.subscribe_burst >= 1.0 && l.subscribe_burst.is_finite()) {
            return invalid("limits.subscribe_burst", "must be at least 1");
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
        Ok(())
    }

    /// Heartbeat and presence timing.
    fn check_heartbeat(&self) -> Checked {
        if self.heartbeat.interval_ms == 0 {
            return invalid("heartbeat.interval_ms", "must be at least 1");
        }
        if self.presence.ttl_ms < 300 {
            return invalid("presence.ttl_ms", "must be at least 300");
        }
        if self.heartbeat.idle_timeout_ms <= self.heartbeat.interval_ms {
            return invalid(
                "heartbeat.idle_timeout_ms",
                "must be longer than heartbeat.interval_ms",
            );
        }
        Ok(())
    }

    fn check_identity(&self) -> Checked {
        if self.node_id.len() > 64
            || !self
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return invalid("node_id", "at most 64 of A-Z a-z 0-9 - _ .");
        }
        if !(0.0..=1.0).contains(&self.otel.sample_ratio) {
            return invalid("otel.sample_ratio", "must be between 0 and 1");
        }
        Ok(())
    }

    fn check_redis(&self) -> Checked {
        if self.bus == BusKind::RedisCluster
            && !self.redis_url.split(',').all(|seed| {
                seed.trim().starts_with("redis://") || seed.trim().starts_with("rediss://")
            })
        {
            return invalid(
                "redis_url",
                "with bus = \"redis-cluster\": seed URLs (redis:// or rediss://), comma-separated",
            );
        }
        if self.bus == BusKind::Redis
            && !["redis://", "rediss://", "redis+sentinel://"]
                .iter()
                .any(|scheme| self.redis_url.starts_with(scheme))
        {
            return invalid(
                "redis_url",
                "must start with redis://, rediss:// or redis+sentinel://",
            );
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
        if r.max_envelope_bytes < 1024 || r.max_envelope_bytes > self.limits.outbox_max_bytes {
            return invalid(
                "redis.max_envelope_bytes",
                "must be from 1024 to limits.outbox_max_bytes",
            );
        }
        if r.reconnect_max_ms < r.reconnect_min_ms {
            return invalid(
                "redis.reconnect_max_ms",
                "must be at least redis.reconnect_min_ms",
            );
        }
        Ok(())
    }

    fn check_namespaces(&self) -> Checked {
        let policies = self.namespaces.values().chain([&self.default_namespace]);
        for policy in policies {
            if policy.history_size > MAX_HISTORY_SIZE {
                return invalid("namespaces.*.history_size", "must be at most 100000");
            }
            if policy.history_size > 0 && policy.history_ttl_s == 0 {
                return invalid("namespaces.*.history_ttl_s", "must be at least 1");
            }
            if policy.private && !self.auth.enabled() {
                return invalid(
                    "namespaces.*.private",
                    "private channels need auth (auth.hmac_secret or a key file)",
                );
            }
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
}
