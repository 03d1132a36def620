//! The hub: the sequencer, the one ordering authority, and the pipeline behind it.
//!
//! A publish takes the sequencer lock, checks each event against state (duplicates,
//! lifecycles, identity fields), assigns the next seq, applies the event to state, appends
//! it to the retained history and to the pipeline's queue, and releases the lock. Hub-made
//! events (sessions started and ended, merges, actions ignored at session end) are decided
//! in the same place, so they take their seqs in the same order.
//!
//! The pipeline thread takes a pass of batches in seq order, appends them to the [`Log`],
//! fans them out, and only then completes the publishes, so an acknowledged event is logged,
//! queued to every matching live subscription, and visible to every later read. Then it
//! writes each receiving connection's outbox once for the whole pass. The sequencer never
//! waits on a subscriber: delivery only queues into bounded outboxes, and the writes after
//! it never wait for a socket (see [`crate::edge::outbox`]).
//!
//! Lock order: sequencer, then fan-out index, then retention; an outbox's lock is a leaf
//! (taken last, nothing taken under it). Nobody takes them in another order, and none is
//! held across an `.await`.

//!
//! Beside it: [`state`] (customers, sessions, profiles, actions), [`retention`] (the
//! replayable history) and [`fanout`] (the subscription index).

pub mod fanout;
pub mod retention;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::Config;
use crate::edge::limits::Limit;
use crate::error::{ErrorCode, HubError};
use crate::hub::fanout::{selects, Fanout, FanoutStats, GoLive, NewSub, Start, Written};
use crate::hub::retention::{Record, Retention};
use crate::hub::state::{
    ActionHead, AdminOp, HubState, ProfileFull, SessionInfo, SessionStatus, SnapshotMaps,
};
use crate::ids::{ConnId, CustomerId, Seq};
use crate::ingest::event::{
    now_millis, Body, EndReason, Event, EventData, LifecycleEvent, Millis, Published, VisitorKind,
};
use crate::ingest::lifecycle::{ActionState, TransitionError};
use crate::ingest::protocol::{self, SubscribeRequest};
use crate::ingest::topic::{Filter, TopicSet};
use crate::ingest::wire::WireFrame;
use crate::metrics::Metrics;
use crate::store::log::{is_disk_full, Log, LogStatus};
use crate::store::recovery::Restored;

/// How often an idle pipeline calls [`Log::tick`].
const PIPELINE_TICK: Duration = Duration::from_millis(10);
/// Longest the pipeline holds back a delivery's write while more work keeps coming, to
/// write a connection's frames of several passes at once. An idle pipeline writes at once.
const MAX_WRITE_DELAY: Duration = Duration::from_millis(5);

/// Sessions ended, customers forgotten or actions dropped per hold of the sequencer lock
/// by the sweeper, and rounds of them one sweep does at most.
const SWEEP_CHUNK: usize = 1024;
const SWEEP_ROUNDS: usize = 64;
/// Aged records dropped from the history per hold of the sequencer lock.
const SWEEP_RECORDS: usize = 16_384;
/// Actions per `snapshot` frame: a big snapshot leaves as several frames of bounded size
/// (about half a MiB each), so no single frame or write is as big as the whole state.
const SNAPSHOT_CHUNK_ACTIONS: usize = 1000;

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

/// Work for the pipeline thread.
struct Batch {
    records: Vec<Arc<Record>>,
    /// A change that is not an event; such a batch holds no records.
    admin: Option<Arc<AdminOp>>,
    done: Option<oneshot::Sender<()>>,
}

/// What only the sequencer touches, behind its lock.
struct Sequencer {
    last_seq: Seq,
    /// The eventIds of retained events, to answer a retry with its first seq.
    dedupe: Dedupe,
    /// Records committed by the current publish, handed to the pipeline when it ends.
    batch: Vec<Arc<Record>>,
    pipeline: Option<std_mpsc::Sender<Batch>>,
}

/// The shared heart of a running hub.
pub struct Hub {
    pub config: Arc<Config>,
    /// Names this history of seqs; kept in the data directory, new only when history is lost.
    pub epoch: String,
    pub state: HubState,
    pub retention: RwLock<Retention>,
    pub fanout: Fanout,
    pub metrics: Metrics,
    /// How far the log is durable; the snapshot thread waits on it.
    pub log_status: LogStatus,
    sequencer: Mutex<Sequencer>,
    in_flight: Arc<Semaphore>,
    next_conn: AtomicU64,
}

/// The pipeline thread, joined at shutdown.
pub struct Pipeline(Option<JoinHandle<()>>);

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
            sequencer: Mutex::new(Sequencer {
                last_seq,
                dedupe,
                batch: Vec::new(),
                pipeline: Some(tx),
            }),
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

    /// The seq of the newest accepted event.
    pub fn latest_seq(&self) -> Seq {
        self.sequencer.lock().last_seq
    }

    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Publishes events in order; each gets its own result. Returns once every accepted
    /// event is logged and fanned out.
    pub async fn publish(
        &self,
        events: Vec<Result<Event, HubError>>,
    ) -> Vec<Result<Ack, HubError>> {
        self.submit(events).await.acknowledged().await
    }

    /// Decides events now, in order, and returns what is left to wait for: the pipeline
    /// logging and fanning them out. A connection awaits several of these at once, so
    /// pipelined publishes share pipeline passes while their replies keep their order.
    pub async fn submit(&self, events: Vec<Result<Event, HubError>>) -> Submitted {
        if let Some(refused) = self.refuse_while_full(events.len()) {
            return refused;
        }
        match self.room(events.len()).await {
            Some(permit) => self.submit_with(permit, events),
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
            Ok(permit) => Ok(self.submit_with(permit, events)),
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
    ) -> Submitted {
        let count = events.len();
        let decided = self.sequence_with(permit, |seq, now| {
            events
                .into_iter()
                .map(|event| event.and_then(|e| self.decide(seq, e, now)))
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

    /// Waits for room in the pipeline, runs `decide` under the sequencer lock, and hands
    /// whatever it committed to the pipeline. `None` when the hub is shutting down.
    async fn sequence<R>(
        &self,
        events: usize,
        decide: impl FnOnce(&mut Sequencer, Millis) -> R,
    ) -> Option<(R, Pending)> {
        let permit = self.room(events).await?;
        self.sequence_with(permit, decide)
    }

    /// Runs `decide` under the sequencer lock, with room in the pipeline already taken.
    /// `None` when the pipeline is closed: nothing is decided, since nothing committed now
    /// could be logged, and an event is acknowledged only once it is.
    fn sequence_with<R>(
        &self,
        permit: OwnedSemaphorePermit,
        decide: impl FnOnce(&mut Sequencer, Millis) -> R,
    ) -> Option<(R, Pending)> {
        let (done_tx, done_rx) = oneshot::channel();
        let mut seq = self.sequencer.lock();
        seq.pipeline.as_ref()?;
        let result = decide(&mut seq, now_millis());
        let sent = self.hand_off(&mut seq, Some(done_tx));
        drop(seq);
        let pending = Pending {
            done: sent.then_some(done_rx),
            _permit: permit,
        };
        Some((result, pending))
    }

    /// Applies a visitor change that is not an event (traits update, anonymization,
    /// erasure), erases or redacts what the retained history holds about the visitor, and
    /// logs the change in order with the events. Returns once it is logged.
    pub async fn administer(
        &self,
        visitor: CustomerId,
        change: AdminChange,
    ) -> Result<(), HubError> {
        self.check_writable(1)?;
        // Parsing frames is the slow part of anonymizing: done first, off the sequencer.
        let redactions = match change {
            AdminChange::Anonymize => self.redactions(visitor).await,
            _ => Redactions::new(),
        };
        let (tx, rx) = oneshot::channel();
        let decided = self
            .sequence(1, |seq, _now| {
                let customer_ids = self.state.visitor_customers(visitor);
                if customer_ids.is_empty() {
                    return Err(HubError::not_found("no such visitor"));
                }
                if let AdminChange::UpdateTraits(traits) = &change {
                    self.state
                        .check_traits_growth(visitor, traits)
                        .map_err(|full| self.profile_full(full))?;
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
                self.state.apply_admin(&op, seq.last_seq);
                self.forget_in_history(seq, &op, &redactions);
                match log_admin(seq, op, Some(tx)) {
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

    /// The refusal of a change that would make a profile hold more than its limits.
    fn profile_full(&self, full: ProfileFull) -> HubError {
        self.metrics.limit_hit(Limit::ProfileSize);
        let mut error = HubError::new(
            ErrorCode::TooLarge,
            format!(
                "the visitor's profile would hold {} against the limit `{}` of {}",
                full.would_be, full.limit, full.max
            ),
        );
        error.details = Some(json!({ "field": full.field, "limit": full.limit, "max": full.max }));
        error
    }

    /// Redacted copies of the visitor's retained events, made on a blocking thread.
    async fn redactions(&self, visitor: CustomerId) -> Redactions {
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

    /// Erases (delete) or redacts (anonymize) the retained history of a visitor change.
    /// Anonymizing swaps in the copies redacted beforehand, and redacts here only what
    /// changed since (events that arrived, records another change replaced).
    fn forget_in_history(&self, seq: &mut Sequencer, op: &AdminOp, redactions: &Redactions) {
        match op {
            AdminOp::UpdateTraits { .. } | AdminOp::Evict { .. } => {}
            AdminOp::Anonymize { customer_ids, .. } => {
                self.retention
                    .write()
                    .rewrite_customers(customer_ids, false, |record| {
                        match redactions.get(&record.seq) {
                            Some((was, redacted)) if Arc::ptr_eq(was, record) => redacted.clone(),
                            _ => redact(record),
                        }
                    });
            }
            AdminOp::Delete { customer_ids, .. } => {
                self.retention
                    .write()
                    .rewrite_customers(customer_ids, true, |record| {
                        Some(Arc::new(Record::erased(record.seq, record.timestamp)))
                    });
                seq.dedupe.forget_customers(customer_ids);
            }
        }
    }

    /// Merges visitor `source` into visitor `target` (both resolved visitor ids), publishing
    /// `visitor:merged`. Refuses merging a visitor into itself and unknown visitors.
    pub async fn merge_visitors(
        &self,
        source: CustomerId,
        target: CustomerId,
    ) -> Result<Ack, HubError> {
        self.check_writable(1)?;
        let decided = self
            .sequence(1, |seq, now| {
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
                    .map_err(|full| self.profile_full(full))?;
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
                Ok(self.commit(seq, body, now))
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

    /// Sends the committed batch to the pipeline; false if there was nothing to send.
    fn hand_off(&self, seq: &mut Sequencer, done: Option<oneshot::Sender<()>>) -> bool {
        if seq.batch.is_empty() {
            return false;
        }
        let records = std::mem::take(&mut seq.batch);
        match &seq.pipeline {
            Some(pipeline) => pipeline
                .send(Batch {
                    records,
                    admin: None,
                    done,
                })
                .is_ok(),
            None => false,
        }
    }

    /// Checks one event against state and commits it with whatever it causes.
    fn decide(&self, seq: &mut Sequencer, event: Event, now: Millis) -> Result<Ack, HubError> {
        let customer = event.customer_id();
        if let Some(event_id) = event.event_id() {
            if let Some(original) = seq.dedupe.get(customer, event_id) {
                return Ok(Ack {
                    seq: original,
                    duplicate: true,
                });
            }
        }
        if let Event::Visitor(v) = &event {
            self.state
                .check_visitor_growth(v)
                .map_err(|full| self.profile_full(full))?;
        }
        // A session new to the customer ends the one it replaces, then starts.
        let new_session = event.session_id().and_then(|session| {
            match self.state.session_status(customer, session) {
                SessionStatus::New { replaces } => {
                    Some((session, replaces.filter(|s| s.ended.is_none())))
                }
                SessionStatus::Known => None,
            }
        });
        if let Event::Lifecycle(e) = &event {
            let ending = new_session.as_ref().and_then(|(_, old)| old.as_ref());
            if let Some(duplicate_of) = self.check_lifecycle(e, ending)? {
                return Ok(Ack {
                    seq: duplicate_of,
                    duplicate: true,
                });
            }
        }
        if let Some((session, replaces)) = new_session {
            if let Some(old) = replaces {
                self.end_session(seq, customer, old, EndReason::Replaced, now);
            }
            let user_id = match &event {
                Event::Visitor(v) if v.kind != VisitorKind::Signout && v.user_id.is_some() => {
                    v.user_id.clone()
                }
                _ => self.state.user_of(customer),
            };
            self.commit(
                seq,
                Body::SessionStarted {
                    customer_id: customer,
                    session_id: session,
                    user_id,
                    started_at: now,
                },
                now,
            );
        }
        let (merge, signout) = match &event {
            Event::Visitor(v) => {
                let links = matches!(
                    v.kind,
                    VisitorKind::Identify | VisitorKind::Signin | VisitorKind::Userinfo
                );
                let merge = v.user_id.as_deref().filter(|_| links).and_then(|user| {
                    Some((user.to_string(), self.state.merge_preview(customer, user)?))
                });
                let signout = (v.kind == VisitorKind::Signout)
                    .then_some(v.session_id)
                    .flatten();
                (merge, signout)
            }
            Event::Lifecycle(_) => (None, None),
        };
        let accepted = self.commit(seq, event.into(), now);
        if let Some((user_id, (visitor_id, customers))) = merge {
            self.commit(
                seq,
                Body::Merged {
                    customer_id: customer,
                    visitor_id,
                    user_id: Some(user_id),
                    merged_customer_ids: customers,
                },
                now,
            );
        }
        if let Some(session) = signout {
            if let Some(open) = self.state.open_session(customer, session) {
                self.end_session(seq, customer, open, EndReason::Signout, now);
            }
        }
        Ok(Ack {
            seq: accepted,
            duplicate: false,
        })
    }

    /// Checks a lifecycle report against its action as it will be when the report is
    /// committed: after `ending`, the session the report's new session replaces, has ended.
    /// `Ok(Some(seq))`: a duplicate of the report at `seq`.
    fn check_lifecycle(
        &self,
        e: &LifecycleEvent,
        ending: Option<&SessionInfo>,
    ) -> Result<Option<Seq>, HubError> {
        let Some(head) = self.state.action_head(e.action_id) else {
            e.media.check(None, e.state).map_err(transition_error)?;
            return Ok(None);
        };
        let fixed = [
            ("actionMediaType", head.media != e.media),
            ("actionMapId", head.action_map_id != e.action_map_id),
            (
                "actionMapVersion",
                head.action_map_version != e.action_map_version,
            ),
            ("customerId", head.customer_id != e.customer_id),
        ];
        if let Some((field, _)) = fixed.into_iter().find(|(_, changed)| *changed) {
            return Err(HubError::invalid_field(
                field,
                format!("`{field}` differs from the action's earlier events; it may not change"),
            ));
        }
        // Ending the session first moves the action to `ignored`, a terminal state, so
        // nothing may follow it; refused now, the report changes nothing.
        if ending.is_some_and(|old| self.ignores_at_end(&head, old)) {
            return Err(transition_error(
                head.media
                    .check(Some(ActionState::Ignored), e.state)
                    .expect_err("nothing follows a terminal state"),
            ));
        }
        if head.state == e.state && e.event_id.is_none() {
            return Ok(Some(head.seq));
        }
        head.media
            .check(Some(head.state), e.state)
            .map_err(transition_error)?;
        Ok(None)
    }

    /// Whether ending `session` moves the action to `ignored` (see [`Hub::end_session`]).
    fn ignores_at_end(&self, action: &ActionHead, session: &SessionInfo) -> bool {
        self.config.auto_ignore_on_session_end
            && action.state == ActionState::Offered
            && action.session_id == session.id
    }

    /// Ends a session: `session:ended`, then its still-offered actions move to `ignored`.
    fn end_session(
        &self,
        seq: &mut Sequencer,
        customer: CustomerId,
        session: SessionInfo,
        reason: EndReason,
        now: Millis,
    ) {
        let ended_at = match reason {
            EndReason::Idle => session.last_seen,
            EndReason::Replaced | EndReason::Signout => now,
        };
        self.commit(
            seq,
            Body::SessionEnded {
                customer_id: customer,
                session_id: session.id,
                user_id: self.state.user_of(customer),
                started_at: session.started_at,
                ended_at,
                pages_viewed: session.pages_viewed,
                reason,
            },
            now,
        );
        if !self.config.auto_ignore_on_session_end {
            return;
        }
        for offered in self.state.offered_actions(customer, session.id) {
            let mut data = serde_json::Map::new();
            data.insert("reason".into(), "session_ended".into());
            let ignored = LifecycleEvent {
                state: ActionState::Ignored,
                error_code: None,
                error_message: None,
                event_id: None,
                data: Some(EventData::from_map(&data)),
                ..offered
            };
            self.commit(seq, Body::Lifecycle(ignored), now);
        }
    }

    /// Gives an event the next seq, applies it, retains it and queues it for the pipeline.
    fn commit(&self, seq: &mut Sequencer, body: Body, now: Millis) -> Seq {
        let next = seq.last_seq.next();
        seq.last_seq = next;
        let published = Published {
            seq: next,
            timestamp: now,
            body,
        };
        self.state.apply(&published);
        let customer = published.body.customer_id();
        let record = Arc::new(Record {
            seq: next,
            timestamp: now,
            keys: published.body.keys(),
            event_id: published.body.event_id().map(Box::from),
            frame: WireFrame::text(&published.to_frame()),
        });
        if let Some(event_id) = &record.event_id {
            seq.dedupe.insert(customer, event_id.clone(), next);
        }
        let evicted = self.retention.write().push(record.clone(), now);
        seq.dedupe.forget(&evicted);
        seq.batch.push(record);
        self.metrics.events_accepted.inc();
        next
    }

    /// Ends idle sessions, drops history and actions past the retention age, and forgets
    /// customers (and profiles) idle past the visitor age. Runs on a blocking thread. Each
    /// step finds its work in an index (or, for actions, in a scan without the sequencer
    /// lock) and does it a chunk per hold of the lock, so a publish waits for one chunk at
    /// most; whatever a sweep leaves, the next one takes.
    pub fn sweep(&self) {
        let now = now_millis();
        let idle_cutoff = now - self.config.session_idle_timeout.as_millis() as Millis;
        for _ in 0..SWEEP_ROUNDS {
            let mut seq = self.sequencer.lock();
            let idle = self.state.idle_sessions(idle_cutoff, SWEEP_CHUNK);
            let more = idle.len() == SWEEP_CHUNK;
            for (customer, session) in idle {
                self.end_session(&mut seq, customer, session, EndReason::Idle, now);
            }
            self.hand_off(&mut seq, None);
            drop(seq);
            if !more {
                break;
            }
        }
        for _ in 0..SWEEP_ROUNDS {
            let mut seq = self.sequencer.lock();
            let evicted = self.retention.write().evict_aged(now, SWEEP_RECORDS);
            seq.dedupe.forget(&evicted);
            drop(seq);
            // The records are freed here, without the lock.
            if evicted.len() < SWEEP_RECORDS {
                break;
            }
        }
        // Find old actions without the lock; forget them under it, so a snapshot (which
        // starts under the lock) never sees half an eviction.
        let age_cutoff = now - self.config.retention_age.as_millis() as Millis;
        for old in self.state.actions_before(age_cutoff).chunks(SWEEP_RECORDS) {
            let _seq = self.sequencer.lock();
            self.state.evict_actions(old, age_cutoff);
        }
        // Forgetting idle customers is the sweeper's choice, made with its clock, so it is
        // logged like a visitor change: recovery repeats it rather than deciding again.
        let visitor_cutoff = now - self.config.visitor_idle_age.as_millis() as Millis;
        for _ in 0..SWEEP_ROUNDS {
            let mut seq = self.sequencer.lock();
            let idle = self.state.idle_customers(visitor_cutoff, SWEEP_CHUNK);
            if idle.is_empty() {
                break;
            }
            let more = idle.len() == SWEEP_CHUNK;
            let op = AdminOp::Evict { customer_ids: idle };
            self.state.apply_admin(&op, seq.last_seq);
            if !log_admin(&mut seq, op, None) || !more {
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

    /// How often [`Hub::sweep`] should run.
    pub fn sweep_interval(&self) -> Duration {
        (self.config.session_idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// Subscribes with a snapshot. The subscription is filed paused after `at`, the latest
    /// seq, with `subscribed(at)` queued; the snapshot is then built on a blocking thread,
    /// without the sequencer lock, and sent as the subscription goes live (see
    /// [`Hub::send_snapshot`]). Returns the start seq.
    pub fn subscribe_with_snapshot(
        self: &Arc<Self>,
        conn: ConnId,
        req: &SubscribeRequest,
        subscribed: impl FnOnce(Seq) -> String,
    ) -> Result<Seq, HubError> {
        let at = self.latest_seq();
        let start = self.fanout.subscribe(
            conn,
            new_sub(req),
            Start::Paused(at),
            self.config.max_subscriptions_per_connection,
            |start| vec![WireFrame::text(&subscribed(start))],
        )?;
        let (hub, req) = (self.clone(), req.clone());
        tokio::task::spawn_blocking(move || hub.send_snapshot(conn, &req, at));
        Ok(start)
    }

    /// Builds a subscription's snapshot as of `at` and makes the subscription live after
    /// it. The snapshot holds the matching actions whose latest change is at or before
    /// `at`; every later change is an event after `at`, which the retained history brings
    /// behind the snapshot, as for a `since` replay: nothing missed, nothing sent twice.
    fn send_snapshot(&self, conn: ConnId, req: &SubscribeRequest, at: Seq) {
        let keep = |r: &Record| selects(req.topics, &req.filter, r, &self.state);
        let frames = |after: Seq, upto: Seq| {
            let retention = self.retention.read();
            retention.covers(after).then(|| {
                let (records, last) = retention.scan(after, upto, usize::MAX, usize::MAX, keep);
                (
                    records.iter().map(|r| r.frame.clone()).collect::<Vec<_>>(),
                    last,
                )
            })
        };
        let mut lead = self.snapshot_frames(req, at);
        let mut cursor = at;
        // Most of the catching up happens here, outside the index lock, so that go_live
        // takes only the last stretch under it. A `once` subscription leaves it all to
        // go_live, which fires it on the first event.
        if !req.once {
            let Some((caught_up, last)) = frames(at, self.fanout.watermark()) else {
                return self.fanout.close_slow(conn);
            };
            lead.extend(caught_up);
            cursor = last;
        }
        let went = self
            .fanout
            .go_live_after(conn, &req.sub, lead, |watermark| {
                frames(cursor, watermark).map(|(tail, _)| tail)
            });
        if went == GoLive::FellBehind {
            self.fanout.close_slow(conn);
        }
    }

    /// The `snapshot` frames for a subscription: its matching actions as of `at`, in
    /// chunks of at most [`SNAPSHOT_CHUNK_ACTIONS`], each with the customers of its
    /// actions not named before (the first also those the filter names); every frame but
    /// the last says `"more": true`.
    fn snapshot_frames(&self, req: &SubscribeRequest, at: Seq) -> Vec<WireFrame> {
        let filter = &req.filter;
        let narrowed: Option<Vec<CustomerId>> = match (&filter.customer_ids, &filter.user_ids) {
            (Some(customers), _) => Some(customers.clone()),
            (None, Some(users)) => Some(HubState::distinct(
                users.iter().flat_map(|u| self.state.customers_of_user(u)),
            )),
            (None, None) => None,
        };
        let selected = self.state.select_actions(narrowed.as_deref(), at, |e| {
            snapshot_matches(req.topics, filter, e, &self.state)
        });
        let mut named = HashSet::new();
        let mut customers_of = |first: Vec<CustomerId>, actions: &[(Seq, Value, CustomerId)]| {
            let ids = first.into_iter().chain(actions.iter().map(|(_, _, c)| *c));
            ids.filter(|c| named.insert(*c))
                .filter_map(|c| self.state.customer_identity(c))
                .collect::<Vec<Value>>()
        };
        let mut chunks: Vec<Vec<(Seq, Value, CustomerId)>> = Vec::new();
        let mut selected = selected.into_iter().peekable();
        while selected.peek().is_some() || chunks.is_empty() {
            chunks.push(selected.by_ref().take(SNAPSHOT_CHUNK_ACTIONS).collect());
        }
        let mut first = narrowed.unwrap_or_default();
        let last = chunks.len() - 1;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let customers = customers_of(std::mem::take(&mut first), &chunk);
                let actions = chunk.into_iter().map(|(_, view, _)| view).collect();
                let frame = protocol::snapshot(&req.sub, at, actions, customers, i < last);
                WireFrame::text(&frame)
            })
            .collect()
    }

    /// Closes the pipeline's queue, so the thread ends after the batches already queued.
    /// The door closes first: publishers waiting for room are turned away, and one that
    /// already holds room finds the pipeline gone when it takes the sequencer lock, so it
    /// commits nothing (see `Hub::sequence_with`); everything committed reaches the log.
    pub fn close_pipeline(&self) {
        self.in_flight.close();
        self.sequencer.lock().pipeline = None;
    }

    fn run_pipeline(&self, rx: std_mpsc::Receiver<Batch>, mut log: Box<dyn Log>) {
        let log = &mut *log;
        let mut records: Vec<Arc<Record>> = Vec::new();
        let mut dones = Vec::new();
        let mut written = Written::default();
        // When the oldest delivery not yet written was queued.
        let mut holding_since: Option<Instant> = None;
        // The newest seq handed to the log.
        let mut appended = self.log_status.durable();
        // While the disk is full and nothing waits to be logged: when to see again whether
        // it has room, and how long to wait after that.
        let mut full_retry = FullRetry::default();
        // Set when the hub stopped while the disk was full: nothing more may be logged
        // after what was not, so everything still queued is answered `unavailable`.
        let mut abandoned = false;
        loop {
            // The others run first: on a busy core they are what brings the next pass, and
            // a pass found waiting needs no wake-up.
            std::thread::yield_now();
            let waiting = match rx.try_recv() {
                Ok(batch) => Some(batch),
                Err(std_mpsc::TryRecvError::Empty) => None,
                Err(std_mpsc::TryRecvError::Disconnected) => break,
            };
            // Under load, writes wait for the next pass (up to MAX_WRITE_DELAY), so that a
            // connection's frames of several passes leave in one write.
            let overdue = holding_since.is_some_and(|since| since.elapsed() >= MAX_WRITE_DELAY);
            if waiting.is_none() || overdue {
                written.write_all();
                holding_since = None;
            }
            let first = match waiting {
                Some(batch) => batch,
                // Wake up now and then even when idle, so the log can sync on a timer.
                None => match rx.recv_timeout(PIPELINE_TICK) {
                    Ok(batch) => batch,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        if abandoned {
                            continue;
                        }
                        if self.log_status.is_full() {
                            // Started on a full disk: see now and then whether it has room.
                            if full_retry.due() {
                                match log.prepare() {
                                    Ok(()) => {
                                        self.log_writable();
                                        full_retry = FullRetry::default();
                                    }
                                    Err(e) => self.log_full_or_abort("preparing the log", e),
                                }
                            }
                            continue;
                        }
                        let synced =
                            self.log_or_wait("syncing the log", log, &mut written, |log| {
                                log.tick()?;
                                self.log_status.sync_if_wanted(log, appended)
                            });
                        abandoned = !synced;
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut logged = 0;
            for batch in take_pass(first, &rx) {
                records.extend(batch.records);
                dones.extend(batch.done);
                if let Some(op) = batch.admin {
                    // Logged after the events committed before it and before those after.
                    abandoned = abandoned
                        || !self.log_or_wait("appending to the log", log, &mut written, |log| {
                            log.append(&records[logged..])
                        })
                        || !self.log_or_wait("appending to the log", log, &mut written, |log| {
                            log.append_admin(&op)
                        });
                    logged = records.len();
                }
            }
            abandoned = abandoned
                || !self.log_or_wait("appending to the log", log, &mut written, |log| {
                    log.append(&records[logged..])
                });
            if abandoned {
                // Not logged, so neither delivered nor acknowledged: dropping the
                // completions answers the publishers `unavailable`.
                records.clear();
                dones.clear();
                continue;
            }
            if let Some(last) = records.last() {
                appended = last.seq;
            }
            abandoned = !self.log_or_wait("syncing the log", log, &mut written, |log| {
                self.log_status.sync_if_wanted(log, appended)
            });
            self.fanout.deliver(&records, &self.state, &mut written);
            records.clear();
            for done in dones.drain(..) {
                let _ = done.send(());
            }
            if !written.is_empty() {
                holding_since.get_or_insert_with(Instant::now);
            }
        }
        written.write_all();
        if abandoned {
            // Seqs were handed out that the log does not hold: the reservation on disk
            // stays ahead of them (a clean flush would bring it back to the last logged).
            if let Err(e) = log.sync() {
                tracing::error!(error = %e, "syncing the log at shutdown failed");
            }
        } else {
            match log.flush() {
                Ok(()) => self.log_status.mark_durable(appended),
                Err(e) => tracing::error!(error = %e, "flushing the log at shutdown failed"),
            }
        }
        self.log_status.close();
    }

    /// Runs `step` on the log until it succeeds. A full disk is waited out, retrying with a
    /// growing delay while the hub refuses publishes; any other error aborts. Returns false
    /// when the hub is shutting down while the disk is still full: `step` did not happen.
    fn log_or_wait(
        &self,
        what: &str,
        log: &mut dyn Log,
        written: &mut Written,
        mut step: impl FnMut(&mut dyn Log) -> std::io::Result<()>,
    ) -> bool {
        let mut retry = FullRetry::default();
        loop {
            match step(log) {
                Ok(()) => {
                    self.log_writable();
                    return true;
                }
                Err(e) => self.log_full_or_abort(what, e),
            }
            // What was delivered before the disk filled must not wait for it.
            written.write_all();
            while !retry.due() {
                if self.in_flight.is_closed() {
                    return false;
                }
                std::thread::sleep(PIPELINE_TICK);
            }
        }
    }

    /// The disk is full: publishes are refused until the log can write again (said loudly
    /// once). Any other error aborts.
    pub(crate) fn log_full_or_abort(&self, what: &str, e: std::io::Error) {
        if !is_disk_full(&e) {
            or_abort(what, Err(e));
            return;
        }
        if self.log_status.set_full(true) {
            self.metrics.log_writable.set(0);
            tracing::error!(
                error = %e,
                "{what} failed: THE DISK IS FULL. The hub is read-only: publishes are refused \
                 with `unavailable` until space is freed, then accepted again by themselves; \
                 reads and subscriptions keep working"
            );
        }
    }

    /// The log wrote again after a full disk: publishes are accepted again.
    fn log_writable(&self) {
        if self.log_status.set_full(false) {
            self.metrics.log_writable.set(1);
            tracing::info!("the disk has room again: publishes are accepted");
        }
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

impl Pipeline {
    /// Waits for the pipeline thread to finish its queue (after [`Hub::close_pipeline`]).
    pub fn join(mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// The hub cannot acknowledge what it could not log, nor go on as if it had.
fn or_abort(what: &str, result: std::io::Result<()>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "{what} failed; the hub cannot go on safely");
        std::process::abort();
    }
}

/// When the pipeline next tries a log that found the disk full: after 100 ms, doubling up
/// to 5 s, so a freed disk is noticed soon and a full one is not hammered.
struct FullRetry {
    at: Instant,
    delay: Duration,
}

impl Default for FullRetry {
    fn default() -> Self {
        FullRetry {
            at: Instant::now() + FIRST_FULL_RETRY,
            delay: FIRST_FULL_RETRY,
        }
    }
}

impl FullRetry {
    /// Whether it is time to try again; if so, the next try waits twice as long.
    fn due(&mut self) -> bool {
        if Instant::now() < self.at {
            return false;
        }
        self.delay = (self.delay * 2).min(MAX_FULL_RETRY);
        self.at = Instant::now() + self.delay;
        true
    }
}

const FIRST_FULL_RETRY: Duration = Duration::from_millis(100);
const MAX_FULL_RETRY: Duration = Duration::from_secs(5);

/// Records one pipeline pass takes at most (one log append and one fan-out pass serve
/// them all); a pass may end a batch beyond it, never split one.
const MAX_PASS_RECORDS: usize = 4096;

/// `first` and whatever else is already waiting, in order, up to [`MAX_PASS_RECORDS`]:
/// a batch is taken off the queue only when this pass will handle it.
fn take_pass(first: Batch, rx: &std_mpsc::Receiver<Batch>) -> Vec<Batch> {
    let mut records = first.records.len();
    let mut pass = vec![first];
    while records < MAX_PASS_RECORDS {
        let Ok(batch) = rx.try_recv() else { break };
        records += batch.records.len();
        pass.push(batch);
    }
    pass
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

/// Whether an action's latest event matches a subscription (for snapshots).
fn snapshot_matches(
    topics: TopicSet,
    filter: &Filter,
    e: &LifecycleEvent,
    state: &HubState,
) -> bool {
    let keys = e.keys();
    topics.contains(keys.topic) && filter.matches(&keys, || state.linked_users(e.customer_id))
}

/// Sends a visitor change that is not an event down the pipeline, after the events
/// committed before it; false when the pipeline is closed.
fn log_admin(seq: &mut Sequencer, op: AdminOp, done: Option<oneshot::Sender<()>>) -> bool {
    debug_assert!(
        seq.batch.is_empty(),
        "events are handed off before a change"
    );
    let batch = Batch {
        records: Vec::new(),
        admin: Some(Arc::new(op)),
        done,
    };
    seq.pipeline
        .as_ref()
        .is_some_and(|pipeline| pipeline.send(batch).is_ok())
}

/// The eventIds of retained events by customer, so forgetting a visitor's customers costs
/// what they hold rather than a walk over everyone's.
#[derive(Default)]
struct Dedupe(HashMap<CustomerId, HashMap<Box<str>, Seq>>);

impl Dedupe {
    fn get(&self, customer: CustomerId, event_id: &str) -> Option<Seq> {
        self.0.get(&customer)?.get(event_id).copied()
    }

    fn insert(&mut self, customer: CustomerId, event_id: Box<str>, seq: Seq) {
        self.0.entry(customer).or_default().insert(event_id, seq);
    }

    /// Forgets the eventIds of records that left the retained history.
    fn forget(&mut self, evicted: &[Arc<Record>]) {
        for record in evicted {
            let Some(event_id) = &record.event_id else {
                continue;
            };
            let customer = record.keys.customer;
            let Some(ids) = self.0.get_mut(&customer) else {
                continue;
            };
            if ids.get(event_id) == Some(&record.seq) {
                ids.remove(event_id);
            }
            if ids.is_empty() {
                self.0.remove(&customer);
            }
        }
    }

    fn forget_customers(&mut self, customers: &[CustomerId]) {
        for customer in customers {
            self.0.remove(customer);
        }
    }
}

/// Anonymizing's redacted copies, made before the sequencer lock is taken: seq -> (the
/// record as it was, its replacement when redacting changes it).
type Redactions = HashMap<Seq, (Arc<Record>, Option<Arc<Record>>)>;

/// A record without the identity fields, or `None` when it holds none.
fn redact(record: &Arc<Record>) -> Option<Arc<Record>> {
    let redacted = record.redact_identity();
    (redacted.frame.as_str() != record.frame.as_str()).then(|| Arc::new(redacted))
}

fn transition_error(e: TransitionError) -> HubError {
    let code = match e {
        TransitionError::Terminal { .. } => ErrorCode::ActionTerminal,
        TransitionError::NotAllowed { .. } => ErrorCode::InvalidTransition,
        TransitionError::UnknownState { .. } => ErrorCode::InvalidEvent,
    };
    let mut error = HubError::new(code, e.to_string());
    if code == ErrorCode::InvalidEvent {
        error.details = Some(json!({ "field": "actionState" }));
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first_seq: u64, len: u64) -> Batch {
        Batch {
            records: (first_seq..first_seq + len)
                .map(|seq| Arc::new(Record::erased(Seq(seq), 0)))
                .collect(),
            admin: None,
            done: None,
        }
    }

    /// Every queued batch is handled by some pass, in order, none dropped at a pass's end.
    #[test]
    fn passes_take_every_queued_batch_in_order() {
        let (tx, rx) = std_mpsc::channel();
        for i in 0..10 {
            tx.send(batch(i * 1000 + 1, 1000)).unwrap();
        }
        drop(tx);
        let mut seen = Vec::new();
        let mut passes = 0;
        while let Ok(first) = rx.recv() {
            let pass = take_pass(first, &rx);
            let records: usize = pass.iter().map(|b| b.records.len()).sum();
            assert!(
                records <= MAX_PASS_RECORDS + 1000,
                "a pass ends at its limit"
            );
            seen.extend(pass.into_iter().flat_map(|b| b.records).map(|r| r.seq.0));
            passes += 1;
        }
        assert_eq!(seen, (1..=10_000).collect::<Vec<_>>());
        assert!(passes >= 2, "the limit splits the queue into passes");
    }
}
