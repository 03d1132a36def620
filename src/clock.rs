//! Time as the hub counts it: milliseconds since the Unix epoch ([`Millis`]), written as
//! RFC 3339 in frames and views ([`format_millis`]), and the one read of the node's clock
//! ([`now_millis`]).
//!
//! The clock is read only at the edges of the core: where an input is received (the hub's
//! `submit`, `administer`, the sweeper's tick) and where a file is stamped. What the
//! sequencer decides takes its time from the input, so that a replay, or another node of a
//! cluster, decides the same (ARCHITECTURE.md, "A deterministic core").

/// Milliseconds since the Unix epoch, UTC: the hub's clock for timestamps.
pub type Millis = i64;

/// Formats a timestamp as RFC 3339 with milliseconds, UTC (`2026-01-02T03:04:05.678Z`).
pub fn format_millis(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The node's clock now.
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}
