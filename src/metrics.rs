//! Every metric the node keeps, defined in one place, rendered as Prometheus text on
//! `/metrics`. Labels are bounded enums only: never a channel name or a client id.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::protocol::{CloseCode, ErrorCode};

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A Prometheus histogram over fixed buckets, lock-free.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds.
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// Latency buckets, seconds: 1 ms to 10 s.
const LATENCY_BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe_us(&self, us: u64) {
        let secs = us as f64 / 1e6;
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {}", self.count());
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(&LATENCY_BOUNDS)
    }
}

/// Why a message (or a frame of it) did not reach a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Discarded from the queue of a connection cut off as a slow consumer.
    SlowConsumer,
    /// Could not be encoded for a codec (a bug).
    Encode,
    /// Its id was seen on the channel recently.
    Duplicate,
    /// Not a valid envelope on Redis.
    InvalidEnvelope,
    /// Larger than `redis.max_envelope_bytes`: it would overflow its subscribers' queues.
    Oversize,
    /// The connection was already closing.
    Closing,
}

const DROP_REASONS: [DropReason; 6] = [
    DropReason::SlowConsumer,
    DropReason::Encode,
    DropReason::Duplicate,
    DropReason::InvalidEnvelope,
    DropReason::Oversize,
    DropReason::Closing,
];

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::Encode => "encode",
            DropReason::Duplicate => "duplicate",
            DropReason::InvalidEnvelope => "invalid_envelope",
            DropReason::Oversize => "oversize",
            DropReason::Closing => "closing",
        }
    }
}

const CLOSE_CODES: [CloseCode; 12] = [
    CloseCode::Normal,
    CloseCode::GoingAway,
    CloseCode::ProtocolError,
    CloseCode::InvalidPayload,
    CloseCode::MessageTooBig,
    CloseCode::InternalError,
    CloseCode::TryAgainLater,
    CloseCode::SlowConsumer,
    CloseCode::IdleTimeout,
    CloseCode::Unauthorized,
    CloseCode::TokenExpired,
    CloseCode::Disconnected,
];

const ERROR_CODES: [ErrorCode; 18] = [
    ErrorCode::BadRequest,
    ErrorCode::UnknownOp,
    ErrorCode::BadChannel,
    ErrorCode::Forbidden,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::LimitExceeded,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
    ErrorCode::Unauthorized,
    ErrorCode::TokenMalformed,
    ErrorCode::TokenAlgorithm,
    ErrorCode::TokenSignature,
    ErrorCode::TokenAudience,
    ErrorCode::TokenIssuer,
    ErrorCode::TokenExpired,
    ErrorCode::TokenNotYetValid,
    ErrorCode::TokenMismatch,
];

#[derive(Default, Debug)]
pub struct Metrics {
    /// Open connections by transport, in `Framing::LABELS` order.
    pub connections: [Gauge; 3],
    pub connections_total: Counter,
    pub subscriptions: Gauge,
    pub channels: Gauge,
    pub messages_published: Counter,
    pub messages_received: Counter,
    pub messages_delivered: Counter,
    pub slow_consumers: Counter,
    pub rejected_origin: Counter,
    /// Upgrades refused because the node held `limits.max_connections`.
    pub rejected_full: Counter,
    /// Upgrades refused because the address held `limits.max_connections_per_ip`.
    pub rejected_address: Counter,
    /// Connections dropped for not completing their request head (or TLS handshake) in
    /// `limits.handshake_timeout_ms`.
    pub handshake_timeouts: Counter,
    /// Requests refused with 431 for a head over `limits.max_header_bytes`.
    pub oversized_heads: Counter,
    /// TLS handshakes that failed (bad client hello, plain HTTP on the TLS port, …).
    pub tls_failures: Counter,
    pub bus_connected: Gauge,
    pub bus_reconnects: Counter,
    pub bus_probe_failures: Counter,
    pub bus_gap_notices: Counter,
    pub bus_subscribes: Counter,
    pub bus_unsubscribes: Counter,
    /// Messages a node fanned out again from history after its bus link came back.
    pub recovered_messages: Counter,
    /// Join and leave announcements received from the bus.
    pub presence_events: Counter,
    /// From a message's publish time (its envelope `ts`) to the write of its frame to a
    /// client socket; one observation per client.
    pub publish_to_write: Histogram,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Frames queued for clients and not yet written, over all connections.
    pub queued_frames: Gauge,
    closes: [Counter; CLOSE_CODES.len()],
    errors: [Counter; ERROR_CODES.len()],
    drops: [Counter; DROP_REASONS.len()],
}

impl Metrics {
    pub fn refused(&self, refused: crate::transport::admission::Refused) {
        use crate::transport::admission::Refused;
        match refused {
            Refused::Full => self.rejected_full.inc(),
            Refused::Address => self.rejected_address.inc(),
        }
    }

    pub fn closed(&self, code: CloseCode) {
        if let Some(i) = CLOSE_CODES.iter().position(|c| *c == code) {
            self.closes[i].inc();
        }
    }

    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ERROR_CODES.iter().position(|c| *c == code) {
            self.errors[i].inc();
        }
    }

    pub fn dropped(&self, reason: DropReason, n: u64) {
        if let Some(i) = DROP_REASONS.iter().position(|r| *r == reason) {
            self.drops[i].add(n);
        }
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        DROP_REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.drops[i].get())
    }

    pub fn closes(&self, code: CloseCode) -> u64 {
        CLOSE_CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.closes[i].get())
    }

    /// Every unlabelled metric: (name without `roomcast_`, type, help, value). `/metrics`
    /// renders these, and the OpenTelemetry bridge observes them.
    pub fn samples(&self) -> [(&'static str, &'static str, &'static str, i64); 27] {
        let c = |c: &Counter| c.get() as i64;
        let g = |g: &Gauge| g.get();
        #[rustfmt::skip]
        let samples = [
            ("connections_total", "counter", "Client WebSocket connections accepted.", c(&self.connections_total)),
            ("subscriptions", "gauge", "Channel subscriptions held by clients of this node.", g(&self.subscriptions)),
            ("channels", "gauge", "Channels with at least one subscriber on this node.", g(&self.channels)),
            ("messages_published_total", "counter", "Messages published by clients of this node.", c(&self.messages_published)),
            ("messages_received_total", "counter", "Messages this node received from the bus.", c(&self.messages_received)),
            ("messages_delivered_total", "counter", "Message frames queued to subscribers.", c(&self.messages_delivered)),
            ("messages_dropped_encode_total", "counter", "Messages that could not be encoded for a codec.", self.drops(DropReason::Encode) as i64),
            ("messages_duplicate_total", "counter", "Messages dropped because their id was seen recently.", self.drops(DropReason::Duplicate) as i64),
            ("slow_consumer_disconnects_total", "counter", "Connections closed with 4000 because their queue overflowed.", c(&self.slow_consumers)),
            ("rejected_origin_total", "counter", "WebSocket upgrades refused for their Origin.", c(&self.rejected_origin)),
            ("rejected_node_full_total", "counter", "Upgrades refused (503) because the node held limits.max_connections.", c(&self.rejected_full)),
            ("rejected_per_ip_total", "counter", "Upgrades refused (429) because the address held limits.max_connections_per_ip.", c(&self.rejected_address)),
            ("handshake_timeouts_total", "counter", "Connections dropped for an incomplete request head or TLS handshake after limits.handshake_timeout_ms.", c(&self.handshake_timeouts)),
            ("oversized_request_heads_total", "counter", "Requests refused (431) for a head over limits.max_header_bytes.", c(&self.oversized_heads)),
            ("tls_handshake_failures_total", "counter", "TLS handshakes that failed.", c(&self.tls_failures)),
            ("bus_connected", "gauge", "Bus links up and subscribed: 1 or 0 for one Redis, one per shard link on a Redis Cluster.", g(&self.bus_connected)),
            ("bus_reconnects_total", "counter", "Attempts to re-establish the Redis link.", c(&self.bus_reconnects)),
            ("bus_probe_failures_total", "counter", "Times the liveness probe found the pub/sub link deaf.", c(&self.bus_probe_failures)),
            ("bus_invalid_envelopes_total", "counter", "Messages on Redis that were not valid envelopes (dropped).", self.drops(DropReason::InvalidEnvelope) as i64),
            ("bus_gap_notices_total", "counter", "Channels told `gap` after the bus link came back.", c(&self.bus_gap_notices)),
            ("bus_subscribe_calls_total", "counter", "Bus subscriptions asked for (first local subscriber).", c(&self.bus_subscribes)),
            ("bus_unsubscribe_calls_total", "counter", "Bus unsubscriptions asked for (last local subscriber left).", c(&self.bus_unsubscribes)),
            ("recovered_messages_total", "counter", "Messages fanned out from history after the bus link came back.", c(&self.recovered_messages)),
            ("presence_events_total", "counter", "Join and leave announcements received from the bus.", c(&self.presence_events)),
            ("bytes_received_total", "counter", "WebSocket payload bytes received from clients.", c(&self.bytes_in)),
            ("bytes_sent_total", "counter", "Bytes written to client sockets.", c(&self.bytes_out)),
            ("outbound_queued_frames", "gauge", "Frames queued for clients, not yet written, over all connections.", g(&self.queued_frames)),
        ];
        samples
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str(
            "# HELP roomcast_connections Open client connections, by transport.\n\
             # TYPE roomcast_connections gauge\n",
        );
        for (label, gauge) in crate::wire::Framing::LABELS.iter().zip(&self.connections) {
            let _ = writeln!(
                out,
                "roomcast_connections{{transport=\"{label}\"}} {}",
                gauge.get()
            );
        }
        for (name, kind, help, value) in self.samples().iter() {
            let _ = writeln!(
                out,
                "# HELP roomcast_{name} {help}\n# TYPE roomcast_{name} {kind}\nroomcast_{name} {value}"
            );
        }
        render_process(&mut out);
        self.render_labelled(&mut out);
        self.publish_to_write.render(
            &mut out,
            "roomcast_publish_to_write_seconds",
            "From a message's publish time to the write of its frame to a client socket.",
        );
        out
    }

    /// The families with a label: closes by code, drops by reason, errors by code.
    fn render_labelled(&self, out: &mut String) {
        let family = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        family(
            out,
            "roomcast_closes_total",
            "Connections closed by the node, by close code.",
        );
        for (code, counter) in CLOSE_CODES.iter().zip(&self.closes) {
            let (n, label, v) = (code.code(), code.label(), counter.get());
            let _ = writeln!(
                out,
                "roomcast_closes_total{{code=\"{n}\",reason=\"{label}\"}} {v}"
            );
        }
        family(
            out,
            "roomcast_messages_dropped_total",
            "Messages (frames, per client) not delivered, by reason.",
        );
        for (reason, counter) in DROP_REASONS.iter().zip(&self.drops) {
            let (label, v) = (reason.label(), counter.get());
            let _ = writeln!(
                out,
                "roomcast_messages_dropped_total{{reason=\"{label}\"}} {v}"
            );
        }
        family(
            out,
            "roomcast_protocol_errors_total",
            "Error replies sent, by error code.",
        );
        for (code, counter) in ERROR_CODES.iter().zip(&self.errors) {
            let (label, v) = (code.as_str(), counter.get());
            let _ = writeln!(
                out,
                "roomcast_protocol_errors_total{{code=\"{label}\"}} {v}"
            );
        }
    }
}

fn render_process(out: &mut String) {
    if let Some((rss, cpu)) = process_usage() {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
        );
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time in seconds.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}"
        );
    }
}

/// (RSS bytes, CPU seconds) of this process, from /proc (Linux only).
fn process_usage() -> Option<(u64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux platform roomcast targets.
    Some((rss_kib * 1024, ticks as f64 / 100.0))
}
