//! The run: open every connection, print the setup line, then climb the rate ladder, one
//! step and one JSON line at a time.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use crate::cli::{Args, Rate};
use crate::connect::{self, Fut};
use crate::probe::ServerProbe;
use crate::publisher::{self, InFlightLimits, PublisherStep, StepOrder, ACK_WAIT};
use crate::report::{SetupReport, StepReport};
use crate::subscriber::{self, DeliveryStats};
use crate::target::{Interest, Target};
use crate::workload::{Customers, EventCycle};

/// How often the drain polls the delivery count.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// The drain ends early once the count has not moved for this long.
const DRAIN_SETTLE: Duration = Duration::from_millis(300);

/// Extra time a publisher gets to report a step, beyond the step and its ack wait.
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// The longest a whole run may take with these flags before the process gives up:
/// every stage below has its own limit, this is the belt over them.
pub(crate) fn time_budget(args: &Args) -> Duration {
    let connect_rounds = args.connections().div_ceil(args.connect_concurrency) as u32 + 2;
    let per_step = args.duration + ACK_WAIT + REPORT_GRACE + args.drain + Duration::from_secs(1);
    args.connect_timeout * connect_rounds
        + per_step * args.rates.len() as u32
        + Duration::from_secs(30)
}

/// Runs the whole ladder against `target`; returns the step reports (already printed).
pub(crate) async fn run<T: Target>(
    args: &Args,
    target: Arc<T>,
    customers: Arc<Customers>,
) -> anyhow::Result<Vec<StepReport>> {
    let probe = ServerProbe::of(&args.server_pid);
    let probe = probe.as_ref();
    let rss_before = read_probe(probe, ServerProbe::rss_kib);
    let total = args.connections();
    let subscriber_count = args.subscribers + args.firehose;
    let setup_start = Instant::now();

    let subscribers = connect::open_all(
        0..subscriber_count,
        args.connect_concurrency,
        args.connect_timeout,
        "subscriber",
        |i| -> Fut<_> {
            let target = Arc::clone(&target);
            let interest = if i < args.subscribers {
                Interest::Customer(customers.of_subscriber(i))
            } else {
                Interest::Everything
            };
            let hub = args.addr_of(i);
            Box::pin(async move {
                let source = connect::source_address(i, total, hub);
                let read_buffer = match interest {
                    Interest::Customer(_) => connect::SMALL_READ_BUFFER,
                    Interest::Everything => connect::LARGE_READ_BUFFER,
                };
                let mut ws = connect::dial(&*target, hub, source, read_buffer).await?;
                let position = target.open_subscriber(&mut ws, interest).await?;
                let comeback = position.map(|from| subscriber::Comeback {
                    hub,
                    source,
                    read_buffer,
                    from,
                });
                Ok((ws, interest, comeback))
            })
        },
    )
    .await?;
    let stats = Arc::new(DeliveryStats::new());
    // Events stamped by their publishers are ordered per publisher; the hub's seqs overall.
    let order_stamps = target.wants_order_stamps();
    let order_streams = if order_stamps { args.publishers } else { 1 };
    for (i, (ws, interest, comeback)) in subscribers.into_iter().enumerate() {
        tokio::spawn(subscriber::run(
            i,
            ws,
            Arc::clone(&target),
            interest,
            customers.len(),
            order_streams,
            Arc::clone(&stats),
            comeback,
        ));
    }

    let publishers = connect::open_all(
        subscriber_count..total,
        args.connect_concurrency,
        args.connect_timeout,
        "publisher",
        |i| -> Fut<_> {
            let target = Arc::clone(&target);
            let hub = args.addr_of(i - subscriber_count);
            Box::pin(async move {
                let source = connect::source_address(i, total, hub);
                let mut ws =
                    connect::dial(&*target, hub, source, connect::SMALL_READ_BUFFER).await?;
                target.open_publisher(&mut ws).await?;
                Ok(ws)
            })
        },
    )
    .await?;
    let map_id = Uuid::new_v4();
    let mut orders = Vec::with_capacity(publishers.len());
    for (p, ws) in publishers.into_iter().enumerate() {
        let (order_tx, order_rx) = mpsc::channel(1);
        let mut cycle = EventCycle::new(p, args.publishers, customers.len(), map_id);
        if order_stamps {
            cycle = cycle.with_order_stamps(p);
        }
        tokio::spawn(publisher::run(
            p,
            Arc::clone(&target),
            ws,
            cycle,
            Arc::clone(&customers),
            InFlightLimits {
                window: args.window,
                ping_every: args.ping_every,
            },
            order_rx,
        ));
        orders.push(order_tx);
    }

    let rss_after = read_probe(probe, ServerProbe::rss_kib);
    let kib_per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if total > 0 => {
            Some(round2((after as f64 - before as f64) / total as f64))
        }
        _ => None,
    };
    emit(&SetupReport {
        phase: "connected",
        target: args.target.to_string(),
        connections: total,
        subscribers: args.subscribers,
        firehose: args.firehose,
        publishers: args.publishers,
        customers: customers.len(),
        event_bytes: sample_event_bytes(&customers, order_stamps),
        connect_seconds: round3(setup_start.elapsed().as_secs_f64()),
        server_rss_before_kib: rss_before,
        server_rss_after_kib: rss_after,
        kib_per_connection,
    })?;

    let mut reports = Vec::with_capacity(args.rates.len());
    for (n, rate) in args.rates.iter().enumerate() {
        let mut report = run_step(args, *rate, &orders, &stats, probe).await;
        report.step = n + 1;
        report.kib_per_connection = kib_per_connection;
        emit(&report)?;
        reports.push(report);
    }
    Ok(reports)
}

/// One step: publish at `rate` for the step's duration, drain, count.
async fn run_step(
    args: &Args,
    rate: Rate,
    orders: &[mpsc::Sender<StepOrder>],
    stats: &DeliveryStats,
    probe: Option<&ServerProbe>,
) -> StepReport {
    // Whatever trickled in after the previous step's drain belongs to no step.
    let _ = stats.take();
    let cpu_before = read_probe(probe, ServerProbe::cpu_seconds);
    let start = Instant::now();

    let per_publisher = match rate {
        Rate::PerSecond(total) => Some(total / orders.len() as f64),
        Rate::Max => None,
    };
    let mut replies = Vec::with_capacity(orders.len());
    for order_tx in orders {
        let (reply, answer) = oneshot::channel();
        let order = StepOrder {
            rate: per_publisher,
            duration: args.duration,
            reply,
        };
        // A publisher task that is gone shows up below as one that did not report.
        let _ = order_tx.send(order).await;
        replies.push(answer);
    }
    let report_deadline = start + args.duration + ACK_WAIT + REPORT_GRACE;
    let mut published = PublisherStep::default();
    let mut closed_publishers = 0;
    for answer in replies {
        let step = match tokio::time::timeout_at(report_deadline, answer).await {
            Ok(Ok(step)) => step,
            _ => PublisherStep {
                closed: Some("the publisher did not report its step".to_owned()),
                ..PublisherStep::default()
            },
        };
        closed_publishers += u64::from(step.closed.is_some());
        published.add(step);
    }
    let publish_seconds = start
        .elapsed()
        .as_secs_f64()
        .min(args.duration.as_secs_f64());
    let publishing_done = Instant::now();

    // Drain: until every expected delivery is in, the count stops moving, or time is up.
    let expected = published.expected_deliveries;
    let mut received = stats.received();
    let mut last_change = Instant::now();
    while received < expected
        && publishing_done.elapsed() < args.drain
        && last_change.elapsed() < DRAIN_SETTLE
    {
        tokio::time::sleep(DRAIN_POLL).await;
        let now = stats.received();
        if now != received {
            received = now;
            last_change = Instant::now();
        }
    }
    let drain_seconds = publishing_done.elapsed().as_secs_f64();
    let counts = stats.take();
    let cpu_after = read_probe(probe, ServerProbe::cpu_seconds);
    let rss = read_probe(probe, ServerProbe::rss_kib);
    let (closed_subscribers, first_close) = stats.closed();
    let resumed_subscribers = stats.take_resumed();

    let delivery_seconds = publish_seconds.max((last_change - start).as_secs_f64());
    let latency = (counts.received > 0).then_some(&counts.latency);
    let quantile = |q: f64| latency.map(|h| h.value_at_quantile(q));
    let server_cpu = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| round3(after - before));
    let all_deliveries = counts.received + counts.server_events;
    let acks = (published.acked > 0).then_some(&published.ack_latency);
    let ack_quantile = |q: f64| acks.map(|h| h.value_at_quantile(q));
    StepReport {
        phase: "step",
        step: 0,
        rate: match rate {
            Rate::PerSecond(r) if r.fract() == 0.0 && r < 1e15 => serde_json::json!(r as u64),
            Rate::PerSecond(r) => serde_json::json!(r),
            Rate::Max => serde_json::json!("max"),
        },
        seconds: round3(publish_seconds),
        publishes: published.sent,
        publishes_per_sec: round1(per_second(published.acked, publish_seconds)),
        acks: published.acked,
        duplicate_acks: published.duplicates,
        publish_errors: published.errors,
        publish_error_codes: published.error_codes,
        unacked: published.unacked,
        deliveries_per_sec: round1(per_second(counts.received, delivery_seconds)),
        expected_deliveries: expected,
        received_deliveries: counts.received,
        lost_deliveries: expected.saturating_sub(counts.received),
        extra_deliveries: counts.received.saturating_sub(expected),
        server_events: counts.server_events,
        unexpected_deliveries: counts.misrouted,
        order_violations: counts.order_violations,
        unreadable_frames: counts.unreadable + published.unreadable,
        closed_connections: closed_subscribers + closed_publishers,
        resumed_connections: resumed_subscribers,
        drain_seconds: round3(drain_seconds),
        latency_p50_micros: quantile(0.5),
        latency_p99_micros: quantile(0.99),
        latency_p999_micros: quantile(0.999),
        latency_max_micros: latency.map(|h| h.max()),
        ack_p50_micros: ack_quantile(0.5),
        ack_p99_micros: ack_quantile(0.99),
        server_cpu_seconds: server_cpu,
        server_rss_kib: rss,
        cpu_micros_per_delivery: server_cpu
            .filter(|_| all_deliveries > 0)
            .map(|cpu| round3(cpu * 1e6 / all_deliveries as f64)),
        kib_per_connection: None,
        first_error: published.first_error,
        first_close: published.closed.or(first_close),
    }
}

/// Reads one figure from the server, or `None` (with a warning) when it cannot.
fn read_probe<V>(
    probe: Option<&ServerProbe>,
    read: impl Fn(&ServerProbe) -> anyhow::Result<V>,
) -> Option<V> {
    match read(probe?) {
        Ok(value) => Some(value),
        Err(e) => {
            eprintln!("actionhub-loadgen: warning: {e:#}");
            None
        }
    }
}

/// Prints one JSON line and flushes it, so a reader sees each step as it ends.
fn emit(line: &impl Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, line)?;
    writeln!(stdout)?;
    stdout.flush().context("writing to stdout")
}

/// The size of one published event as this run frames it.
fn sample_event_bytes(customers: &Customers, order_stamps: bool) -> usize {
    let mut cycle = EventCycle::new(0, 1, customers.len(), Uuid::new_v4());
    if order_stamps {
        cycle = cycle.with_order_stamps(0);
    }
    let (_, event) = cycle.next_event(customers);
    serde_json::to_vec(&event).map_or(0, |v| v.len())
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
