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
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

const CLOSE_CODES: [CloseCode; 9] = [
    CloseCode::Normal,
    CloseCode::GoingAway,
    CloseCode::ProtocolError,
    CloseCode::InvalidPayload,
    CloseCode::MessageTooBig,
    CloseCode::InternalError,
    CloseCode::TryAgainLater,
    CloseCode::SlowConsumer,
    CloseCode::IdleTimeout,
];

const ERROR_CODES: [ErrorCode; 9] = [
    ErrorCode::BadRequest,
    ErrorCode::UnknownOp,
    ErrorCode::BadChannel,
    ErrorCode::Forbidden,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::LimitExceeded,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

#[derive(Default, Debug)]
pub struct Metrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    pub subscriptions: Gauge,
    pub channels: Gauge,
    pub messages_published: Counter,
    pub messages_received: Counter,
    pub messages_delivered: Counter,
    pub messages_dropped_encode: Counter,
    pub slow_consumers: Counter,
    pub rejected_origin: Counter,
    pub messages_duplicate: Counter,
    pub bus_connected: Gauge,
    pub bus_reconnects: Counter,
    pub bus_probe_failures: Counter,
    pub bus_invalid_envelopes: Counter,
    pub bus_gap_notices: Counter,
    pub bus_subscribes: Counter,
    pub bus_unsubscribes: Counter,
    closes: [Counter; CLOSE_CODES.len()],
    errors: [Counter; ERROR_CODES.len()],
}

impl Metrics {
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

    pub fn closes(&self, code: CloseCode) -> u64 {
        CLOSE_CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.closes[i].get())
    }

    pub fn errors(&self, code: ErrorCode) -> u64 {
        ERROR_CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i].get())
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP roomcast_{name} {help}");
            let _ = writeln!(out, "# TYPE roomcast_{name} {kind}");
            let _ = writeln!(out, "roomcast_{name} {value}");
        };
        one(
            "connections",
            "gauge",
            "Open client WebSocket connections.",
            self.connections.get().to_string(),
        );
        one(
            "connections_total",
            "counter",
            "Client WebSocket connections accepted.",
            self.connections_total.get().to_string(),
        );
        one(
            "subscriptions",
            "gauge",
            "Channel subscriptions held by clients of this node.",
            self.subscriptions.get().to_string(),
        );
        one(
            "channels",
            "gauge",
            "Channels with at least one subscriber on this node.",
            self.channels.get().to_string(),
        );
        one(
            "messages_published_total",
            "counter",
            "Messages published by clients of this node.",
            self.messages_published.get().to_string(),
        );
        one(
            "messages_received_total",
            "counter",
            "Messages this node received from the bus.",
            self.messages_received.get().to_string(),
        );
        one(
            "messages_delivered_total",
            "counter",
            "Message frames queued to subscribers.",
            self.messages_delivered.get().to_string(),
        );
        one(
            "messages_dropped_encode_total",
            "counter",
            "Messages that could not be encoded for a codec.",
            self.messages_dropped_encode.get().to_string(),
        );
        one(
            "slow_consumer_disconnects_total",
            "counter",
            "Connections closed with 4000 because their queue overflowed.",
            self.slow_consumers.get().to_string(),
        );
        one(
            "rejected_origin_total",
            "counter",
            "WebSocket upgrades refused for their Origin.",
            self.rejected_origin.get().to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP roomcast_closes_total Connections closed by the node, by close code."
        );
        let _ = writeln!(out, "# TYPE roomcast_closes_total counter");
        for (code, counter) in CLOSE_CODES.iter().zip(&self.closes) {
            let _ = writeln!(
                out,
                "roomcast_closes_total{{code=\"{}\",reason=\"{}\"}} {}",
                code.code(),
                code.label(),
                counter.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP roomcast_protocol_errors_total Error replies sent, by error code."
        );
        let _ = writeln!(out, "# TYPE roomcast_protocol_errors_total counter");
        for (code, counter) in ERROR_CODES.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "roomcast_protocol_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                counter.get()
            );
        }
        out
    }
}
