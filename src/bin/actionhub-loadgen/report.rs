//! The JSON lines the generator prints, and the `--check` verdict on them.
//!
//! Field names are camelCase like the hub's own JSON. A figure that could not be measured
//! (no `--server-pid`, or nothing delivered) is `null`, never a made-up zero.

use std::collections::BTreeMap;

use serde::Serialize;

/// Printed once, after every connection is up and before any load.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SetupReport {
    pub(crate) phase: &'static str,
    pub(crate) target: String,
    pub(crate) connections: usize,
    pub(crate) subscribers: usize,
    pub(crate) firehose: usize,
    pub(crate) publishers: usize,
    pub(crate) customers: usize,
    /// Size of one published event's JSON (the `event` object alone).
    pub(crate) event_bytes: usize,
    pub(crate) connect_seconds: f64,
    pub(crate) server_rss_before_kib: Option<u64>,
    pub(crate) server_rss_after_kib: Option<u64>,
    /// (RSS after connecting - RSS before) / connections.
    pub(crate) kib_per_connection: Option<f64>,
}

/// One line per step of the ladder.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StepReport {
    pub(crate) phase: &'static str,
    /// 1-based position in the ladder.
    pub(crate) step: usize,
    /// The requested total rate: a number, or "max".
    pub(crate) rate: serde_json::Value,
    /// How long publishing lasted.
    pub(crate) seconds: f64,
    pub(crate) publishes: u64,
    /// Acknowledged publishes per second of publishing.
    pub(crate) publishes_per_sec: f64,
    pub(crate) acks: u64,
    pub(crate) duplicate_acks: u64,
    pub(crate) publish_errors: u64,
    pub(crate) publish_error_codes: BTreeMap<String, u64>,
    /// Publishes neither acknowledged nor refused in time.
    pub(crate) unacked: u64,
    /// Received deliveries per second, from the step's start to the last delivery counted.
    pub(crate) deliveries_per_sec: f64,
    /// Per acknowledged event: the subscribers of its customer plus the firehose.
    pub(crate) expected_deliveries: u64,
    pub(crate) received_deliveries: u64,
    pub(crate) lost_deliveries: u64,
    /// Deliveries beyond the expected count (duplicates, or stragglers of an earlier step).
    pub(crate) extra_deliveries: u64,
    /// Deliveries of events the server made itself (`session:started`, ...).
    pub(crate) server_events: u64,
    /// Deliveries of a customer the subscription did not ask for, or not of this run.
    pub(crate) unexpected_deliveries: u64,
    pub(crate) order_violations: u64,
    pub(crate) unreadable_frames: u64,
    /// Connections that ended so far (subscribers and publishers), since the start.
    pub(crate) closed_connections: u64,
    /// Subscribers the server closed as too slow (4008) that came back with `since`
    /// during the step; their replayed deliveries count, late, and nothing as lost.
    pub(crate) resumed_connections: u64,
    pub(crate) drain_seconds: f64,
    pub(crate) latency_p50_micros: Option<u64>,
    pub(crate) latency_p99_micros: Option<u64>,
    pub(crate) latency_p999_micros: Option<u64>,
    pub(crate) latency_max_micros: Option<u64>,
    /// Publish-to-acknowledgement latency of the acknowledged publishes.
    pub(crate) ack_p50_micros: Option<u64>,
    pub(crate) ack_p99_micros: Option<u64>,
    pub(crate) server_cpu_seconds: Option<f64>,
    pub(crate) server_rss_kib: Option<u64>,
    pub(crate) cpu_micros_per_delivery: Option<f64>,
    /// Repeated from the setup line, so every line stands alone.
    pub(crate) kib_per_connection: Option<f64>,
    /// The first refusal and the first closed connection, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_close: Option<String>,
}

/// What `--check` objects to in a step; empty when the step was clean.
pub(crate) fn problems(step: &StepReport) -> Vec<String> {
    let mut problems = Vec::new();
    let rate = match &step.rate {
        serde_json::Value::String(label) => label.clone(),
        number => number.to_string(),
    };
    let mut object = |count: u64, what: &str| {
        if count > 0 {
            problems.push(format!("step {} (rate {rate}): {count} {what}", step.step));
        }
    };
    object(step.lost_deliveries, "deliveries lost");
    object(step.publish_errors, "publish errors");
    object(step.unacked, "publishes never acknowledged");
    object(step.order_violations, "order violations");
    object(step.unexpected_deliveries, "unexpected deliveries");
    object(step.unreadable_frames, "unreadable frames");
    object(step.closed_connections, "connections closed");
    if step.acks == 0 {
        problems.push(format!(
            "step {} (rate {rate}): no publish was acknowledged",
            step.step
        ));
    }
    if !problems.is_empty() {
        if let Some(error) = &step.first_error {
            problems.push(format!("  first error: {error}"));
        }
        if let Some(close) = &step.first_close {
            problems.push(format!("  first close: {close}"));
        }
    }
    problems
}
