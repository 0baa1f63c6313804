//! Wall-clock time as the protocol carries it: publish timestamps in envelopes, and the
//! publish-to-write latency measured against them. Shared by every layer, owned by none.

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Milliseconds since the Unix epoch: the unit of an envelope's `ts`.
pub fn unix_millis() -> u64 {
    unix_micros() / 1000
}
