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
pub mod pipeline;
pub mod retention;
mod sequencer;
pub mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::Config;
use crate::error::{ErrorCode, HubError};
use crate::hub::fanout::{Fanout, FanoutStats, NewSub, Start};
use crate::hub::retention::Retention;
use crate::hub::sequencer::{profile_full, redact, Dedupe, Redactions, Sequencer, Txn};
use crate::hub::state::{AdminOp, HubState, SnapshotMaps};
use crate::ids::{ConnId, Seq, VisitorId};
use crate::ingest::event::{now_millis, Body, EndReason, Event, Millis};
use crate::ingest::protocol::SubscribeRequest;
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

/// The answer to one accepted (or repeated) publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub seq: Seq,
    pub duplicate: bool,
}

/// A visitor change that is not an event, as the API asks for it.
#[derive(Debug)]
pub enum AdminChange {
    UpdateTraits(serde_json::Map<String, Value>),
    Anonymize,
    Delete,
}

/// Publishes decided and queued, waiting for the pipeline.
pub struct Submitted {
    results: Vec<Result<Ack, HubError>>,
    pending: Option<Pending>,
}

impl Submitted {
    /// Waits until the accepted events are logged and fanned out; returns the results.
    pub async fn acknowledged(self) -> Vec<Result<Ack, HubError>> {
        let logged = match self.pending {
            Some(pending) => pending.wait().await,
            None => true,
        };
        if logged {
            return self.results;
        }
        let not_logged = |r: Result<Ack, HubError>| r.and(Err(unlogged()));
        self.results.into_iter().map(not_logged).collect()
    }
}

/// What was committed under the sequencer lock, on its way through the pipeline.
struct Pending {
    done: Option<oneshot::Receiver<()>>,
    /// Room in the pipeline, held until the events are through it.
    _permit: OwnedSemaphorePermit,
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
        pending: None,
    }
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
        let Restored {
            epoch,
            state,
            last_seq,
            history,
            ..
        } = restored;
        let mut retention = Retention::new(
            config.retention_events,
            config.retention_age.as_millis() as Millis,
        );
        let mut dedupe = Dedupe::default();
        let now = now_millis();
        for record in history {
            if let Some(event_id) = &record.event_id {
                dedupe.insert(record.keys.customer, event_id.clone(), record.seq);
            }
            let evicted = retention.push(record, now);
            dedupe.forget(&evicted);
        }
        retention.skip_to(last_seq);
        let metrics = Metrics::new();
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
        });
        let worker = hub.clone();
        let thread = std::thread::Builder::new()
            .name("actionhub-pipeline".into())
            .spawn(move || worker.run_pipeline(rx, log))
            .expect("spawning the pipeline thread");
        (hub, Pipeline(Some(thread)))
    }

    /// The configuration the hub was started with.
    pub fn config(&self) -> &Config {
        &self.config
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
        match self.room(events.len()).await {
            Some(permit) => self.submit_with(permit, events, now),
            None => shut_out(events.len()),
        }
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
            pending: None,
        })
    }

    fn submit_with(
        &self,
        permit: OwnedSemaphorePermit,
        events: Vec<Result<Event, HubError>>,
        now: impl FnOnce() -> Millis,
    ) -> Submitted {
        let count = events.len();
        let decided = self.sequence_with(permit, now, |txn| {
            events
                .into_iter()
                .map(|event| event.and_then(|e| txn.decide(e)))
                .collect::<Vec<_>>()
        });
        let Some((results, pending)) = decided else {
            return shut_out(count);
        };
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
        Submitted {
            results,
            pending: Some(pending),
        }
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
            _permit: permit,
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
        // Parsing frames is the slow part of anonymizing: done first, off the sequencer.
        let redactions = match change {
            AdminChange::Anonymize => self.redactions(visitor).await,
            _ => Redactions::new(),
        };
        let (tx, rx) = oneshot::channel();
        let decided = self
            .sequence(1, now, |txn| {
                let customer_ids = self.state.visitor_customers(visitor);
                if customer_ids.is_empty() {
                    return Err(HubError::not_found("no such visitor"));
                }
                if let AdminChange::UpdateTraits(traits) = &change {
                    self.state
                        .check_traits_growth(visitor, traits)
                        .map_err(|full| profile_full(self, full))?;
                }
                let op = match change {
                    AdminChange::UpdateTraits(traits) => AdminOp::UpdateTraits {
                        visitor_id: visitor,
                        traits,
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
                txn.forget_in_history(&op, &redactions);
                match txn.log_admin(op, Some(tx)) {
                    true => Ok(()),
                    false => Err(shutting_down()),
                }
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

    /// Redacted copies of the visitor's retained events, made on a blocking thread.
    async fn redactions(&self, visitor: VisitorId) -> Redactions {
        let customers = self.state.visitor_customers(visitor);
        let records = self.retention.read().records_of(&customers);
        tokio::task::spawn_blocking(move || {
            records
                .into_iter()
                .map(|record| {
                    let redacted = redact(&record);
                    (record.seq, (record, redacted))
                })
                .collect()
        })
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
        let decided = self
            .sequence(1, now, |txn| {
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
                Ok(txn.commit(body))
            })
            .await;
        let (result, pending) = decided.ok_or_else(shutting_down)?;
        if !pending.wait().await {
            return Err(unlogged());
        }
        result.map(|seq| Ack {
            seq,
            duplicate: false,
        })
    }

    /// Publishes one event.
    pub async fn publish_one(&self, event: Result<Event, HubError>) -> Result<Ack, HubError> {
        self.publish(vec![event])
            .await
            .pop()
            .expect("one result per event")
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
                let op = AdminOp::EvictActions {
                    action_ids,
                    cutoff: age_cutoff,
                };
                self.state.apply_admin(&op, txn.seq.last_seq);
                txn.log_admin(op, None)
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
                let op = AdminOp::Evict { customer_ids: idle };
                self.state.apply_admin(&op, txn.seq.last_seq);
                txn.log_admin(op, None) && more
            });
            if go_on != Some(true) {
                break;
            }
        }
    }

    /// Starts a snapshot of the state as of the latest seq (see [`HubState::begin_snapshot`]);
    /// the caller walks it and then calls [`HubState::end_snapshot`]. Holds the sequencer
    /// lock only to read the seq and copy the per-map counters; returns how long that was.
    pub fn begin_snapshot(&self) -> (Seq, SnapshotMaps, Duration) {
        let seq = self.sequencer.lock();
        let held = Instant::now();
        let maps = self.state.begin_snapshot(seq.last_seq);
        let at = seq.last_seq;
        drop(seq);
        (at, maps, held.elapsed())
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
