//! Subscriber connections: read deliveries, check per-customer order, measure latency.
//!
//! Counts go into a few shared shards (each subscriber always uses the same one) rather
//! than one counter every task fights over, or one histogram per connection, which would
//! cost tens of KiB per connection at 10,000 subscribers.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::connect;
use crate::target::{Decoder, Delivery, Incoming, Interest, Position, Target, Ws};
use crate::workload::{now_micros, CustomerIndex};

/// Shards of [`DeliveryStats`]; a handful is enough to keep the two cores from meeting.
const SHARDS: usize = 16;

/// The close code of a subscriber the server found too slow (PROTOCOL.md: 4008, resume
/// with `since`).
const SLOW_CONSUMER: u16 = 4008;

/// How long coming back after such a close may take: the dial, `connect` and `subscribe`.
const RESUME_TIMEOUT: Duration = Duration::from_secs(10);

/// Latencies above this (60 s) are recorded as 60 s.
pub(crate) const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// An empty latency histogram, in microseconds up to [`MAX_LATENCY_MICROS`]: every one the
/// generator keeps has these bounds, so any two add up.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).expect("static histogram bounds are valid")
}

/// What subscribers saw since the counts were last taken.
#[derive(Debug)]
pub(crate) struct DeliveryCounts {
    /// Deliveries of events this generator published (the ones loss is counted on).
    pub(crate) received: u64,
    /// Deliveries of events the server made itself (e.g. `session:started`).
    pub(crate) server_events: u64,
    /// Deliveries a customer subscription did not ask for, or of unknown customers.
    pub(crate) misrouted: u64,
    /// Deliveries whose seq did not exceed the last one of the same customer.
    pub(crate) order_violations: u64,
    /// Frames that could not be understood.
    pub(crate) unreadable: u64,
    /// Publish-to-deliver latency of `received`, in microseconds.
    pub(crate) latency: Histogram<u64>,
}

impl DeliveryCounts {
    fn new() -> Self {
        DeliveryCounts {
            received: 0,
            server_events: 0,
            misrouted: 0,
            order_violations: 0,
            unreadable: 0,
            latency: latency_histogram(),
        }
    }

    fn add(&mut self, other: &DeliveryCounts) {
        self.received += other.received;
        self.server_events += other.server_events;
        self.misrouted += other.misrouted;
        self.order_violations += other.order_violations;
        self.unreadable += other.unreadable;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
    }

    fn reset(&mut self) {
        self.received = 0;
        self.server_events = 0;
        self.misrouted = 0;
        self.order_violations = 0;
        self.unreadable = 0;
        self.latency.reset();
    }
}

/// Counts shared by every subscriber task and read by the step loop.
#[derive(Debug)]
pub(crate) struct DeliveryStats {
    shards: Vec<Mutex<DeliveryCounts>>,
    /// Subscriber connections that ended; never reset (a closed subscriber stays closed).
    closed: AtomicU64,
    /// Why the first one ended, for the report on stderr.
    first_close: Mutex<Option<String>>,
    /// Subscribers closed as too slow that came back with `since`, since last taken.
    resumed: AtomicU64,
}

impl DeliveryStats {
    pub(crate) fn new() -> Self {
        DeliveryStats {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(DeliveryCounts::new()))
                .collect(),
            closed: AtomicU64::new(0),
            first_close: Mutex::new(None),
            resumed: AtomicU64::new(0),
        }
    }

    /// Deliveries of generated events so far (cheap enough to poll while draining).
    pub(crate) fn received(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().received).sum()
    }

    /// Everything counted since the last call, and starts counting afresh.
    pub(crate) fn take(&self) -> DeliveryCounts {
        let mut total = DeliveryCounts::new();
        for shard in &self.shards {
            let mut shard = shard.lock();
            total.add(&shard);
            shard.reset();
        }
        total
    }

    /// Subscriber connections closed so far, and why the first one was.
    pub(crate) fn closed(&self) -> (u64, Option<String>) {
        (
            self.closed.load(Ordering::Relaxed),
            self.first_close.lock().clone(),
        )
    }

    /// Subscribers that came back after a slow-consumer close since the last call.
    pub(crate) fn take_resumed(&self) -> u64 {
        self.resumed.swap(0, Ordering::Relaxed)
    }

    fn record_close(&self, reason: String) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        self.first_close.lock().get_or_insert(reason);
    }
}

/// The last seq seen per customer (and per publisher, when events carry order stamps),
/// for the order check.
enum LastSeqs {
    /// A customer subscriber: only its customer's events are expected; one slot per
    /// publisher stream.
    One {
        customer: CustomerIndex,
        last: Vec<u64>,
    },
    /// A firehose subscriber: one slot per customer and publisher stream.
    All { streams: usize, last: Vec<u64> },
}

impl LastSeqs {
    /// `streams` is 1 when the server numbers events, else the number of publishers.
    fn new(interest: Interest, customers: usize, streams: usize) -> Self {
        let streams = streams.max(1);
        match interest {
            Interest::Customer(customer) => LastSeqs::One {
                customer,
                last: vec![0; streams],
            },
            Interest::Everything => LastSeqs::All {
                streams,
                last: vec![0; customers * streams],
            },
        }
    }

    /// The slot of `customer`'s events from `publisher`, or `None` when this subscription
    /// should not receive them.
    fn slot(&mut self, customer: CustomerIndex, publisher: Option<u32>) -> Option<&mut u64> {
        let stream = publisher.unwrap_or(0) as usize;
        match self {
            LastSeqs::One { customer: c, last } if *c == customer => last.get_mut(stream),
            LastSeqs::One { .. } => None,
            LastSeqs::All { streams, last } if stream < *streams => {
                last.get_mut(customer as usize * *streams + stream)
            }
            LastSeqs::All { .. } => None,
        }
    }
}

/// How a subscriber the server closed as too slow comes back: where it dials from and
/// to, and where its subscription stands (moved on with every event it receives).
pub(crate) struct Comeback {
    pub(crate) hub: SocketAddr,
    pub(crate) source: Option<IpAddr>,
    pub(crate) read_buffer: usize,
    pub(crate) from: Position,
}

impl Comeback {
    /// A new connection subscribed after the last event received.
    async fn resume<T: Target>(&self, target: &T, interest: Interest) -> anyhow::Result<Ws> {
        let resume = async {
            let mut ws = connect::dial(target, self.hub, self.source, self.read_buffer).await?;
            target
                .resume_subscriber(&mut ws, interest, &self.from)
                .await?;
            Ok(ws)
        };
        tokio::time::timeout(RESUME_TIMEOUT, resume)
            .await
            .context("resuming took too long")?
    }
}

/// Whether the server closed the connection for reading too slowly.
fn is_slow_consumer(frame: Option<&CloseFrame>) -> bool {
    frame.is_some_and(|frame| u16::from(frame.code) == SLOW_CONSUMER)
}

/// Reads one subscriber connection until it ends; the run never stops it (the process
/// exits when the ladder is done), so an end is always reported as a closed connection.
/// A subscriber closed as too slow comes back with `since` instead, as a client that
/// must lose nothing does, when `comeback` says where it stands (the server numbers its
/// history); what it missed meanwhile is replayed and counted, late.
/// `order_streams` is how many independently ordered streams each customer's events
/// come in: 1 when the server numbers them, the publisher count with order stamps.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<T: Target>(
    index: usize,
    mut ws: Ws,
    target: Arc<T>,
    interest: Interest,
    customers: usize,
    order_streams: usize,
    stats: Arc<DeliveryStats>,
    mut comeback: Option<Comeback>,
) {
    let shard = &stats.shards[index % SHARDS];
    let mut decoder = target.decoder();
    let mut last_seqs = LastSeqs::new(interest, customers, order_streams);
    let mut incoming = Vec::new();
    let mut replies = Vec::new();
    let reason = loop {
        let message = match ws.next().await {
            None => break "the connection ended".to_owned(),
            Some(Err(e)) => break format!("read error: {e}"),
            Some(Ok(Message::Close(frame))) => match &comeback {
                Some(back) if is_slow_consumer(frame.as_ref()) => {
                    match back.resume(&*target, interest).await {
                        Ok(resumed) => {
                            ws = resumed;
                            stats.resumed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => {
                            break format!("closed as too slow ({frame:?}), not resumed: {e:#}")
                        }
                    }
                }
                _ => break format!("closed by the server: {frame:?}"),
            },
            Some(Ok(message)) => message,
        };
        incoming.clear();
        let readable = decoder.decode(&message, &mut incoming).is_ok();
        let now = now_micros();
        {
            let mut counts = shard.lock();
            if !readable {
                counts.unreadable += 1;
            }
            for item in incoming.drain(..) {
                match item {
                    Incoming::Delivery(delivery) => {
                        if let (Some(back), Some(seq)) = (comeback.as_mut(), delivery.seq) {
                            back.from.seq = back.from.seq.max(seq);
                        }
                        count_delivery(&mut counts, &mut last_seqs, &delivery, now)
                    }
                    Incoming::Reply(reply) => replies.push(reply),
                    _ => {}
                }
            }
        }
        if !replies.is_empty() {
            if let Err(e) = send_all(&mut ws, &mut replies).await {
                break format!("write error: {e}");
            }
        }
    };
    stats.record_close(format!("subscriber {index}: {reason}"));
}

/// Sends the replies the protocol owes the server, in one flush.
async fn send_all(ws: &mut Ws, replies: &mut Vec<Message>) -> Result<(), WsError> {
    for reply in replies.drain(..) {
        ws.feed(reply).await?;
    }
    ws.flush().await
}

fn count_delivery(
    counts: &mut DeliveryCounts,
    last_seqs: &mut LastSeqs,
    delivery: &Delivery,
    now_micros: u64,
) {
    match delivery.sent_at_micros {
        Some(sent) => {
            counts.received += 1;
            counts
                .latency
                .saturating_record(now_micros.saturating_sub(sent).max(1));
        }
        None => counts.server_events += 1,
    }
    let Some(slot) = delivery
        .customer
        .and_then(|c| last_seqs.slot(c, delivery.publisher))
    else {
        counts.misrouted += 1;
        return;
    };
    if let Some(seq) = delivery.seq {
        if seq <= *slot {
            counts.order_violations += 1;
        }
        *slot = (*slot).max(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(customer: CustomerIndex, seq: u64) -> Delivery {
        Delivery {
            customer: Some(customer),
            seq: Some(seq),
            publisher: None,
            sent_at_micros: Some(1),
        }
    }

    #[test]
    fn order_is_checked_per_customer() {
        let mut counts = DeliveryCounts::new();
        let mut seqs = LastSeqs::new(Interest::Everything, 2, 1);
        for (customer, seq) in [(0, 5), (1, 3), (0, 6), (1, 4), (0, 6), (1, 2)] {
            count_delivery(&mut counts, &mut seqs, &delivery(customer, seq), 10);
        }
        assert_eq!(counts.received, 6);
        assert_eq!(counts.order_violations, 2);
        assert_eq!(counts.misrouted, 0);
    }

    #[test]
    fn with_order_stamps_order_is_checked_per_customer_and_publisher() {
        let mut counts = DeliveryCounts::new();
        let mut seqs = LastSeqs::new(Interest::Customer(0), 1, 2);
        let stamped = |publisher, seq| Delivery {
            publisher: Some(publisher),
            ..delivery(0, seq)
        };
        // Two publishers' counters interleave freely; each must only rise.
        for (publisher, seq) in [(0, 1), (1, 1), (1, 2), (0, 2), (0, 2), (1, 3)] {
            count_delivery(&mut counts, &mut seqs, &stamped(publisher, seq), 10);
        }
        assert_eq!((counts.order_violations, counts.misrouted), (1, 0));
        count_delivery(&mut counts, &mut seqs, &stamped(2, 1), 10);
        assert_eq!(counts.misrouted, 1, "no such publisher");
    }

    #[test]
    fn another_customers_event_is_misrouted() {
        let mut counts = DeliveryCounts::new();
        let mut seqs = LastSeqs::new(Interest::Customer(1), 3, 1);
        count_delivery(&mut counts, &mut seqs, &delivery(0, 1), 10);
        count_delivery(&mut counts, &mut seqs, &delivery(1, 2), 10);
        assert_eq!((counts.received, counts.misrouted), (2, 1));
    }

    #[test]
    fn taking_counts_resets_them() {
        let stats = DeliveryStats::new();
        stats.shards[3].lock().received = 4;
        stats.shards[5].lock().received = 1;
        assert_eq!(stats.received(), 5);
        assert_eq!(stats.take().received, 5);
        assert_eq!(stats.received(), 0);
    }
}
