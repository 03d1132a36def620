//! The hub: the sequencer, the one ordering authority, and the pipeline behind it.
//!
//! [`Hub`] is the facade the edges and the store call: publish, administer, merge,
//! subscribe with a snapshot, sweep, snapshot, read. Behind it:
//!
//! - [`sequencer`]: a publish takes the sequencer lock, checks each event against state,
//!   assigns the next seq, applies the event to state, appends it to the retained history
//!   and to the pipeline's queue, and releases the lock.
//! - [`pipeline`]: the thread that logs each pass, fans it out, and only then completes
//!   the publishes, so an acknowledged event is logged, queued to every matching live
//!   subscription, and visible to every later read.
//! - [`state`] (customers, sessions, profiles, actions), [`retention`] (the replayable
//!   history) and [`fanout`] (the subscription index).
//!
//! The sequencer never waits on a subscriber: delivery only queues into bounded outboxes,
//! and the writes after it never wait for a socket (see [`crate::edge::outbox`]).
//!
//! What the hub commits is a function of its state, the inputs in their order and the time
//! each is decided at: every input has an `_at` form that takes that time (`publish_at`,
//! `submit_at`, `administer_at`, `merge_visitors_at`, and `sweep_at`, the tick that ends
//! idle sessions and ages state out); the plain forms read the clock. So two hubs fed the
//! same inputs at the same times commit the same events and reach the same state, and a
//! hub rebuilt from its log reaches it too.
//!
//! Lock order: sequencer, then fan-out index, then retention; an outbox's lock is a leaf
//! (taken last, nothing taken under it). Nobody takes them in another order, and none is
//! held across an `.await`. The fields are private so that the locks stay an inside
//! matter: callers get references and copies, never a guard.

pub mod fanout;
pub mod inputs;
pub mod pipeline;
pub mod retention;
pub mod segments;
mod sequencer;
pub mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::clock::{now_millis, Millis};
use crate::config::Config;
use crate::error::{ErrorCode, HubError};
use crate::hub::fanout::{Fanout, FanoutStats, NewSub, Start};
use crate::hub::inputs::{Applied, Input, OrderStatus, Outcome, Proposal, SegmentChange};
use crate::hub::retention::{Record, Retention};
use crate::hub::segments::{Segment, MAX_SEGMENTS};
use crate::hub::sequencer::{profile_full, redact, Dedupe, Redactions, Sequencer, Txn};
use crate::hub::state::{AdminOp, CompanyChange, HubState, SnapshotMaps};
use crate::ids::{ConnId, SegmentId, Seq, VisitorId};
use crate::ingest::event::{Body, EndReason, Event};
use crate::ingest::protocol::SubscribeRequest;
use crate::ingest::validate::company_of;
use crate::ingest::wire::WireFrame;
use crate::metrics::Metrics;
use crate::store::log::{Log, LogStatus};
use crate::store::recovery::Restored;

pub use pipeline::Pipeline;

/// Sessions ended, customers forgotten or actions dropped per hold of the sequencer lock
/// by the sweeper, and rounds of them one sweep does at most.
const SWEEP_CHUNK: usize = 1024;
const SWEEP_ROUNDS: usize = 64;
/// Aged records dropped from the history per hold of the sequencer lock.
const SWEEP_RECORDS: usize = 16_384;
/// Events that may be between the sequencer and their acknowledgement at once; publishers
/// wait for room beyond this, so the pipeline's queue stays bounded.
const MAX_IN_FLIGHT_EVENTS: usize = 65_536;

/// A snapshot's place in the log, and what it starts from (see [`Hub::begin_snapshot`]).
pub struct SnapshotBegun {
    /// The state is as of this seq...
    pub seq: Seq,
    /// ...and of this many visitor changes logged after it: they share its place in the
    /// log, and a restart from the snapshot replays only the ones after them.
    pub changes_after: u32,
    /// The per-map counters, copied under the lock.
    pub maps: SnapshotMaps,
    /// How long the sequencer lock was held to begin it.
    pub lock_held: Duration,
}

/// The answer to one accepted (or repeated) publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub seq: Seq,
    pub duplicate: bool,
}

/// A visitor change that is not an event, as the API asks for it.
#[derive(Debug)]
pub enum AdminChange {
    /// Attributes to merge into the traits, and the company (`{"id", "name"?, ...}`,
    /// checked by `ingest::validate::company_of`) the visitor belongs to from now on.
    UpdateTraits {
        traits: serde_json::Map<String, Value>,
        company: Option<serde_json::Map<String, Value>>,
    },
    Anonymize,
    Delete,
}

/// Publishes decided and queued, waiting for the pipeline, or proposed to the shared
/// order and waiting to come back from it.
pub struct Submitted {
    /// One per event. While proposed: the refusals, with an `Ok` placeholder for each
    /// event proposed, in order.
    results: Vec<Result<Ack, HubError>>,
    waiting: Waiting,
}

enum Waiting {
    Decided(Option<Pending>),
    Proposed(Proposed),
}

impl Submitted {
    /// Waits until the accepted events are logged and fanned out; returns the results.
    pub async fn acknowledged(self) -> Vec<Result<Ack, HubError>> {
        let (mut results, pending) = match self.waiting {
            Waiting::Decided(pending) => (self.results, pending),
            Waiting::Proposed(proposed) => match proposed.applied().await {
                Ok(Applied {
                    outcome: Outcome::Published(decided),
                    pending,
                }) => {
                    let mut results = self.results;
                    let placeholders = results.iter_mut().filter(|r| r.is_ok());
                    for (slot, result) in placeholders.zip(decided) {
                        *slot = result;
                    }
                    (results, pending)
                }
                Ok(_) => unreachable!("a publish is answered with its results"),
                Err(unordered) => {
                    let results = self.results;
                    let unknown = |r: Result<Ack, HubError>| r.and(Err(unordered.clone()));
                    return results.into_iter().map(unknown).collect();
                }
            },
        };
        let logged = match pending {
            Some(pending) => pending.wait().await,
            None => true,
        };
        if !logged {
            let not_logged = |r: Result<Ack, HubError>| r.and(Err(unlogged()));
            results = results.into_iter().map(not_logged).collect();
        }
        results
    }
}

/// An input proposed to the shared order, waiting (at most `timeout`) to be applied here.
struct Proposed {
    applied: oneshot::Receiver<Applied>,
    timeout: Duration,
}

impl Proposed {
    async fn applied(self) -> Result<Applied, HubError> {
        match tokio::time::timeout(self.timeout, self.applied).await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(_)) => Err(HubError::new(
                ErrorCode::Unavailable,
                "the shared stream did not take this, or the node stopped before it came back: \
                 its outcome is unknown; publish again (with the same eventId, a retry is \
                 answered `duplicate` if it was accepted)",
            )),
            Err(_) => Err(HubError::new(
                ErrorCode::Unavailable,
                format!(
                    "the shared stream did not order this within {:?} (is a NATS server \
                     down?): its outcome is unknown; publish again (with the same eventId, a \
                     retry is answered `duplicate` if it was accepted)",
                    self.timeout
                ),
            )),
        }
    }
}

/// What was committed under the sequencer lock, on its way through the pipeline.
pub(crate) struct Pending {
    done: Option<oneshot::Receiver<()>>,
    /// Room in the pipeline, held until the events are through it (in a cluster, the
    /// applier takes it for the whole stream message and the pipeline gives it back).
    _permit: Option<OwnedSemaphorePermit>,
}

impl Pending {
    /// Waits for the pipeline; false when it dropped the events' completion instead of
    /// sending it, which it does only for events it could not log (the hub stopped while
    /// the disk was full): they must not be acknowledged.
    async fn wait(self) -> bool {
        match self.done {
            Some(done) => done.await.is_ok(),
            None => true,
        }
    }

    /// These events, or when there are none, the change logged before them (`logged`):
    /// the pipeline takes both in order, so the later one covers the earlier.
    fn or_waiting(self, logged: oneshot::Receiver<()>) -> Pending {
        match self.done {
            Some(_) => self,
            None => Pending {
                done: Some(logged),
                _permit: self._permit,
            },
        }
    }

    /// Nothing to wait for.
    fn none() -> Pending {
        Pending {
            done: None,
            _permit: None,
        }
    }
}

/// Waits for the pipeline; `unavailable` when it could not log what was committed.
async fn wait_logged(pending: Option<Pending>) -> Result<(), HubError> {
    let logged = match pending {
        Some(pending) => pending.wait().await,
        None => true,
    };
    match logged {
        true => Ok(()),
        false => Err(unlogged()),
    }
}

/// Redacted copies of retained records, by seq (see [`Redactions`]).
fn redactions_of(records: Vec<Arc<Record>>) -> Redactions {
    records
        .into_iter()
        .map(|record| {
            let redacted = redact(&record);
            (record.seq, (record, redacted))
        })
        .collect()
}

fn shutting_down() -> HubError {
    HubError::new(ErrorCode::Unavailable, "the hub is shutting down")
}

fn disk_full() -> HubError {
    HubError::new(
        ErrorCode::Unavailable,
        "the disk is full: the hub is read-only until space is freed (reads and subscriptions \
         keep working); publish again later",
    )
}

fn unlogged() -> HubError {
    HubError::new(
        ErrorCode::Unavailable,
        "the hub stopped while the disk was full, before this could be logged: it was not \
         accepted; publish it again",
    )
}

/// The outcome of a submit that came too late: every event refused.
fn shut_out(events: usize) -> Submitted {
    Submitted {
        results: (0..events).map(|_| Err(shutting_down())).collect(),
        waiting: Waiting::Decided(None),
    }
}

/// Where the hub's inputs get their order.
pub enum Order {
    /// This hub's own sequencer lock: an input is decided as it takes the lock.
    Local,
    /// A stream shared by several nodes (see [`inputs`]): inputs are proposed to it and
    /// decided as they come back.
    Shared(SharedOrder),
}

/// How a node reaches the shared order.
pub struct SharedOrder {
    /// This node's name, shown to clients.
    pub node: String,
    /// Proposals to the stream. Bounded: proposers wait for room.
    pub proposals: mpsc::Sender<Proposal>,
    /// How long a proposal waits to come back before it is answered `unavailable`.
    pub timeout: Duration,
    /// How far this node has applied the order.
    pub status: Arc<OrderStatus>,
}

/// The shared heart of a running hub.
pub struct Hub {
    config: Arc<Config>,
    /// Names this history of seqs; kept in the data directory, new only when history is lost.
    epoch: String,
    state: HubState,
    retention: RwLock<Retention>,
    fanout: Fanout,
    metrics: Metrics,
    /// How far the log is durable; the snapshot thread waits on it.
    log_status: LogStatus,
    sequencer: Mutex<Sequencer>,
    in_flight: Arc<Semaphore>,
    next_conn: AtomicU64,
    order: Order,
}

impl Hub {
    /// Builds a hub with an empty state and starts its pipeline thread over `log`.
    pub fn start(config: Arc<Config>, log: Box<dyn Log>) -> (Arc<Hub>, Pipeline) {
        Hub::start_restored(config, log, Restored::empty())
    }

    /// Builds a hub from recovered state and history (see [`crate::store::recovery`]) and starts
    /// its pipeline thread over `log`, which continues after `restored.last_seq`.
    pub fn start_restored(
        config: Arc<Config>,
        log: Box<dyn Log>,
        restored: Restored,
    ) -> (Arc<Hub>, Pipeline) {
        Hub::start_ordered(config, log, restored, Order::Local)
    }

    /// [`Hub::start_restored`] with the inputs ordered by `order`.
    pub fn start_ordered(
        config: Arc<Config>,
        log: Box<dyn Log>,
        restored: Restored,
        order: Order,
    ) -> (Arc<Hub>, Pipeline) {
        let Restored {
            epoch,
            state,
            last_seq,
            history,
            aged_at,
            ..
        } = restored;
        let mut retention = Retention::new(
            config.retention_events,
            config.retention_age.as_millis() as Millis,
        );
        let mut dedupe = Dedupe::default();
        // Nothing is aged out of a history that is to stay exactly as restored.
        let now = aged_at.unwrap_or(Millis::MIN);
        for record in history {
            if let Some(event_id) = &record.event_id {
                dedupe.insert(record.keys.customer, event_id.clone(), record.seq);
            }
            let evicted = retention.push(record, now);
            dedupe.forget(&evicted);
        }
        retention.skip_to(last_seq);
        let metrics = Metrics::of_node(match &order {
            Order::Local => None,
            Order::Shared(shared) => Some(&shared.node),
        });
        let stats = FanoutStats {
            deliveries: metrics.deliveries.clone(),
            overflows: metrics.slow_consumers_closed.clone(),
        };
        let (tx, rx) = std_mpsc::channel();
        let hub = Arc::new(Hub {
            epoch,
            state,
            retention: RwLock::new(retention),
            fanout: Fanout::new(last_seq, stats),
            metrics,
            log_status: LogStatus::new(last_seq),
            sequencer: Mutex::new(Sequencer::new(last_seq, dedupe, tx)),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_EVENTS)),
            next_conn: AtomicU64::new(1),
            config,
            order,
        });
        let worker = hub.clone();
        let thread = std::thread::Builder::new()
            .name("actionhub-pipeline".into())
            .spawn(move || worker.run_pipeline(rx, log))
            .expect("spawning the pipeline thread");
        (hub, Pipeline(Some(thread)))
    }

    /// This node's name in a cluster; `None` on its own.
    pub fn node(&self) -> Option<&str> {
        match &self.order {
            Order::Local => None,
            Order::Shared(shared) => Some(&shared.node),
        }
    }

    /// How far this node has applied the shared order; `None` on its own.
    pub fn order_status(&self) -> Option<&OrderStatus> {
        match &self.order {
            Order::Local => None,
            Order::Shared(shared) => Some(&shared.status),
        }
    }

    /// The configuration the hub was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether a subscriber that last saw `since` in `epoch` can be sent every event after
    /// it (same history, all of it still retained, not beyond the latest seq): the one
    /// rule of a WebSocket `since` and of the HTTP stream's resume.
    pub fn can_resume(&self, since: Seq, epoch: &str) -> bool {
        epoch == self.epoch() && self.with_history(|h| h.covers(since))
    }

    /// Names this history of seqs; kept in the data directory, new only when history is
    /// lost.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Customers, sessions, profiles and actions, for concurrent readers.
    pub fn state(&self) -> &HubState {
        &self.state
    }

    /// Runs `read` over the retained history. Keep it short (it holds the history's read
    /// lock, which the sequencer's commits wait for): copy what is needed out.
    pub fn with_history<R>(&self, read: impl FnOnce(&Retention) -> R) -> R {
        read(&self.retention.read())
    }

    /// The subscription index.
    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// How far the log is durable, and whether the disk is full.
    pub fn log_status(&self) -> &LogStatus {
        &self.log_status
    }

    /// The seq of the newest accepted event.
    pub fn latest_seq(&self) -> Seq {
        self.sequencer.lock().last_seq
    }

    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Publishes events in order; each gets its own result. Returns once every accepted
    /// event is logged and fanned out. Decided at the clock's time (see
    /// [`Hub::publish_at`]).
    pub async fn publish(
        &self,
        events: Vec<Result<Event, HubError>>,
    ) -> Vec<Result<Ack, HubError>> {
        self.submit(events).await.acknowledged().await
    }

    /// [`Hub::publish`] decided at `now`: the time comes with the input, so two hubs fed
    /// the same inputs commit the same events.
    pub async fn publish_at(
        &self,
        events: Vec<Result<Event, HubError>>,
        now: Millis,
    ) -> Vec<Result<Ack, HubError>> {
        self.submit_at(events, now).await.acknowledged().await
    }

    /// Decides events now, in order, and returns what is left to wait for: the pipeline
    /// logging and fanning them out. A connection awaits several of these at once, so
    /// pipelined publishes share pipeline passes while their replies keep their order.
    pub async fn submit(&self, events: Vec<Result<Event, HubError>>) -> Submitted {
        self.submit_when(events, now_millis).await
    }

    /// [`Hub::submit`] decided at `now`.
    pub async fn submit_at(&self, events: Vec<Result<Event, HubError>>, now: Millis) -> Submitted {
        self.submit_when(events, move || now).await
    }

    /// Decides events at the time `now` gives. It is asked only once the sequencer lock
    /// is taken, so the clock's times follow the order of the seqs as closely as they can.
    async fn submit_when(
        &self,
        events: Vec<Result<Event, HubError>>,
        now: impl FnOnce() -> Millis,
    ) -> Submitted {
        if let Some(refused) = self.refuse_while_full(events.len()) {
            return refused;
        }
        if let Order::Shared(shared) = &self.order {
            return self
                .propose_events(shared, events, |input| async {
                    shared.proposals.send(input).await.map_err(|_| ())
                })
                .await;
        }
        match self.room(events.len()).await {
            Some(permit) => self.submit_with(permit, events, now),
            None => shut_out(events.len()),
        }
    }

    /// Proposes the valid events to the shared order through `send`, keeping the refusals
    /// in their places.
    async fn propose_events<F: std::future::Future<Output = Result<(), ()>>>(
        &self,
        shared: &SharedOrder,
        events: Vec<Result<Event, HubError>>,
        send: impl FnOnce(Proposal) -> F,
    ) -> Submitted {
        let count = events.len();
        let mut results = Vec::with_capacity(count);
        let mut valid = Vec::with_capacity(count);
        for event in events {
            match event {
                Ok(event) => {
                    valid.push(Ok(event));
                    results.push(Ok(Ack {
                        seq: Seq(0),
                        duplicate: false,
                    }));
                }
                Err(refused) => {
                    self.metrics.refused(refused.code);
                    results.push(Err(refused));
                }
            }
        }
        if valid.is_empty() {
            return Submitted {
                results,
                waiting: Waiting::Decided(None),
            };
        }
        let (reply, applied) = oneshot::channel();
        let proposal = Proposal {
            input: Input::Publish(valid),
            reply,
        };
        if send(proposal).await.is_err() {
            return shut_out(count);
        }
        Submitted {
            results,
            waiting: Waiting::Proposed(Proposed {
                applied,
                timeout: shared.timeout,
            }),
        }
    }

    /// Proposes one input that is not a publish and waits for it to be applied here.
    async fn propose(&self, shared: &SharedOrder, input: Input) -> Result<Applied, HubError> {
        let (reply, applied) = oneshot::channel();
        let proposal = Proposal { input, reply };
        if shared.proposals.send(proposal).await.is_err() {
            return Err(shutting_down());
        }
        Proposed {
            applied,
            timeout: shared.timeout,
        }
        .applied()
        .await
    }

    /// [`Hub::submit`] without waiting: gives the events back when the pipeline has no
    /// room for them now.
    pub fn try_submit(
        &self,
        events: Vec<Result<Event, HubError>>,
    ) -> Result<Submitted, Vec<Result<Event, HubError>>> {
        if let Some(refused) = self.refuse_while_full(events.len()) {
            return Ok(refused);
        }
        if let Order::Shared(shared) = &self.order {
            // Proposing only queues the input, so this never waits: a full queue gives
            // the events back, as a full pipeline does.
            let permit = match shared.proposals.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Full(())) => return Err(events),
                Err(mpsc::error::TrySendError::Closed(())) => return Ok(shut_out(events.len())),
            };
            let submitted = self.propose_events(shared, events, |proposal| async move {
                permit.send(proposal);
                Ok(())
            });
            return Ok(futures_util::FutureExt::now_or_never(submitted)
                .expect("proposing with a reserved slot does not wait"));
        }
        let permits = events.len().clamp(1, MAX_IN_FLIGHT_EVENTS) as u32;
        match self.in_flight.clone().try_acquire_many_owned(permits) {
            Ok(permit) => Ok(self.submit_with(permit, events, now_millis)),
            Err(TryAcquireError::NoPermits) => Err(events),
            Err(TryAcquireError::Closed) => Ok(shut_out(events.len())),
        }
    }

    /// While the disk is full the hub is read-only: every change is refused before it takes
    /// a seq, so nothing piles up behind the log. Counted with the refused publishes.
    fn check_writable(&self, changes: usize) -> Result<(), HubError> {
        if !self.log_status.is_full() {
            return Ok(());
        }
        for _ in 0..changes {
            self.metrics.refused(ErrorCode::Unavailable);
        }
        Err(disk_full())
    }

    /// [`Hub::check_writable`] for a publish: every event refused.
    fn refuse_while_full(&self, events: usize) -> Option<Submitted> {
        self.check_writable(events).err().map(|refused| Submitted {
            results: (0..events).map(|_| Err(refused.clone())).collect(),
            waiting: Waiting::Decided(None),
        })
    }

    fn submit_with(
        &self,
        permit: OwnedSemaphorePermit,
        events: Vec<Result<Event, HubError>>,
        now: impl FnOnce() -> Millis,
    ) -> Submitted {
        let count = events.len();
        let decided = self.sequence_with(permit, now, |txn| self.decide_events(txn, events));
        let Some((results, pending)) = decided else {
            return shut_out(count);
        };
        Submitted {
            results,
            waiting: Waiting::Decided(Some(pending)),
        }
    }

    /// Decides events in order, each with its own result, and counts the outcomes.
    fn decide_events(
        &self,
        txn: &mut Txn,
        events: impl IntoIterator<Item = Result<Event, HubError>>,
    ) -> Vec<Result<Ack, HubError>> {
        let results: Vec<_> = events
            .into_iter()
            .map(|event| event.and_then(|e| txn.decide(e)))
            .collect();
        for result in &results {
            match result {
                Ok(Ack {
                    duplicate: true, ..
                }) => {
                    self.metrics.events_duplicate.inc();
                }
                Ok(_) => {}
                Err(e) => self.metrics.refused(e.code),
            }
        }
        results
    }

    /// Waits for room in the pipeline for `events` events; `None` when the hub is shutting
    /// down.
    async fn room(&self, events: usize) -> Option<OwnedSemaphorePermit> {
        let permits = events.clamp(1, MAX_IN_FLIGHT_EVENTS) as u32;
        self.in_flight
            .clone()
            .acquire_many_owned(permits)
            .await
            .ok()
    }

    /// Waits for room in the pipeline, runs `decide` under the sequencer lock at the time
    /// `now` gives, and hands whatever it committed to the pipeline. `None` when the hub
    /// is shutting down.
    async fn sequence<R>(
        &self,
        events: usize,
        now: impl FnOnce() -> Millis,
        decide: impl FnOnce(&mut Txn) -> R,
    ) -> Option<(R, Pending)> {
        let permit = self.room(events).await?;
        self.sequence_with(permit, now, decide)
    }

    /// Runs `decide` under the sequencer lock, with room in the pipeline already taken.
    /// `None` when the pipeline is closed: nothing is decided, since nothing committed now
    /// could be logged, and an event is acknowledged only once it is.
    fn sequence_with<R>(
        &self,
        permit: OwnedSemaphorePermit,
        now: impl FnOnce() -> Millis,
        decide: impl FnOnce(&mut Txn) -> R,
    ) -> Option<(R, Pending)> {
        let (done_tx, done_rx) = oneshot::channel();
        let (result, sent) = self.hold(now(), |txn| {
            let result = decide(txn);
            (result, txn.hand_off(Some(done_tx)))
        })?;
        let pending = Pending {
            done: sent.then_some(done_rx),
            _permit: Some(permit),
        };
        Some((result, pending))
    }

    /// Runs `f` under the sequencer lock, deciding at `now`. What it commits stays in the
    /// sequencer's batch until a [`Txn::hand_off`]. `None`, with `f` not run, once the
    /// pipeline is closed: nothing committed then could be logged, whoever commits it.
    fn hold<R>(&self, now: Millis, f: impl FnOnce(&mut Txn) -> R) -> Option<R> {
        let mut seq = self.sequencer.lock();
        if !seq.is_open() {
            return None;
        }
        Some(f(&mut Txn {
            hub: self,
            seq: &mut seq,
            now,
        }))
    }

    /// Applies a visitor change that is not an event (traits update, anonymization,
    /// erasure), erases or redacts what the retained history holds about the visitor, and
    /// logs the change in order with the events. Returns once it is logged.
    pub async fn administer(
        &self,
        visitor: VisitorId,
        change: AdminChange,
    ) -> Result<(), HubError> {
        self.administer_when(visitor, change, now_millis).await
    }

    /// [`Hub::administer`] decided at `now`.
    pub async fn administer_at(
        &self,
        visitor: VisitorId,
        change: AdminChange,
        now: Millis,
    ) -> Result<(), HubError> {
        self.administer_when(visitor, change, move || now).await
    }

    async fn administer_when(
        &self,
        visitor: VisitorId,
        change: AdminChange,
        now: impl FnOnce() -> Millis,
    ) -> Result<(), HubError> {
        self.check_writable(1)?;
        if let Order::Shared(shared) = &self.order {
            let applied = self
                .propose(shared, Input::Admin { visitor, change })
                .await?;
            return match applied.outcome {
                Outcome::Administered(result) => {
                    wait_logged(applied.pending).await?;
                    result
                }
                _ => unreachable!("a visitor change is answered with its outcome"),
            };
        }
        // Parsing frames is the slow part of anonymizing: done first, off the sequencer.
        let redactions = match change {
            AdminChange::Anonymize => self.redactions(visitor).await,
            _ => Redactions::new(),
        };
        let (tx, rx) = oneshot::channel();
        let decided = self
            .sequence(1, now, |txn| {
                self.decide_admin(txn, visitor, change, &redactions, tx)
            })
            .await;
        let (result, pending) = decided.ok_or_else(shutting_down)?;
        let logged = pending.wait().await;
        result?;
        match logged && rx.await.is_ok() {
            true => Ok(()),
            false => Err(unlogged()),
        }
    }

    /// Decides a visitor change, applies it, redacts or erases the history it names (with
    /// `redactions` made beforehand), and logs it; `done` hears when it is logged.
    fn decide_admin(
        &self,
        txn: &mut Txn,
        visitor: VisitorId,
        change: AdminChange,
        redactions: &Redactions,
        done: oneshot::Sender<()>,
    ) -> Result<(), HubError> {
        let customer_ids = self.state.visitor_customers(visitor);
        if customer_ids.is_empty() {
            return Err(HubError::not_found("no such visitor"));
        }
        let mut company_before = None;
        if let AdminChange::UpdateTraits { traits, company } = &change {
            self.state
                .check_traits_growth(visitor, traits)
                .map_err(|full| profile_full(self, full))?;
            let named = company.clone().map(company_of).transpose();
            let named = named.map_err(|(_, message)| HubError::bad_request(message))?;
            if let Some(company) = &named {
                self.state
                    .check_company_growth(company)
                    .map_err(|full| profile_full(self, full))?;
                company_before = self
                    .state
                    .company_fields(&company.id)
                    .map(|before| (company.id.clone(), before));
            }
        }
        let op = match change {
            AdminChange::UpdateTraits { traits, company } => AdminOp::UpdateTraits {
                visitor_id: visitor,
                traits,
                company: company.map(|company| CompanyChange {
                    at: txn.now,
                    company,
                }),
            },
            AdminChange::Anonymize => AdminOp::Anonymize {
                visitor_id: visitor,
                customer_ids,
            },
            AdminChange::Delete => AdminOp::Delete {
                visitor_id: visitor,
                customer_ids,
            },
        };
        self.state.apply_admin(&op, txn.seq.last_seq);
        // An erased visitor leaves its segments silently, in the fold; an updated or
        // anonymized one is evaluated again.
        if !matches!(op, AdminOp::Delete { .. }) && self.state.has_segments() {
            txn.touch_visitor(visitor, visitor.first_customer());
        }
        if let Some(company) = company_before {
            txn.touch_company(company, visitor.first_customer());
        }
        txn.forget_in_history(&op, redactions);
        match txn.log_admin(op, Some(done)) {
            true => Ok(()),
            false => Err(shutting_down()),
        }
    }

    /// Creates, changes or deletes a segment (see [`segments`]); returns the id of the
    /// segment created or changed once the change and the memberships it moved are logged
    /// and fanned out. Decided at the clock's time.
    pub async fn change_segment(
        &self,
        change: SegmentChange,
    ) -> Result<Option<SegmentId>, HubError> {
        self.change_segment_when(change, now_millis).await
    }

    /// [`Hub::change_segment`] decided at `now`.
    pub async fn change_segment_at(
        &self,
        change: SegmentChange,
        now: Millis,
    ) -> Result<Option<SegmentId>, HubError> {
        self.change_segment_when(change, move || now).await
    }

    async fn change_segment_when(
        &self,
        change: SegmentChange,
        now: impl FnOnce() -> Millis,
    ) -> Result<Option<SegmentId>, HubError> {
        self.check_writable(1)?;
        if let Order::Shared(shared) = &self.order {
            let applied = self.propose(shared, Input::Segment(change)).await?;
            return match applied.outcome {
                Outcome::Segmented(result) => {
                    let created = result?;
                    wait_logged(applied.pending).await?;
                    Ok(created)
                }
                _ => unreachable!("a segment change is answered with its outcome"),
            };
        }
        let (tx, rx) = oneshot::channel();
        let decided = self
            .sequence(1, now, |txn| self.decide_segment(txn, change, tx))
            .await;
        let (result, pending) = decided.ok_or_else(shutting_down)?;
        let logged = pending.wait().await;
        let result = result?;
        match logged && rx.await.is_ok() {
            true => Ok(result),
            false => Err(unlogged()),
        }
    }

    /// Decides a segment change: applies and logs its definition, then commits the
    /// memberships it moves, a visitor at a time in id order (a new or changed segment is
    /// evaluated against every visitor; a deleted one's members all leave). `done` hears
    /// when the definition is logged.
    fn decide_segment(
        &self,
        txn: &mut Txn,
        change: SegmentChange,
        done: oneshot::Sender<()>,
    ) -> Result<Option<SegmentId>, HubError> {
        let state = &self.state;
        let missing = |id: SegmentId| HubError::not_found(format!("no segment {id}"));
        let op = match change {
            SegmentChange::Create(spec) => {
                let (count, id) = state.with_segments(|s| (s.len(), s.next_id()));
                if count >= MAX_SEGMENTS {
                    self.metrics.limit_hit(crate::metrics::Limit::Segments);
                    return Err(HubError::new(
                        ErrorCode::TooLarge,
                        format!("the hub holds at most {MAX_SEGMENTS} segments; delete one first"),
                    ));
                }
                AdminOp::PutSegment {
                    segment: Segment {
                        id,
                        spec,
                        created_at: txn.now,
                        updated_at: txn.now,
                    },
                }
            }
            SegmentChange::Update { id, spec } => {
                let (old, _) = state.segment(id).ok_or_else(|| missing(id))?;
                AdminOp::PutSegment {
                    segment: Segment {
                        id,
                        spec,
                        created_at: old.created_at,
                        updated_at: txn.now,
                    },
                }
            }
            SegmentChange::Delete(id) => {
                state.segment(id).ok_or_else(|| missing(id))?;
                AdminOp::DeleteSegment { segment_id: id }
            }
        };
        let (id, moves) = match &op {
            AdminOp::PutSegment { segment } => (segment.id, None),
            AdminOp::DeleteSegment { segment_id } => {
                let leaving = state.segment_members(*segment_id);
                (
                    *segment_id,
                    Some(leaving.into_iter().map(|v| (v, false)).collect()),
                )
            }
            _ => unreachable!("a segment change is a segment op"),
        };
        state.apply_admin(&op, txn.seq.last_seq);
        let created = matches!(op, AdminOp::PutSegment { .. }).then_some(id);
        if !txn.log_admin(op, Some(done)) {
            return Err(shutting_down());
        }
        let moves: Vec<(VisitorId, bool)> = moves.unwrap_or_else(|| state.segment_backfill(id));
        for (visitor, entered) in moves {
            txn.commit(Body::Segment {
                entered,
                segment_id: id,
                visitor_id: visitor,
                customer_id: visitor.first_customer(),
            });
        }
        Ok(created)
    }

    /// Redacted copies of the visitor's retained events, made on a blocking thread.
    async fn redactions(&self, visitor: VisitorId) -> Redactions {
        let customers = self.state.visitor_customers(visitor);
        let records = self.retention.read().records_of(&customers);
        tokio::task::spawn_blocking(move || redactions_of(records))
            .await
            .unwrap_or_default()
    }

    /// Merges visitor `source` into visitor `target` (both resolved visitor ids), publishing
    /// `visitor:merged`. Refuses merging a visitor into itself and unknown visitors.
    pub async fn merge_visitors(
        &self,
        source: VisitorId,
        target: VisitorId,
    ) -> Result<Ack, HubError> {
        self.merge_visitors_when(source, target, now_millis).await
    }

    /// [`Hub::merge_visitors`] decided at `now`.
    pub async fn merge_visitors_at(
        &self,
        source: VisitorId,
        target: VisitorId,
        now: Millis,
    ) -> Result<Ack, HubError> {
        self.merge_visitors_when(source, target, move || now).await
    }

    async fn merge_visitors_when(
        &self,
        source: VisitorId,
        target: VisitorId,
        now: impl FnOnce() -> Millis,
    ) -> Result<Ack, HubError> {
        self.check_writable(1)?;
        if let Order::Shared(shared) = &self.order {
            let applied = self
                .propose(shared, Input::Merge { source, target })
                .await?;
            return match applied.outcome {
                Outcome::Merged(result) => {
                    wait_logged(applied.pending).await?;
                    result
                }
                _ => unreachable!("a merge is answered with its outcome"),
            };
        }
        let decided = self
            .sequence(1, now, |txn| self.decide_merge(txn, source, target))
            .await;
        let (result, pending) = decided.ok_or_else(shutting_down)?;
        if !pending.wait().await {
            return Err(unlogged());
        }
        result
    }

    /// Decides a merge of visitor `source` into `target` and commits `visitor:merged`.
    fn decide_merge(
        &self,
        txn: &mut Txn,
        source: VisitorId,
        target: VisitorId,
    ) -> Result<Ack, HubError> {
        if source == target {
            return Err(HubError::bad_request("cannot merge a visitor into itself"));
        }
        let from = self.state.visitor_customers(source);
        let mut all = self.state.visitor_customers(target);
        if from.is_empty() || all.is_empty() {
            return Err(HubError::not_found("no such visitor"));
        }
        self.state
            .check_merge_growth(source, target)
            .map_err(|full| profile_full(self, full))?;
        let first = from[0];
        all.extend(
            from.into_iter()
                .filter(|c| !all.contains(c))
                .collect::<Vec<_>>(),
        );
        let body = Body::Merged {
            customer_id: first,
            visitor_id: target,
            user_id: None,
            merged_customer_ids: all,
        };
        Ok(Ack {
            seq: txn.commit(body),
            duplicate: false,
        })
    }

    /// For a cluster's applier: applies inputs as they came back from the shared order,
    /// in that order, at `now` (the time the order stamped on them, never the clock), and
    /// answers the ones proposed here through their replies. Every node applies the same
    /// inputs at the same times, so every node commits the same events with the same seqs
    /// and frames. Returns false once the pipeline is closed.
    ///
    /// Room in the pipeline is taken for all of them at once and held until the pipeline
    /// is through them, so an applier catching up never runs far ahead of fan-out.
    pub async fn apply_ordered(
        &self,
        inputs: Vec<(Input, Option<oneshot::Sender<Applied>>)>,
        now: Millis,
    ) -> bool {
        let weight = inputs.iter().map(|(input, _)| input.weight()).sum();
        let Some(permit) = self.room(weight).await else {
            return false;
        };
        for (input, reply) in inputs {
            let applied = match input {
                Input::Publish(events) => self.hold(now, |txn| {
                    let results = self.decide_events(txn, events);
                    (Outcome::Published(results), txn.hand_off_pending())
                }),
                Input::Admin { visitor, change } => {
                    // The applier is the only one deciding, so nothing changes the
                    // history between these copies and the hold below.
                    let redactions = match change {
                        AdminChange::Anonymize => {
                            let customers = self.state.visitor_customers(visitor);
                            redactions_of(self.retention.read().records_of(&customers))
                        }
                        _ => Redactions::new(),
                    };
                    let (done, logged) = oneshot::channel();
                    self.hold(now, |txn| {
                        let result = self.decide_admin(txn, visitor, change, &redactions, done);
                        let pending = txn.hand_off_pending().or_waiting(logged);
                        (Outcome::Administered(result), pending)
                    })
                }
                Input::Segment(change) => {
                    let (done, logged) = oneshot::channel();
                    self.hold(now, |txn| {
                        let result = self.decide_segment(txn, change, done);
                        let pending = txn.hand_off_pending().or_waiting(logged);
                        (Outcome::Segmented(result), pending)
                    })
                }
                Input::Merge { source, target } => self.hold(now, |txn| {
                    let result = self.decide_merge(txn, source, target);
                    (Outcome::Merged(result), txn.hand_off_pending())
                }),
                Input::Tick => {
                    self.sweep_at(now);
                    Some((Outcome::Ticked, Pending::none()))
                }
            };
            let Some((outcome, pending)) = applied else {
                return false;
            };
            if let Some(reply) = reply {
                // The proposer may have given up waiting; the input stands all the same.
                let _ = reply.send(Applied {
                    outcome,
                    pending: Some(pending),
                });
            }
        }
        // Given back by the pipeline itself: no task, and no wake-up, per message.
        self.hold(now, |txn| txn.release_after(permit)).is_some()
    }

    /// Publishes one event.
    pub async fn publish_one(&self, event: Result<Event, HubError>) -> Result<Ack, HubError> {
        self.publish(vec![event])
            .await
            .pop()
            .expect("one result per event")
    }

    /// In a cluster, the sweeper's tick (see [`Hub::sweep_at`]) proposed to the shared
    /// order, which gives it its time; returns once it is applied here. On its own, the
    /// hub sweeps at the clock's time.
    pub async fn propose_tick(self: &Arc<Self>) -> Result<(), HubError> {
        match &self.order {
            Order::Shared(shared) => self.propose(shared, Input::Tick).await.map(|_| ()),
            Order::Local => {
                let hub = self.clone();
                tokio::task::spawn_blocking(move || hub.sweep())
                    .await
                    .map_err(|e| {
                        HubError::new(ErrorCode::Internal, format!("the sweep failed: {e}"))
                    })
            }
        }
    }

    /// [`Hub::sweep_at`] at the clock's time.
    pub fn sweep(&self) {
        self.sweep_at(now_millis())
    }

    /// A tick at `now`: ends sessions idle since before it, drops history and actions past
    /// the retention age, and forgets customers (and profiles) idle past the visitor age.
    /// What it changes is decided from the state and `now` alone, and goes through the
    /// sequencer like any input: the sessions it ends are events, and the actions and
    /// customers it forgets are logged changes ([`AdminOp`]), so a replay repeats them.
    ///
    /// Runs on a blocking thread. Each step finds its work in an index (or, for actions, in
    /// a scan without the sequencer lock) and does it a chunk per hold of the lock, so a
    /// publish waits for one chunk at most; whatever a tick leaves, the next one takes.
    pub fn sweep_at(&self, now: Millis) {
        let idle_cutoff = now - self.config.session_idle_timeout.as_millis() as Millis;
        for _ in 0..SWEEP_ROUNDS {
            let more = self.hold(now, |txn| {
                let idle = self.state.idle_sessions(idle_cutoff, SWEEP_CHUNK);
                let more = idle.len() == SWEEP_CHUNK;
                for (customer, session) in idle {
                    txn.end_session(customer, session, EndReason::Idle);
                }
                txn.hand_off(None);
                more
            });
            if more != Some(true) {
                break;
            }
        }
        for _ in 0..SWEEP_ROUNDS {
            let evicted = self.hold(now, |txn| {
                let evicted = self.retention.write().evict_aged(now, SWEEP_RECORDS);
                txn.seq.dedupe.forget(&evicted);
                evicted
            });
            // The records are freed here, without the lock.
            if evicted.is_none_or(|evicted| evicted.len() < SWEEP_RECORDS) {
                break;
            }
        }
        // Old actions are found without the lock, in id order, and forgotten under it, a
        // chunk a time: each chunk names those still old then, is applied with the
        // copy-on-write rules of every change (so a snapshot may be running) and is logged.
        let age_cutoff = now - self.config.retention_age.as_millis() as Millis;
        for old in self.state.actions_before(age_cutoff).chunks(SWEEP_RECORDS) {
            let go_on = self.hold(now, |txn| {
                let action_ids = self.state.still_before(old, age_cutoff);
                if action_ids.is_empty() {
                    return true;
                }
                // Forgetting a visitor's old webchats changes its conversationCount.
                if self.state.has_segments() {
                    for id in &action_ids {
                        if let Some(head) = self.state.action_head(*id) {
                            let customer = head.customer_id;
                            txn.touch_visitor(self.state.visitor_of(customer), customer);
                        }
                    }
                }
                let op = AdminOp::EvictActions {
                    action_ids,
                    cutoff: age_cutoff,
                };
                self.state.apply_admin(&op, txn.seq.last_seq);
                txn.log_admin(op, None) && {
                    txn.hand_off(None);
                    true
                }
            });
            if go_on != Some(true) {
                break;
            }
        }
        // Forgetting idle customers is the sweeper's choice, made with its clock, so it is
        // logged like a visitor change: recovery repeats it rather than deciding again.
        let visitor_cutoff = now - self.config.visitor_idle_age.as_millis() as Millis;
        for _ in 0..SWEEP_ROUNDS {
            let go_on = self.hold(now, |txn| {
                let idle = self.state.idle_customers(visitor_cutoff, SWEEP_CHUNK);
                if idle.is_empty() {
                    return false;
                }
                let more = idle.len() == SWEEP_CHUNK;
                // A profile that keeps other customers changes; one that goes leaves its
                // segments silently, in the fold.
                if self.state.has_segments() {
                    for customer in &idle {
                        txn.touch_visitor(self.state.visitor_of(*customer), *customer);
                    }
                }
                let op = AdminOp::Evict { customer_ids: idle };
                self.state.apply_admin(&op, txn.seq.last_seq);
                let logged = txn.log_admin(op, None);
                txn.hand_off(None);
                logged && more
            });
            if go_on != Some(true) {
                break;
            }
        }
    }

    /// Starts a snapshot of the state as of the latest seq (see [`HubState::begin_snapshot`]);
    /// the caller walks it and then calls [`HubState::end_snapshot`]. Holds the sequencer
    /// lock only to read the seq and copy the per-map counters.
    pub fn begin_snapshot(&self) -> SnapshotBegun {
        let seq = self.sequencer.lock();
        let held = Instant::now();
        let maps = self.state.begin_snapshot(seq.last_seq);
        let (at, changes_after) = (seq.last_seq, seq.changes_after_last_seq);
        drop(seq);
        SnapshotBegun {
            seq: at,
            changes_after,
            maps,
            lock_held: held.elapsed(),
        }
    }

    /// Takes the anonymizations and erasures decided so far, each with the seq it was
    /// logged after, for the log's compaction (see [`crate::store::snapshot`]). Taken
    /// before a snapshot begins, every one of them is in that snapshot.
    pub fn take_forgotten(&self) -> Vec<(Seq, AdminOp)> {
        std::mem::take(&mut self.sequencer.lock().forgotten)
    }

    /// Gives back what [`Hub::take_forgotten`] took when the compaction could not be done,
    /// so the next snapshot tries again.
    pub fn return_forgotten(&self, mut taken: Vec<(Seq, AdminOp)>) {
        let mut seq = self.sequencer.lock();
        taken.append(&mut seq.forgotten);
        seq.forgotten = taken;
    }

    /// Whether an anonymization or erasure waits for the log's compaction.
    pub fn has_forgotten(&self) -> bool {
        !self.sequencer.lock().forgotten.is_empty()
    }

    /// How often [`Hub::sweep_at`] should run.
    pub fn sweep_interval(&self) -> Duration {
        (self.config.session_idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// Subscribes with a snapshot. The subscription is filed paused after `at`, the latest
    /// seq, with `subscribed(at)` queued; its snapshot is then built on a blocking thread,
    /// without the sequencer lock, from the matching actions whose latest change is at or
    /// before `at`. Returns `at` and the snapshot's frames to come. The connection sends
    /// them as its outbox has room and then replays the retained events after `at` like a
    /// `since` subscription, paced by its reader, before it goes live: every later change
    /// is an event after `at`, so nothing is missed and nothing sent twice.
    ///
    /// `build` writes the snapshot's frames from the state (the hub does not know their
    /// JSON: see [`crate::edge::views::snapshot_frames`]).
    pub fn subscribe_with_snapshot(
        self: &Arc<Self>,
        conn: ConnId,
        req: &SubscribeRequest,
        subscribed: impl FnOnce(Seq) -> String,
        build: fn(&HubState, &SubscribeRequest, Seq) -> Vec<WireFrame>,
    ) -> Result<(Seq, oneshot::Receiver<Vec<WireFrame>>), HubError> {
        let at = self.latest_seq();
        let start = self.fanout.subscribe(
            conn,
            new_sub(req),
            Start::Paused(at),
            self.config.max_subscriptions_per_connection,
            |start| vec![WireFrame::text(&subscribed(start))],
        )?;
        let (hub, req) = (self.clone(), req.clone());
        let (tx, rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            // The connection may have gone meanwhile; then nobody waits for it.
            let _ = tx.send(build(&hub.state, &req, at));
        });
        Ok((start, rx))
    }

    /// Closes the pipeline's queue, so the thread ends after the batches already queued.
    /// The door closes first: publishers waiting for room are turned away, and one that
    /// already holds room finds the pipeline gone when it takes the sequencer lock, so it
    /// commits nothing (see `Hub::sequence_with`); everything committed reaches the log.
    pub fn close_pipeline(&self) {
        self.in_flight.close();
        self.sequencer.lock().close();
    }

    /// Updates the gauges that mirror sizes, for a scrape.
    pub fn refresh_gauges(&self) {
        self.metrics.latest_seq.set(self.latest_seq().0 as i64);
        self.metrics
            .subscriptions
            .set(self.fanout.subscription_count() as i64);
        self.metrics.actions.set(self.state.action_count() as i64);
        self.metrics
            .retained_events
            .set(self.retention.read().len() as i64);
        if let Some(order) = self.order_status() {
            let applied = order.applied.load(Ordering::Acquire);
            self.metrics.stream_applied.set(applied as i64);
            self.metrics
                .stream_lag
                .set(order.lag.load(Ordering::Acquire) as i64);
            self.metrics
                .stream_held
                .set(order.held.load(Ordering::Acquire) as i64);
        }
    }
}

/// A subscription's index entry, from its request.
pub fn new_sub(req: &SubscribeRequest) -> NewSub {
    NewSub {
        id: req.sub.clone(),
        topics: req.topics,
        filter: req.filter.clone(),
        once: req.once,
    }
}
