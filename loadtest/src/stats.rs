//! Latency histograms (HDR, microseconds) and the one clock every process reads.

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

pub type Hist = Histogram<u64>;

/// Highest latency recorded: 10 minutes, in microseconds; anything slower is clamped.
const MAX_US: u64 = 600_000_000;

pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Coarser, for the per-second series.
pub fn new_series_hist() -> Hist {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("valid histogram bounds")
}

pub fn record(h: &mut Hist, us: u64) {
    h.saturating_record(us.clamp(1, MAX_US));
}

/// Wall-clock nanoseconds since the Unix epoch. Publisher and receivers run on one
/// machine and read the same clock, so send and receive times compare directly.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn encode(h: &Hist) -> String {
    let mut buf = Vec::new();
    if V2Serializer::new().serialize(h, &mut buf).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode(s: &str) -> anyhow::Result<Hist> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s)?;
    Ok(Deserializer::new().deserialize(&mut bytes.as_slice())?)
}

pub fn merge_series(into: &mut Vec<Hist>, from: &[Hist]) {
    while into.len() < from.len() {
        into.push(new_series_hist());
    }
    for (a, b) in into.iter_mut().zip(from) {
        a.add(b).ok();
    }
}
