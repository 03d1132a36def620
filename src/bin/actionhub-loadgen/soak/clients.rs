//! The soak's connections: subscribers that follow one customer and resume with `since`
//! after every drop, and publishers that retry what was in flight when the hub died.
//!
//! Both reconnect on their own, with a short backoff, for at most `--reconnect-timeout`
//! from the first failed attempt; past that they give up and count as a failure.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use uuid::Uuid;

use super::ledger::{Faults, Ledger};
use crate::connect;
use crate::hub::{Hub, HubDecoder, Resume};
use crate::target::{Decoder, Delivery, Incoming, Interest, Position, Target, Ws};
use crate::workload::{now_micros, CustomerIndex, Customers, EventCycle, LifecycleEvent};

/// Latency histogram shards; subscribers pick one by index, so the two cores rarely meet.
const SHARDS: usize = 16;

/// Latencies above this (60 s) are recorded as 60 s.
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// The first pause before a reconnect attempt; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// How long a polite close may take before the socket is simply dropped.
const CLOSE_WAIT: Duration = Duration::from_millis(200);

/// Longest a write to the hub may take before the connection counts as lost.
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// Failures printed to stderr as they happen (the counts keep going after that).
const FAILURES_PRINTED: u64 = 20;

/// `resumed` of a subscriber that gave up: it counts as done for every disturbance.
pub(crate) const GAVE_UP: u64 = u64::MAX;

/// What the soak counts. Those that are failures make the run fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// Deliveries of generated events (the ones loss is checked on).
    Deliveries,
    /// Deliveries of events the hub made itself (`session:started`).
    ServerEvents,
    Published,
    Acks,
    DuplicateAcks,
    /// Publishes sent again, with the same eventId, after their connection died.
    Republished,
    /// Subscriptions resumed with `since`.
    Resumes,
    /// Connection attempts that failed and were retried.
    Retries,
    Storms,
    Restarts,
    Lost,
    OrderViolations,
    Unexpected,
    NotRecovered,
    EpochChanges,
    PublishErrors,
    AckOrder,
    GaveUp,
    Unreadable,
    SubscriberErrors,
    /// Storms and restarts after which not every subscriber was back in time.
    IncompleteDisturbances,
}

impl Count {
    pub(crate) const ALL: [Count; 21] = [
        Count::Deliveries,
        Count::ServerEvents,
        Count::Published,
        Count::Acks,
        Count::DuplicateAcks,
        Count::Republished,
        Count::Resumes,
        Count::Retries,
        Count::Storms,
        Count::Restarts,
        Count::Lost,
        Count::OrderViolations,
        Count::Unexpected,
        Count::NotRecovered,
        Count::EpochChanges,
        Count::PublishErrors,
        Count::AckOrder,
        Count::GaveUp,
        Count::Unreadable,
        Count::SubscriberErrors,
        Count::IncompleteDisturbances,
    ];

    /// The count's name in the JSON lines.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Count::Deliveries => "deliveries",
            Count::ServerEvents => "serverEvents",
            Count::Published => "published",
            Count::Acks => "acks",
            Count::DuplicateAcks => "duplicateAcks",
            Count::Republished => "republished",
            Count::Resumes => "resumes",
            Count::Retries => "retries",
            Count::Storms => "storms",
            Count::Restarts => "restarts",
            Count::Lost => "lost",
            Count::OrderViolations => "orderViolations",
            Count::Unexpected => "unexpected",
            Count::NotRecovered => "notRecovered",
            Count::EpochChanges => "epochChanges",
            Count::PublishErrors => "publishErrors",
            Count::AckOrder => "ackOrderViolations",
            Count::GaveUp => "gaveUp",
            Count::Unreadable => "unreadableFrames",
            Count::SubscriberErrors => "subscriberErrors",
            Count::IncompleteDisturbances => "incompleteDisturbances",
        }
    }

    pub(crate) fn is_failure(self) -> bool {
        matches!(
            self,
            Count::Lost
                | Count::OrderViolations
                | Count::Unexpected
                | Count::NotRecovered
                | Count::EpochChanges
                | Count::PublishErrors
                | Count::AckOrder
                | Count::GaveUp
                | Count::Unreadable
                | Count::SubscriberErrors
                | Count::IncompleteDisturbances
        )
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Every [`Count`], shared by all tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters([AtomicU64; Count::ALL.len()]);

impl Counters {
    pub(crate) fn add(&self, count: Count, n: u64) {
        if n > 0 {
            self.0[count.slot()].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, count: Count) -> u64 {
        self.0[count.slot()].load(Ordering::Relaxed)
    }

    pub(crate) fn failures(&self) -> u64 {
        Count::ALL
            .iter()
            .filter(|c| c.is_failure())
            .map(|&c| self.get(c))
            .sum()
    }

    fn add_faults(&self, faults: Faults) {
        self.add(Count::Lost, faults.lost);
        self.add(Count::Unexpected, faults.unexpected);
        self.add(Count::AckOrder, faults.ack_order);
    }
}

/// The soak's settings the connection tasks need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_timeout: Duration,
    pub(crate) window: usize,
    /// Publishes per second of one publisher.
    pub(crate) rate_per_publisher: f64,
    /// Debug: the Nth generated delivery (counted over all subscribers, from 1) is
    /// ignored, as if the hub had skipped it.
    pub(crate) drop_delivery: Option<u64>,
    /// Debug: the Nth generated delivery is handled twice, as if the hub had sent it twice.
    pub(crate) repeat_delivery: Option<u64>,
}

/// What every connection task shares with the others and with the schedule.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) hub: Hub,
    pub(crate) customers: Arc<Customers>,
    pub(crate) addr: SocketAddr,
    pub(crate) settings: ClientSettings,
    /// One ledger per customer.
    pub(crate) ledgers: Vec<Mutex<Ledger>>,
    pub(crate) counters: Counters,
    /// Publish-to-deliver latency since the reporter last took it.
    pub(crate) latency: Vec<Mutex<Histogram<u64>>>,
    /// The current disturbance (storm or restart), numbered from 1.
    pub(crate) disturbance: AtomicU64,
    /// Per subscriber: 1 + the disturbance it last resumed after (0: not yet
    /// subscribed), or [`GAVE_UP`].
    pub(crate) resumed: Vec<AtomicU64>,
    /// Publishes sent and neither acknowledged nor refused yet, over all publishers.
    pub(crate) in_flight: AtomicU64,
    /// Bounds the connections being opened at once (a storm opens every one).
    dials: Semaphore,
    /// Generated deliveries so far, numbered only when a debug fault is asked for.
    delivery_number: AtomicU64,
    failures_noted: AtomicU64,
    pub(crate) first_failure: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn new(
        hub: Hub,
        customers: Arc<Customers>,
        addr: SocketAddr,
        subscribers: usize,
        settings: ClientSettings,
        connect_concurrency: usize,
    ) -> Self {
        let followers = |c: usize| {
            subscribers / customers.len() + usize::from(c < subscribers % customers.len())
        };
        Shared {
            ledgers: (0..customers.len())
                .map(|c| Mutex::new(Ledger::new(followers(c))))
                .collect(),
            hub,
            addr,
            settings,
            counters: Counters::default(),
            latency: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
            disturbance: AtomicU64::new(0),
            resumed: (0..subscribers).map(|_| AtomicU64::new(0)).collect(),
            in_flight: AtomicU64::new(0),
            dials: Semaphore::new(connect_concurrency),
            delivery_number: AtomicU64::new(0),
            failures_noted: AtomicU64::new(0),
            first_failure: Mutex::new(None),
            customers,
        }
    }

    /// Keeps the first failure's description and prints the first few as they happen.
    pub(crate) fn note(&self, what: impl FnOnce() -> String) {
        let n = self.failures_noted.fetch_add(1, Ordering::Relaxed);
        if n >= FAILURES_PRINTED {
            return;
        }
        let what = what();
        eprintln!("actionhub-loadgen soak: failure: {what}");
        self.first_failure.lock().get_or_insert(what);
    }

    /// Every latency recorded since the last call, and starts afresh.
    pub(crate) fn take_latency(&self) -> Histogram<u64> {
        let mut total = new_histogram();
        for shard in &self.latency {
            let mut shard = shard.lock();
            // Same bounds on both sides, so adding cannot fail.
            let _ = total.add(&*shard);
            shard.reset();
        }
        total
    }

    fn add_faults(&self, who: impl Fn() -> String, faults: Faults) {
        if faults.any() {
            self.counters.add_faults(faults);
            self.note(|| format!("{}: {faults:?}", who()));
        }
    }

    /// Opens one WebSocket and `connect`s it, holding a dial slot meanwhile; answers the
    /// hub's epoch. Bounded by the connect timeout (the wait for a slot is not).
    async fn open(&self) -> anyhow::Result<(Ws, String)> {
        let _slot = self.dials.acquire().await?;
        let opening = async {
            let mut ws =
                connect::dial(&self.hub, self.addr, None, connect::SMALL_READ_BUFFER).await?;
            let epoch = self.hub.connect(&mut ws).await?;
            Ok((ws, epoch))
        };
        tokio::time::timeout(self.settings.connect_timeout, opening)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within the connect timeout"))?
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).expect("static histogram bounds are valid")
}

/// Pauses between reconnect attempts: short at first, doubling, and over once
/// `--reconnect-timeout` has passed since the first failure.
#[derive(Debug)]
struct Backoff {
    first_failure: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            first_failure: None,
            delay: BACKOFF_FIRST,
        }
    }

    /// Waits before the next attempt; `false` when the time for attempts is over.
    async fn pause(&mut self, limit: Duration) -> bool {
        let first = *self.first_failure.get_or_insert_with(Instant::now);
        if first.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
        true
    }

    fn reset(&mut self) {
        *self = Backoff::new();
    }
}

/// One subscriber: follows its customer until `stop`, dropping and resuming on every
/// storm, and resuming after every hub restart.
pub(crate) async fn subscriber(
    shared: Arc<Shared>,
    index: usize,
    mut storms: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let customer = shared.customers.of_subscriber(index);
    let follower = index / shared.customers.len();
    let who = || format!("subscriber {index} (customer {customer})");
    let mut decoder = shared.hub.decoder();
    let mut position: Option<Position> = None;
    let mut incoming = Vec::new();
    let mut backoff = Backoff::new();
    let mut pause_first = false;
    'connection: loop {
        if *stop.borrow() {
            return;
        }
        if pause_first && !backoff.pause(shared.settings.reconnect_timeout).await {
            shared.counters.add(Count::GaveUp, 1);
            shared.note(|| format!("{}: could not reconnect", who()));
            shared.resumed[index].store(GAVE_UP, Ordering::SeqCst);
            let faults = shared.ledgers[customer as usize].lock().abandon(follower);
            shared.counters.add_faults(faults);
            return;
        }
        pause_first = true;
        let disturbance = shared.disturbance.load(Ordering::SeqCst);
        let mut ws = match subscribe(&shared, customer, &mut position, &who).await {
            Ok(ws) => ws,
            Err(_) => {
                shared.counters.add(Count::Retries, 1);
                continue;
            }
        };
        backoff.reset();
        shared.resumed[index].store(disturbance + 1, Ordering::SeqCst);
        let here = position.as_mut().expect("a subscription sets the position");
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    close(ws).await;
                    return;
                }
                storm = storms.changed() => {
                    close(ws).await;
                    if storm.is_err() {
                        return;
                    }
                    // Back at once: a storm is every subscriber reconnecting together.
                    pause_first = false;
                    continue 'connection;
                }
                read = ws.next() => match read {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => continue 'connection,
                    Some(Ok(message)) => on_message(
                        &shared, customer, follower, &who, &mut decoder, &message, here,
                        &mut incoming,
                    ),
                },
            }
        }
    }
}

/// Opens a subscription to `customer`: a fresh one the first time, then resumes after
/// `position` with `since` + `epoch`, counting a resume the hub could not recover.
async fn subscribe(
    shared: &Shared,
    customer: CustomerIndex,
    position: &mut Option<Position>,
    who: &impl Fn() -> String,
) -> anyhow::Result<Ws> {
    let (mut ws, epoch) = shared.open().await?;
    let interest = Interest::Customer(customer);
    let subscribing = async {
        match position {
            None => {
                let subscribed = shared.hub.subscribe(&mut ws, interest, None).await?;
                *position = Some(Position {
                    seq: subscribed.seq,
                    epoch,
                });
            }
            Some(position) => {
                if position.epoch != epoch {
                    shared.counters.add(Count::EpochChanges, 1);
                    shared.note(|| format!("{}: epoch {} became {epoch}", who(), position.epoch));
                }
                let resume = Resume {
                    since: position.seq,
                    epoch: &position.epoch,
                };
                let subscribed = shared
                    .hub
                    .subscribe(&mut ws, interest, Some(resume))
                    .await?;
                shared.counters.add(Count::Resumes, 1);
                if subscribed.recovered != Some(true) {
                    shared.counters.add(Count::NotRecovered, 1);
                    shared.note(|| {
                        format!(
                            "{}: resume after seq {} answered recovered {:?}",
                            who(),
                            position.seq,
                            subscribed.recovered
                        )
                    });
                    // Go on from where the hub puts the subscription.
                    position.epoch = epoch;
                    position.seq = position.seq.max(subscribed.seq);
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(shared.settings.connect_timeout, subscribing)
        .await
        .map_err(|_| anyhow::anyhow!("no answer to subscribe within the connect timeout"))??;
    Ok(ws)
}

/// Closes politely if that is quick, else just drops the socket.
async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(None)).await;
}

/// What a debug fault does to one generated delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handling {
    Normal,
    Drop,
    Repeat,
}

#[allow(clippy::too_many_arguments)]
fn on_message(
    shared: &Shared,
    customer: CustomerIndex,
    follower: usize,
    who: &impl Fn() -> String,
    decoder: &mut HubDecoder,
    message: &Message,
    position: &mut Position,
    incoming: &mut Vec<Incoming>,
) {
    incoming.clear();
    if decoder.decode(message, incoming).is_err() {
        shared.counters.add(Count::Unreadable, 1);
        shared.note(|| format!("{}: unreadable frame {message:?}", who()));
        return;
    }
    for item in incoming.drain(..) {
        match item {
            Incoming::Delivery(delivery) => {
                let handling = debug_handling(shared, &delivery);
                let repeats = if handling == Handling::Repeat { 2 } else { 1 };
                for _ in 0..repeats {
                    on_delivery(
                        shared,
                        customer,
                        follower,
                        who,
                        &delivery,
                        position,
                        handling == Handling::Drop,
                    );
                }
            }
            Incoming::Refused { code, message, .. } => {
                shared.counters.add(Count::SubscriberErrors, 1);
                shared.note(|| format!("{}: the hub sent an error: {code}: {message}", who()));
            }
            _ => {}
        }
    }
}

fn debug_handling(shared: &Shared, delivery: &Delivery) -> Handling {
    let settings = &shared.settings;
    if delivery.sent_at_micros.is_none()
        || (settings.drop_delivery.is_none() && settings.repeat_delivery.is_none())
    {
        return Handling::Normal;
    }
    let n = Some(shared.delivery_number.fetch_add(1, Ordering::Relaxed) + 1);
    if n == settings.drop_delivery {
        Handling::Drop
    } else if n == settings.repeat_delivery {
        Handling::Repeat
    } else {
        Handling::Normal
    }
}

/// Checks one delivery: its customer, that its seq rises, and (for a generated event)
/// that it is the next acknowledged one. `dropped`: a debug fault hides it from the
/// ledger while the seq still moves on, as if the hub had skipped it.
fn on_delivery(
    shared: &Shared,
    customer: CustomerIndex,
    follower: usize,
    who: &impl Fn() -> String,
    delivery: &Delivery,
    position: &mut Position,
    dropped: bool,
) {
    if delivery.customer != Some(customer) {
        shared.counters.add(Count::Unexpected, 1);
        shared.note(|| format!("{}: delivery of another customer {delivery:?}", who()));
        return;
    }
    let Some(seq) = delivery.seq else {
        shared.counters.add(Count::Unreadable, 1);
        shared.note(|| format!("{}: delivery without seq", who()));
        return;
    };
    if seq <= position.seq {
        shared.counters.add(Count::OrderViolations, 1);
        shared.note(|| format!("{}: seq {seq} after seq {}", who(), position.seq));
        return;
    }
    position.seq = seq;
    let Some(sent) = delivery.sent_at_micros else {
        shared.counters.add(Count::ServerEvents, 1);
        return;
    };
    shared.counters.add(Count::Deliveries, 1);
    shared.latency[follower.wrapping_add(customer as usize) % SHARDS]
        .lock()
        .saturating_record(now_micros().saturating_sub(sent).max(1));
    if dropped {
        return;
    }
    let faults = shared.ledgers[customer as usize].lock().seen(follower, seq);
    shared.add_faults(|| format!("{} at seq {seq}", who()), faults);
}

/// A publish sent and not yet answered.
#[derive(Debug)]
struct InFlight {
    /// The publish id on the current connection.
    id: u64,
    customer: CustomerIndex,
    /// Kept whole, so it can be sent again with the same eventId.
    event: LifecycleEvent,
}

/// One publisher: publishes its own customers' events at its share of the rate until
/// `stop`, then waits for what is still in flight. After a lost connection it reconnects
/// and first sends again, in order and with the same eventIds, everything unanswered.
pub(crate) async fn publisher(
    shared: Arc<Shared>,
    index: usize,
    publishers: usize,
    map_id: Uuid,
    mut stop: watch::Receiver<bool>,
) {
    let settings = shared.settings;
    let mut cycle = EventCycle::owning(index, publishers, shared.customers.len(), map_id);
    let mut events = 0u64;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut next_id = 1u64;
    let mut decoder = shared.hub.decoder();
    let mut incoming = Vec::new();
    let mut backoff = Backoff::new();
    let mut pause_first = false;
    let mut stopping = false;
    'connection: loop {
        if stopping && in_flight.is_empty() {
            return;
        }
        if pause_first && !backoff.pause(settings.reconnect_timeout).await {
            shared.counters.add(Count::GaveUp, 1);
            shared.note(|| format!("publisher {index}: could not reconnect"));
            return;
        }
        pause_first = true;
        let ws = match shared.open().await {
            Ok((ws, _epoch)) => ws,
            Err(_) => {
                shared.counters.add(Count::Retries, 1);
                continue;
            }
        };
        backoff.reset();
        let (mut sink, mut stream) = ws.split();
        for pending in in_flight.iter_mut() {
            pending.id = next_id;
            next_id += 1;
            if send(&shared.hub, &mut sink, pending).await.is_err() {
                continue 'connection;
            }
        }
        shared
            .counters
            .add(Count::Republished, in_flight.len() as u64);
        if !in_flight.is_empty() && flush(&mut sink).await.is_err() {
            continue 'connection;
        }
        // Pacing starts afresh on each connection: an outage is not made up in a burst.
        let start = Instant::now();
        let mut sent_here = 0u64;
        loop {
            let room = settings.window.saturating_sub(in_flight.len()) as u64;
            let owed = if stopping {
                0
            } else {
                ((start.elapsed().as_secs_f64() * settings.rate_per_publisher) as u64 + 1)
                    .saturating_sub(sent_here)
            };
            let batch = room.min(owed);
            for _ in 0..batch {
                let (customer, mut event) = cycle.next_event(&shared.customers);
                events += 1;
                event.event_id = Some(format!("soak-{index}-{events}"));
                let pending = InFlight {
                    id: next_id,
                    customer,
                    event,
                };
                next_id += 1;
                sent_here += 1;
                shared.counters.add(Count::Published, 1);
                shared.in_flight.fetch_add(1, Ordering::Relaxed);
                in_flight.push_back(pending);
                let pending = in_flight.back().expect("just pushed");
                if send(&shared.hub, &mut sink, pending).await.is_err() {
                    continue 'connection;
                }
            }
            if batch > 0 && flush(&mut sink).await.is_err() {
                continue 'connection;
            }
            if stopping && in_flight.is_empty() {
                let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(None))).await;
                return;
            }
            let wake = if stopping || in_flight.len() >= settings.window {
                None
            } else {
                Duration::try_from_secs_f64(sent_here as f64 / settings.rate_per_publisher)
                    .ok()
                    .map(|due| start + due)
            };
            tokio::select! {
                _ = stop.changed(), if !stopping => stopping = true,
                read = stream.next() => match read {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => continue 'connection,
                    Some(Ok(message)) => on_publisher_message(
                        &shared, index, &mut decoder, &message, &mut in_flight, &mut incoming,
                    ),
                },
                _ = sleep_until(wake) => {}
            }
        }
    }
}

/// Sleeps until `wake`, or forever when there is nothing to wake for.
async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(wake) => tokio::time::sleep_until(wake).await,
        None => std::future::pending().await,
    }
}

async fn send<S>(hub: &Hub, sink: &mut S, pending: &InFlight) -> Result<(), ()>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let frame = hub
        .publish_frame(pending.id, &pending.event)
        .map_err(drop)?;
    match tokio::time::timeout(WRITE_WAIT, sink.feed(frame)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn flush<S>(sink: &mut S) -> Result<(), ()>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    match tokio::time::timeout(WRITE_WAIT, sink.flush()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

fn on_publisher_message(
    shared: &Shared,
    index: usize,
    decoder: &mut HubDecoder,
    message: &Message,
    in_flight: &mut VecDeque<InFlight>,
    incoming: &mut Vec<Incoming>,
) {
    incoming.clear();
    if decoder.decode(message, incoming).is_err() {
        shared.counters.add(Count::Unreadable, 1);
        shared.note(|| format!("publisher {index}: unreadable frame {message:?}"));
        return;
    }
    for item in incoming.drain(..) {
        let (id, outcome) = match item {
            Incoming::Ack { id, duplicate, seq } => (id, Ok((duplicate, seq))),
            Incoming::Refused {
                id: Some(id),
                code,
                message,
            } => (id, Err((code, message))),
            Incoming::Refused {
                id: None,
                code,
                message,
            } => {
                shared.counters.add(Count::PublishErrors, 1);
                shared.note(|| format!("publisher {index}: error {code}: {message}"));
                continue;
            }
            _ => continue,
        };
        // Replies come in request order, so this is nearly always the front.
        let Some(at) = in_flight.iter().position(|p| p.id == id) else {
            continue;
        };
        let pending = in_flight.remove(at).expect("found just now");
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok((duplicate, Some(seq))) => {
                shared.counters.add(Count::Acks, 1);
                shared
                    .counters
                    .add(Count::DuplicateAcks, u64::from(duplicate));
                let faults = shared.ledgers[pending.customer as usize].lock().acked(seq);
                shared.add_faults(
                    || {
                        format!(
                            "publisher {index}: ack of seq {seq} (customer {})",
                            pending.customer
                        )
                    },
                    faults,
                );
            }
            Ok((_, None)) => {
                shared.counters.add(Count::Unreadable, 1);
                shared.note(|| format!("publisher {index}: `published` without seq"));
            }
            Err((code, message)) => {
                shared.counters.add(Count::PublishErrors, 1);
                shared.note(|| {
                    format!(
                        "publisher {index}: {} refused: {code}: {message}",
                        pending.event.event_id.as_deref().unwrap_or("?")
                    )
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_count_has_its_own_slot() {
        for (i, count) in Count::ALL.iter().enumerate() {
            assert_eq!(count.slot(), i, "{count:?}");
        }
    }
}
