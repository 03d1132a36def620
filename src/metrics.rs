//! Prometheus metrics, served as text at `/metrics`.
//!
//! Counters are incremented where things happen (the sequencer, the fan-out, connections);
//! gauges that mirror a size (subscriptions, latest seq, actions) are read at scrape time.
//! Histograms are observed once per pipeline pass, snapshot, log sync or socket write,
//! never per event, so the hot path pays nothing per event for them. The process's own
//! metrics (CPU, memory, descriptors) are read from `/proc/self` at scrape time, under the
//! unprefixed `process_` names every Prometheus process collector uses.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::error::ErrorCode;

/// Every limit, as the `limit` label of the `limits_hit` metric. Defined beside the metric,
/// not with the checks, so each layer that refuses past a limit (the edge's frame, request
/// and connection limits, the sequencer's profile limits) counts it without depending on
/// another layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    FrameSize,
    Subscriptions,
    Connections,
    ConnectionsPerIp,
    PublishRate,
    BodySize,
    BatchSize,
    JsonDepth,
    ConnectTimeout,
    /// What one visitor profile holds (user ids, customers, traits, channels).
    ProfileSize,
    /// How many segments the hub holds (`hub::segments::MAX_SEGMENTS`).
    Segments,
}

impl Limit {
    pub const ALL: [Limit; 11] = [
        Limit::FrameSize,
        Limit::Subscriptions,
        Limit::Connections,
        Limit::ConnectionsPerIp,
        Limit::PublishRate,
        Limit::BodySize,
        Limit::BatchSize,
        Limit::JsonDepth,
        Limit::ConnectTimeout,
        Limit::ProfileSize,
        Limit::Segments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::FrameSize => "frame_size",
            Limit::Subscriptions => "subscriptions",
            Limit::Connections => "connections",
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::PublishRate => "publish_rate",
            Limit::BodySize => "body_size",
            Limit::BatchSize => "batch_size",
            Limit::JsonDepth => "json_depth",
            Limit::ConnectTimeout => "connect_timeout",
            Limit::ProfileSize => "profile_size",
            Limit::Segments => "segments",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: &'static str,
}

/// The `sink` label of the webhook sinks' metrics: the sink's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

/// Every metric the hub exports.
pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub subscriptions: Gauge,
    pub latest_seq: Gauge,
    pub actions: Gauge,
    pub retained_events: Gauge,
    pub events_accepted: Counter,
    pub events_duplicate: Counter,
    pub events_refused: Family<CodeLabel, Counter>,
    pub deliveries: Counter,
    pub slow_consumers_closed: Counter,
    pub limits_hit: Family<LimitLabel, Counter>,
    pub auth_refused: Counter,
    pub snapshot_failures: Counter,
    /// 1 while the log can write, 0 while the disk is full and publishes are refused.
    pub log_writable: Gauge,
    /// In a cluster: the stream sequence of the last message applied, and how many the
    /// stream holds beyond it.
    pub stream_applied: Gauge,
    pub stream_lag: Gauge,
    pub stream_held: Gauge,
    /// Per webhook sink: its cursor, how many seqs it is behind, whether it is paused,
    /// its failures in a row (set at scrape time), and what it delivered and failed.
    pub sink_cursor: Family<SinkLabel, Gauge>,
    pub sink_lag: Family<SinkLabel, Gauge>,
    pub sink_paused: Family<SinkLabel, Gauge>,
    pub sink_consecutive_failures: Family<SinkLabel, Gauge>,
    pub sink_events_delivered: Family<SinkLabel, Counter>,
    pub sink_batches_acked: Family<SinkLabel, Counter>,
    pub sink_failures: Family<SinkLabel, Counter>,
    pub sink_gaps: Family<SinkLabel, Counter>,
    /// Per pipeline pass: from the pass's oldest publish reaching the pipeline to its
    /// acknowledgement (logged and fanned out), so the slowest publish of each pass.
    pub publish_ack_seconds: Histogram,
    /// Per pass: appending its records to the log (with `fsync = always`, their fsync too).
    pub log_append_seconds: Histogram,
    /// Each sync of the log that someone asked for (a snapshot, `fsync = interval`).
    pub log_sync_seconds: Histogram,
    /// Each snapshot written, from beginning it to its file being synced and pruned.
    pub snapshot_seconds: Histogram,
    /// Events (and visitor changes) per pipeline pass.
    pub pipeline_pass_events: Histogram,
    /// Frames each WebSocket write completed: how well the fan-out's vectored writes
    /// batch (a frame cut by a full socket counts in the write that finishes it).
    pub frames_per_write: Histogram,
    /// The `process_` metrics, registered apart from the `actionhub_` prefix.
    process: ProcessMetrics,
    process_registry: Registry,
}

/// Buckets for durations from 50 microseconds to about 26 seconds.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.00005, 2.0, 20)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::of_node(None)
    }

    /// The metrics of a cluster node: every one labelled `node`, so one dashboard tells
    /// the nodes apart.
    pub fn of_node(node: Option<&str>) -> Metrics {
        let labels = node
            .map(|node| (std::borrow::Cow::Borrowed("node"), node.to_owned().into()))
            .into_iter();
        let mut registry = Registry::with_prefix_and_labels("actionhub", labels);
        let m = Metrics {
            registry: Registry::default(),
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            latest_seq: Gauge::default(),
            actions: Gauge::default(),
            retained_events: Gauge::default(),
            events_accepted: Counter::default(),
            events_duplicate: Counter::default(),
            events_refused: Family::default(),
            deliveries: Counter::default(),
            slow_consumers_closed: Counter::default(),
            limits_hit: Family::default(),
            auth_refused: Counter::default(),
            snapshot_failures: Counter::default(),
            log_writable: Gauge::default(),
            stream_applied: Gauge::default(),
            stream_lag: Gauge::default(),
            stream_held: Gauge::default(),
            sink_cursor: Family::default(),
            sink_lag: Family::default(),
            sink_paused: Family::default(),
            sink_consecutive_failures: Family::default(),
            sink_events_delivered: Family::default(),
            sink_batches_acked: Family::default(),
            sink_failures: Family::default(),
            sink_gaps: Family::default(),
            publish_ack_seconds: Histogram::new(seconds_buckets()),
            log_append_seconds: Histogram::new(seconds_buckets()),
            log_sync_seconds: Histogram::new(seconds_buckets()),
            snapshot_seconds: Histogram::new(seconds_buckets()),
            pipeline_pass_events: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            // 1 to 128 frames: an outbox offers a write 128 frames at most.
            frames_per_write: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
            process: ProcessMetrics::default(),
            process_registry: Registry::default(),
        };
        m.log_writable.set(1);
        registry.register(
            "build",
            "The hub's version (and git commit, when the build knew it)",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                (
                    "git_sha",
                    option_env!("ACTIONHUB_GIT_SHA").unwrap_or("unknown"),
                ),
            ]),
        );
        let histograms = [
            (
                "publish_ack_seconds",
                "Publish-to-acknowledgement latency of the oldest publish of each pipeline pass",
                &m.publish_ack_seconds,
            ),
            (
                "log_append_seconds",
                "Time to append a pipeline pass to the log (with fsync=always, its fsync too)",
                &m.log_append_seconds,
            ),
            (
                "log_sync_seconds",
                "Time of each log sync asked for (snapshots, fsync=interval)",
                &m.log_sync_seconds,
            ),
            (
                "snapshot_seconds",
                "Time to write, sync and prune a snapshot",
                &m.snapshot_seconds,
            ),
            (
                "pipeline_pass_events",
                "Events and visitor changes per pipeline pass (one log append, one fan-out)",
                &m.pipeline_pass_events,
            ),
            (
                "frames_per_write",
                "WebSocket frames each socket write completed (one vectored write a pass)",
                &m.frames_per_write,
            ),
        ];
        for (name, help, histogram) in histograms {
            registry.register(name, help, histogram.clone());
        }
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "subscriptions",
            "Active subscriptions",
            m.subscriptions.clone(),
        );
        registry.register(
            "latest_seq",
            "Seq of the newest accepted event",
            m.latest_seq.clone(),
        );
        registry.register("actions", "Actions held in state", m.actions.clone());
        registry.register(
            "retained_events",
            "Events in the replayable history",
            m.retained_events.clone(),
        );
        registry.register(
            "events_accepted",
            "Events accepted and given a seq",
            m.events_accepted.clone(),
        );
        registry.register(
            "events_duplicate",
            "Publishes acknowledged as duplicates",
            m.events_duplicate.clone(),
        );
        registry.register(
            "events_refused",
            "Publishes refused, by error code",
            m.events_refused.clone(),
        );
        registry.register(
            "deliveries",
            "Event frames queued to connections",
            m.deliveries.clone(),
        );
        registry.register(
            "slow_consumers_closed",
            "Connections closed with 4008 because their queue was full",
            m.slow_consumers_closed.clone(),
        );
        registry.register(
            "limits_hit",
            "Requests, frames and connections refused by a limit, by limit",
            m.limits_hit.clone(),
        );
        registry.register(
            "auth_refused",
            "Connections and requests refused for missing or bad credentials",
            m.auth_refused.clone(),
        );
        registry.register(
            "snapshot_failures",
            "Snapshots that could not be written (retried with a growing delay)",
            m.snapshot_failures.clone(),
        );
        registry.register(
            "log_writable",
            "1 while the log can write; 0 while the disk is full and publishes are refused",
            m.log_writable.clone(),
        );
        if node.is_some() {
            registry.register(
                "stream_applied",
                "Stream sequence of the last shared-stream message this node applied",
                m.stream_applied.clone(),
            );
            registry.register(
                "stream_lag",
                "Shared-stream messages not yet applied by this node",
                m.stream_lag.clone(),
            );
            registry.register(
                "stream_held",
                "Shared-stream messages held until their origin's earlier ones arrive",
                m.stream_held.clone(),
            );
        }
        let sink_gauges = [
            (
                "sink_cursor",
                "Seq up to which a webhook sink's receiver acknowledged",
                &m.sink_cursor,
            ),
            (
                "sink_lag",
                "Seqs delivered by the hub past a webhook sink's cursor",
                &m.sink_lag,
            ),
            (
                "sink_paused",
                "1 while a webhook sink is paused after repeated failures",
                &m.sink_paused,
            ),
            (
                "sink_consecutive_failures",
                "Failed attempts in a row of a webhook sink's current batch",
                &m.sink_consecutive_failures,
            ),
        ];
        for (name, help, family) in sink_gauges {
            registry.register(name, help, family.clone());
        }
        let sink_counters = [
            (
                "sink_events_delivered",
                "Events a webhook sink's receiver acknowledged",
                &m.sink_events_delivered,
            ),
            (
                "sink_batches_acked",
                "Batches a webhook sink's receiver acknowledged",
                &m.sink_batches_acked,
            ),
            (
                "sink_failures",
                "Webhook requests that failed (non-2xx, timeout, no connection)",
                &m.sink_failures,
            ),
            (
                "sink_gaps",
                "Gap records sent for events that left retention before delivery",
                &m.sink_gaps,
            ),
        ];
        for (name, help, family) in sink_counters {
            registry.register(name, help, family.clone());
        }
        for limit in Limit::ALL {
            let _ = m.limits_hit.get_or_create(&LimitLabel {
                limit: limit.as_str(),
            });
        }
        for code in ErrorCode::ALL {
            // Present every code from the start, so rates work from zero.
            let _ = m.events_refused.get_or_create(&CodeLabel {
                code: code.as_str(),
            });
        }
        let (process, process_registry) = ProcessMetrics::registered();
        Metrics {
            registry,
            process,
            process_registry,
            ..m
        }
    }

    pub fn refused(&self, code: ErrorCode) {
        self.events_refused
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    pub fn limit_hit(&self, limit: Limit) {
        self.limits_hit
            .get_or_create(&LimitLabel {
                limit: limit.as_str(),
            })
            .inc();
    }

    /// Drops a deleted sink's series.
    pub fn forget_sink(&self, label: &SinkLabel) {
        for family in [
            &self.sink_cursor,
            &self.sink_lag,
            &self.sink_paused,
            &self.sink_consecutive_failures,
        ] {
            family.remove(label);
        }
        for family in [
            &self.sink_events_delivered,
            &self.sink_batches_acked,
            &self.sink_failures,
            &self.sink_gaps,
        ] {
            family.remove(label);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        self.process.refresh();
        let mut text = String::new();
        encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, &self.process_registry))
            .and_then(|()| encode_eof(&mut text))
            .expect("writing to a String cannot fail");
        text
    }
}

/// The process's own metrics, set at each scrape from `/proc/self`.
#[derive(Clone, Default)]
struct ProcessMetrics {
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
}

impl ProcessMetrics {
    /// A registry of them under the `process_` prefix.
    fn registered() -> (ProcessMetrics, Registry) {
        let m = ProcessMetrics::default();
        let mut registry = Registry::with_prefix("process");
        registry.register(
            "cpu_seconds",
            "User and system CPU time of the process",
            m.cpu_seconds.clone(),
        );
        registry.register(
            "resident_memory_bytes",
            "Resident memory of the process",
            m.resident_bytes.clone(),
        );
        registry.register(
            "open_fds",
            "Open file descriptors of the process",
            m.open_fds.clone(),
        );
        registry.register(
            "max_fds",
            "The open-files soft limit of the process",
            m.max_fds.clone(),
        );
        (m, registry)
    }

    /// Reads `/proc/self`; what cannot be read (another OS) is left as it was.
    fn refresh(&self) {
        // utime and stime, fields 14 and 15 of stat, counted after the command's closing
        // parenthesis (the command may hold spaces), in the kernel ABI's fixed USER_HZ
        // of 100 ticks a second.
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after_comm.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
                let seconds = (user + system) as f64 / 100.0;
                let delta = seconds - self.cpu_seconds.get();
                if delta > 0.0 {
                    self.cpu_seconds.inc_by(delta);
                }
            }
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let rss_kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok());
            if let Some(kib) = rss_kib {
                self.resident_bytes.set(kib * 1024);
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        if let Ok((soft, _)) = rlimit::Resource::NOFILE.get() {
            self.max_fds.set(i64::try_from(soft).unwrap_or(i64::MAX));
        }
    }
}
