//! Publisher connections: pipelined publishes at a paced rate (or as fast as the window
//! allows), with acknowledgements and refusals counted per step.
//!
//! A protocol without per-publish acknowledgements (NATS) is acknowledged by barriers: a
//! barrier frame goes out after every `ping_every` publishes (and whenever the window is
//! full or the step ends with publishes not yet covered by one), and its answer
//! acknowledges every publish sent before it.
//!
//! Each publisher is one task that owns its connection for the whole run and takes one
//! [`StepOrder`] at a time from the step loop, answering with a [`PublisherStep`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::subscriber::{latency_histogram, MAX_LATENCY_MICROS};
use crate::target::{Decoder, Incoming, Target, Ws};
use crate::workload::{CustomerIndex, Customers, EventCycle};

/// How long a publisher waits after its step for the acknowledgements still in flight.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(5);

/// The id of a publisher's first publish; later ones count up from it.
const FIRST_PUBLISH_ID: u64 = 1;

/// A publisher's bounds on what it has sent but not seen acknowledged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlightLimits {
    /// Most publishes in flight at once (`--window`).
    pub(crate) window: usize,
    /// Publishes between two barriers, for a target acknowledged by barriers
    /// (`--ping-every`).
    pub(crate) ping_every: usize,
}

/// One step for one publisher.
#[derive(Debug)]
pub(crate) struct StepOrder {
    /// This publisher's share of the step's rate, per second; `None` is as fast as acks allow.
    pub(crate) rate: Option<f64>,
    pub(crate) duration: Duration,
    pub(crate) reply: oneshot::Sender<PublisherStep>,
}

/// What one publisher did during one step.
#[derive(Debug)]
pub(crate) struct PublisherStep {
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    pub(crate) duplicates: u64,
    /// Publishes (or other frames) the server refused with an `error` frame.
    pub(crate) errors: u64,
    pub(crate) error_codes: BTreeMap<String, u64>,
    pub(crate) first_error: Option<String>,
    /// Sent, but neither acknowledged nor refused within [`ACK_WAIT`] after the step.
    pub(crate) unacked: u64,
    /// Deliveries the acknowledged publishes must cause.
    pub(crate) expected_deliveries: u64,
    /// Frames that could not be understood.
    pub(crate) unreadable: u64,
    /// Why the connection is gone, when it is.
    pub(crate) closed: Option<String>,
    /// Publish-to-acknowledgement latency of `acked`, in microseconds (for a target
    /// acknowledged by barriers: until the barrier's answer).
    pub(crate) ack_latency: Histogram<u64>,
}

impl Default for PublisherStep {
    fn default() -> Self {
        PublisherStep {
            sent: 0,
            acked: 0,
            duplicates: 0,
            errors: 0,
            error_codes: BTreeMap::new(),
            first_error: None,
            unacked: 0,
            expected_deliveries: 0,
            unreadable: 0,
            closed: None,
            ack_latency: latency_histogram(),
        }
    }
}

impl PublisherStep {
    /// Adds another publisher's step to this one.
    pub(crate) fn add(&mut self, other: PublisherStep) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.duplicates += other.duplicates;
        self.errors += other.errors;
        for (code, n) in other.error_codes {
            *self.error_codes.entry(code).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.unacked += other.unacked;
        self.expected_deliveries += other.expected_deliveries;
        self.unreadable += other.unreadable;
        if self.closed.is_none() {
            self.closed = other.closed;
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.ack_latency.add(&other.ack_latency);
    }

    /// Counts one acknowledged publish, sent at `sent`.
    fn acknowledged(&mut self, sent: Instant) {
        self.acked += 1;
        let micros = sent
            .elapsed()
            .as_micros()
            .clamp(1, MAX_LATENCY_MICROS.into()) as u64;
        self.ack_latency.saturating_record(micros);
    }
}

/// A publisher's state between frames: what is in flight and what the step counted.
struct Tally<D> {
    decoder: D,
    customers: Arc<Customers>,
    /// Publish id -> its customer and send time, for the publishes not yet acknowledged
    /// or refused.
    in_flight: HashMap<u64, (CustomerIndex, Instant)>,
    step: PublisherStep,
    incoming: Vec<Incoming>,
    /// Acknowledgement by barriers, for a target without per-publish acks.
    barriers: Option<Barriers>,
    /// Frames owed to the server (answers to its pings), sent after the read that asked.
    replies: Vec<Message>,
}

impl<D: Decoder> Tally<D> {
    /// Counts one read from the connection; `Err` says why the connection is gone.
    fn on_read(&mut self, read: Option<Result<Message, WsError>>) -> Result<(), String> {
        let message = match read {
            None => return Err("the connection ended".to_owned()),
            Some(Err(e)) => return Err(format!("read error: {e}")),
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed by the server: {frame:?}"))
            }
            Some(Ok(message)) => message,
        };
        self.incoming.clear();
        if self.decoder.decode(&message, &mut self.incoming).is_err() {
            self.step.unreadable += 1;
        }
        let mut incoming = std::mem::take(&mut self.incoming);
        for item in incoming.drain(..) {
            match item {
                Incoming::Ack { id, duplicate, .. } => {
                    // An ack for an id no longer in flight came after ACK_WAIT: ignored.
                    if let Some((customer, sent)) = self.in_flight.remove(&id) {
                        self.step.acknowledged(sent);
                        if duplicate {
                            self.step.duplicates += 1;
                        } else {
                            self.step.expected_deliveries += self.customers.fanout(customer);
                        }
                    }
                }
                Incoming::BarrierPassed => {
                    // Publishes of an earlier step that timed out are no longer in flight.
                    let answered = self
                        .barriers
                        .as_mut()
                        .and_then(|b| b.unanswered.pop_front());
                    if let Some(last) = answered {
                        let (customers, step) = (&self.customers, &mut self.step);
                        self.in_flight.retain(|&id, &mut (customer, sent)| {
                            let covered = id <= last;
                            if covered {
                                step.acknowledged(sent);
                                step.expected_deliveries += customers.fanout(customer);
                            }
                            !covered
                        });
                    }
                }
                Incoming::Reply(reply) => self.replies.push(reply),
                Incoming::Refused { id, code, message } => {
                    if let Some(id) = id {
                        self.in_flight.remove(&id);
                    }
                    self.step.errors += 1;
                    *self.step.error_codes.entry(code.clone()).or_default() += 1;
                    self.step
                        .first_error
                        .get_or_insert_with(|| format!("{code}: {message}"));
                }
                Incoming::Delivery(_) | Incoming::Other => {}
            }
        }
        self.incoming = incoming;
        Ok(())
    }
}

/// Barrier bookkeeping of one publisher (only for targets that have a barrier frame).
struct Barriers {
    frame: Message,
    /// Publishes between two barriers.
    every: u64,
    /// The id of the last publish a barrier was sent after (0: none yet).
    covered: u64,
    /// For each barrier sent and not yet answered, the id of the last publish before it.
    unanswered: VecDeque<u64>,
}

impl Barriers {
    /// Whether a barrier is due after publish `last_id` (`force`: whenever any publish is
    /// not yet covered by one).
    fn due(&self, last_id: u64, force: bool) -> bool {
        let uncovered = last_id.saturating_sub(self.covered);
        uncovered >= self.every || (force && uncovered > 0)
    }
}

/// Runs publisher `index` until the step loop drops its order channel.
pub(crate) async fn run<T: Target>(
    index: usize,
    target: Arc<T>,
    ws: Ws,
    mut cycle: EventCycle,
    customers: Arc<Customers>,
    limits: InFlightLimits,
    mut orders: mpsc::Receiver<StepOrder>,
) {
    let (mut sink, mut stream) = ws.split();
    let mut tally = Tally {
        decoder: target.decoder(),
        customers: Arc::clone(&customers),
        in_flight: HashMap::new(),
        step: PublisherStep::default(),
        incoming: Vec::new(),
        barriers: target.barrier_frame().map(|frame| Barriers {
            frame,
            every: limits.ping_every.max(1) as u64,
            covered: 0,
            unanswered: VecDeque::new(),
        }),
        replies: Vec::new(),
    };
    let window = limits.window;
    let mut next_id = FIRST_PUBLISH_ID;
    let mut closed: Option<String> = None;

    loop {
        // Between steps: keep reading (late acks, pings) until the next order.
        let order = tokio::select! {
            order = orders.recv() => match order {
                Some(order) => order,
                None => return,
            },
            read = stream.next(), if closed.is_none() => {
                let deadline = Instant::now() + ACK_WAIT;
                if let Err(reason) = read_and_answer(&mut tally, &mut sink, read, deadline).await {
                    closed = Some(reason);
                }
                continue;
            }
        };
        tally.step = PublisherStep::default();
        if closed.is_none() {
            let start = Instant::now();
            let end = start + order.duration;
            // A hub that stops reading must not hold the publisher (and the run) forever.
            let write_deadline = end + ACK_WAIT;
            'publishing: while Instant::now() < end {
                let room = window.saturating_sub(tally.in_flight.len()) as u64;
                let due = match order.rate {
                    Some(rate) => {
                        let owed = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
                        owed.saturating_sub(tally.step.sent)
                    }
                    None => u64::MAX,
                };
                let batch = room.min(due);
                for _ in 0..batch {
                    let (customer, event) = cycle.next_event(&customers);
                    let frame = match target.publish_frame(next_id, &event) {
                        Ok(frame) => frame,
                        Err(e) => {
                            closed = Some(format!("could not frame a publish: {e}"));
                            break 'publishing;
                        }
                    };
                    if let Err(reason) = write(sink.feed(frame), write_deadline).await {
                        closed = Some(reason);
                        break 'publishing;
                    }
                    tally.in_flight.insert(next_id, (customer, Instant::now()));
                    next_id += 1;
                    tally.step.sent += 1;
                    let last = next_id - 1;
                    let barrier =
                        barrier_if_due(&mut tally, &mut sink, last, false, write_deadline);
                    if let Err(reason) = barrier.await {
                        closed = Some(reason);
                        break 'publishing;
                    }
                }
                // A full window must hold a barrier, or no answer would ever free it.
                let window_full = tally.in_flight.len() >= window;
                let last = next_id - 1;
                let barrier =
                    barrier_if_due(&mut tally, &mut sink, last, window_full, write_deadline);
                if let Err(reason) = barrier.await {
                    closed = Some(reason);
                    break;
                }
                if batch > 0 {
                    if let Err(reason) = write(sink.flush(), write_deadline).await {
                        closed = Some(reason);
                        break;
                    }
                }
                // Sleep until the next publish is due (or the step ends); an ack wakes us
                // sooner, which matters when the window is what holds us back.
                let wake = match order.rate {
                    Some(rate) if !window_full => {
                        let next_due = Duration::try_from_secs_f64(tally.step.sent as f64 / rate)
                            .unwrap_or(order.duration);
                        (start + next_due).min(end)
                    }
                    _ => end,
                };
                tokio::select! {
                    read = stream.next() => {
                        let answered =
                            read_and_answer(&mut tally, &mut sink, read, write_deadline).await;
                        if let Err(reason) = answered {
                            closed = Some(reason);
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(wake) => {}
                }
            }
            // The step is over: collect what is still in flight, within ACK_WAIT, after a
            // last barrier over the publishes no barrier covers yet.
            let deadline = Instant::now() + ACK_WAIT;
            if closed.is_none() {
                let barrier = barrier_if_due(&mut tally, &mut sink, next_id - 1, true, deadline);
                let flushed = match barrier.await {
                    Ok(()) => write(sink.flush(), deadline).await,
                    Err(reason) => Err(reason),
                };
                if let Err(reason) = flushed {
                    closed = Some(reason);
                }
            }
            while closed.is_none() && !tally.in_flight.is_empty() {
                tokio::select! {
                    read = stream.next() => {
                        if let Err(reason) = read_and_answer(&mut tally, &mut sink, read, deadline).await {
                            closed = Some(reason);
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        tally.step.unacked = tally.in_flight.len() as u64;
        tally.in_flight.clear();
        tally.step.closed = closed
            .as_ref()
            .map(|reason| format!("publisher {index}: {reason}"));
        // The step loop may have given up waiting; then nobody needs the answer.
        let _ = order.reply.send(std::mem::take(&mut tally.step));
    }
}

/// Counts one read, then sends whatever it obliged the publisher to answer.
async fn read_and_answer<D: Decoder, S>(
    tally: &mut Tally<D>,
    sink: &mut S,
    read: Option<Result<Message, WsError>>,
    deadline: Instant,
) -> Result<(), String>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    tally.on_read(read)?;
    if tally.replies.is_empty() {
        return Ok(());
    }
    for reply in tally.replies.drain(..) {
        write(sink.feed(reply), deadline).await?;
    }
    write(sink.flush(), deadline).await
}

/// Sends a barrier after publish `last_id` when one is due (`force`: whenever any publish
/// is uncovered), for a target that acknowledges by barriers; otherwise does nothing.
async fn barrier_if_due<D: Decoder, S>(
    tally: &mut Tally<D>,
    sink: &mut S,
    last_id: u64,
    force: bool,
    deadline: Instant,
) -> Result<(), String>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let Some(barriers) = tally.barriers.as_mut().filter(|b| b.due(last_id, force)) else {
        return Ok(());
    };
    write(sink.feed(barriers.frame.clone()), deadline).await?;
    barriers.covered = last_id;
    barriers.unanswered.push_back(last_id);
    Ok(())
}

/// One write to the connection, within `deadline`; `Err` says why the connection is unusable.
async fn write(
    io: impl std::future::Future<Output = Result<(), WsError>>,
    deadline: Instant,
) -> Result<(), String> {
    match tokio::time::timeout_at(deadline, io).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write error: {e}")),
        Err(_) => Err("writes stalled: the server stopped reading".to_owned()),
    }
}
