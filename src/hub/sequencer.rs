//! The sequencer: the one ordering authority.
//!
//! Everything that changes the hub passes here, under one lock: a publish, a visitor
//! change, a merge, a sweep. A [`Txn`] is one hold of that lock. It checks each event
//! against state (duplicates, lifecycles, identity fields), decides what the hub publishes
//! itself (session start and end, merges, actions ignored at session end), and commits
//! each: the next seq, applied to state, retained, queued for the pipeline. Hub-made events
//! are decided in the same place as the events that cause them, so they take their seqs in
//! the same order.
//!
//! A `Txn` is a function of the state, its input and the time it was given (`now`): it
//! reads no clock and nothing else that differs between two hubs fed the same input.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::clock::Millis;
use crate::error::{ErrorCode, HubError};
use crate::hub::pipeline::Batch;
use crate::hub::retention::{Forgetting, Record};
use crate::hub::state::{
    ActionHead, AdminOp, CompanyFields, ProfileFull, SessionInfo, SessionStatus,
};
use crate::hub::{Ack, Hub, Pending};
use crate::ids::{CompanyId, CustomerId, Seq, VisitorId};
use crate::ingest::event::{
    Body, EndReason, Event, EventData, LifecycleEvent, Published, VisitorEvent, VisitorKind,
};
use crate::ingest::lifecycle::{ActionState, TransitionError};
use crate::ingest::wire::WireFrame;
use crate::metrics::Limit;

/// What only the sequencer touches, behind its lock.
pub(super) struct Sequencer {
    pub(super) last_seq: Seq,
    /// The eventIds of retained events, to answer a retry with its first seq.
    pub(super) dedupe: Dedupe,
    /// Records committed by the current hold of the lock, handed to the pipeline when it
    /// ends.
    batch: Vec<Arc<Record>>,
    /// `None` once the pipeline is closed: nothing more may be committed.
    pipeline: Option<std_mpsc::Sender<Batch>>,
    /// The anonymizations and erasures since the log was last compacted, each with the
    /// seq it was logged after: the snapshot thread takes them (bounded by how many the
    /// API is asked for in one snapshot interval).
    pub(super) forgotten: Vec<(Seq, AdminOp)>,
    /// The visitors changed by this hold of the lock, each with the customer whose change
    /// it was, to evaluate against the segments before the hold hands its events off
    /// ([`Txn::settle_segments`]). Empty when there are no segments.
    touched: Vec<(VisitorId, CustomerId)>,
    /// The visitor changes logged since the event at `last_seq`, which share its place in
    /// the log: a snapshot begun now holds them, and says how many, so that a restart
    /// from it replays only those after them.
    pub(super) changes_after_last_seq: u32,
}

impl Sequencer {
    pub(super) fn new(last_seq: Seq, dedupe: Dedupe, pipeline: std_mpsc::Sender<Batch>) -> Self {
        Sequencer {
            last_seq,
            dedupe,
            batch: Vec::new(),
            pipeline: Some(pipeline),
            forgotten: Vec::new(),
            touched: Vec::new(),
            changes_after_last_seq: 0,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.pipeline.is_some()
    }

    /// Closes the pipeline's queue: the thread ends after the batches already queued.
    pub(super) fn close(&mut self) {
        self.pipeline = None;
    }
}

/// One hold of the sequencer lock: the hub, the sequencer's own fields and the time the
/// input is decided at.
pub(super) struct Txn<'a> {
    pub(super) hub: &'a Hub,
    pub(super) seq: &'a mut Sequencer,
    pub(super) now: Millis,
}

impl Txn<'_> {
    /// Sends what this hold committed to the pipeline; false if there was nothing to send
    /// (or the pipeline is gone).
    pub(super) fn hand_off(&mut self, done: Option<oneshot::Sender<()>>) -> bool {
        self.settle_segments();
        if self.seq.batch.is_empty() {
            return false;
        }
        let records = std::mem::take(&mut self.seq.batch);
        let batch = Batch {
            records,
            admin: None,
            done,
            room: None,
            sent_at: Instant::now(),
        };
        self.send(batch)
    }

    /// [`Txn::hand_off`], and what is left to wait for.
    pub(super) fn hand_off_pending(&mut self) -> Pending {
        let (done, logged) = oneshot::channel();
        let sent = self.hand_off(Some(done));
        Pending {
            done: sent.then_some(logged),
            _permit: None,
        }
    }

    /// Gives `room` back to the pipeline once it is through everything committed so far
    /// (at once when the pipeline is closed). False when the pipeline is closed.
    pub(super) fn release_after(&mut self, room: OwnedSemaphorePermit) -> bool {
        debug_assert!(self.seq.batch.is_empty(), "events are handed off first");
        self.send(Batch {
            records: Vec::new(),
            admin: None,
            done: None,
            room: Some(room),
            sent_at: Instant::now(),
        })
    }

    /// Sends a visitor change that is not an event down the pipeline, after the events
    /// committed before it; false when the pipeline is closed.
    pub(super) fn log_admin(&mut self, op: AdminOp, done: Option<oneshot::Sender<()>>) -> bool {
        debug_assert!(
            self.seq.batch.is_empty(),
            "events are handed off before a change"
        );
        let batch = Batch {
            records: Vec::new(),
            admin: Some(Arc::new(op)),
            done,
            room: None,
            sent_at: Instant::now(),
        };
        let sent = self.send(batch);
        if sent {
            self.seq.changes_after_last_seq += 1;
        }
        sent
    }

    fn send(&self, batch: Batch) -> bool {
        self.seq
            .pipeline
            .as_ref()
            .is_some_and(|pipeline| pipeline.send(batch).is_ok())
    }

    /// Checks one event against state and commits it with whatever it causes.
    pub(super) fn decide(&mut self, event: Event) -> Result<Ack, HubError> {
        let state = &self.hub.state;
        let customer = event.customer_id();
        if let Some(event_id) = event.event_id() {
            if let Some(original) = self.seq.dedupe.get(customer, event_id) {
                return Ok(Ack {
                    seq: original,
                    duplicate: true,
                });
            }
        }
        if let Event::Visitor(v) = &event {
            state
                .check_visitor_growth(v)
                .map_err(|full| profile_full(self.hub, full))?;
        }
        // A session new to the customer ends the one it replaces, then starts.
        let new_session =
            event
                .session_id()
                .and_then(|session| match state.session_status(customer, session) {
                    SessionStatus::New { replaces } => {
                        Some((session, replaces.filter(|s| s.ended.is_none())))
                    }
                    SessionStatus::Known => None,
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
                self.end_session(customer, old, EndReason::Replaced);
            }
            let user_id = match &event {
                Event::Visitor(v) if v.kind != VisitorKind::Signout && v.user_id.is_some() => {
                    v.user_id.clone()
                }
                _ => state.user_of(customer),
            };
            self.commit(Body::SessionStarted {
                customer_id: customer,
                session_id: session,
                user_id,
                started_at: self.now,
            });
        }
        let (merge, signout) = match &event {
            Event::Visitor(v) => {
                // A userId or a channel user id that another profile holds links the
                // customer to it (see `HubState::linking`): the same person.
                let merge = v
                    .links()
                    .then(|| state.merge_preview(customer, v.user_id.as_ref(), v.channels.as_ref()))
                    .flatten()
                    .map(|preview| (v.user_id.clone(), preview));
                let signout = (v.kind == VisitorKind::Signout)
                    .then_some(v.session_id)
                    .flatten();
                (merge, signout)
            }
            Event::Lifecycle(_) => (None, None),
        };
        let accepted = self.commit(event.into());
        if let Some((user_id, (visitor_id, customers))) = merge {
            self.commit(Body::Merged {
                customer_id: customer,
                visitor_id,
                user_id,
                merged_customer_ids: customers,
            });
        }
        if let Some(session) = signout {
            if let Some(open) = state.open_session(customer, session) {
                self.end_session(customer, open, EndReason::Signout);
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
        let Some(head) = self.hub.state.action_head(e.action_id) else {
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

    /// Whether ending `session` moves the action to `ignored` (see [`Txn::end_session`]).
    fn ignores_at_end(&self, action: &ActionHead, session: &SessionInfo) -> bool {
        self.hub.config.auto_ignore_on_session_end
            && action.state == ActionState::Offered
            && action.session_id == session.id
    }

    /// Ends a session: `session:ended`, then its still-offered actions move to `ignored`.
    pub(super) fn end_session(
        &mut self,
        customer: CustomerId,
        session: SessionInfo,
        reason: EndReason,
    ) {
        let state = &self.hub.state;
        let ended_at = match reason {
            EndReason::Idle => session.last_seen,
            EndReason::Replaced | EndReason::Signout => self.now,
        };
        self.commit(Body::SessionEnded {
            customer_id: customer,
            session_id: session.id,
            user_id: state.user_of(customer),
            started_at: session.started_at,
            ended_at,
            pages_viewed: session.pages_viewed,
            reason,
        });
        if !self.hub.config.auto_ignore_on_session_end {
            return;
        }
        for offered in state.offered_actions(customer, session.id) {
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
            self.commit(Body::Lifecycle(ignored));
        }
    }

    /// Gives an event the next seq, applies it, retains it and queues it for the pipeline.
    pub(super) fn commit(&mut self, body: Body) -> Seq {
        let hub = self.hub;
        let next = self.seq.last_seq.next();
        self.seq.last_seq = next;
        self.seq.changes_after_last_seq = 0;
        let published = Published {
            seq: next,
            timestamp: self.now,
            body,
        };
        let company = self.company_before(&published.body);
        hub.state.apply(&published);
        self.touch_segments(&published.body);
        if let Some(company) = company {
            self.touch_company(company, published.body.customer_id());
        }
        let customer = published.body.customer_id();
        let record = Arc::new(Record {
            seq: next,
            timestamp: self.now,
            keys: published.body.keys(),
            event_id: published.body.event_id().map(Box::from),
            frame: WireFrame::text(&published.to_frame()),
        });
        if let Some(event_id) = &record.event_id {
            self.seq.dedupe.insert(customer, event_id.clone(), next);
        }
        let evicted = hub.retention.write().push(record.clone(), self.now);
        self.seq.dedupe.forget(&evicted);
        self.seq.batch.push(record);
        hub.metrics.events_accepted.inc();
        next
    }

    /// Notes the visitors an event changed, for [`Txn::settle_segments`]: the visitor of
    /// its customer, the customer alone (which an identity event may have linked into
    /// another profile), and for a merge every visitor it folded.
    fn touch_segments(&mut self, body: &Body) {
        if matches!(body, Body::Segment { .. }) || !self.hub.state.has_segments() {
            return;
        }
        let state = &self.hub.state;
        let customer = body.customer_id();
        self.touch_visitor(state.visitor_of(customer), customer);
        self.touch_visitor(VisitorId::of_first_customer(customer), customer);
        if let Body::Merged {
            merged_customer_ids,
            ..
        } = body
        {
            for c in merged_customer_ids {
                self.touch_visitor(VisitorId::of_first_customer(*c), customer);
            }
        }
    }

    /// The company an event names, with its fields before the event, when a segment reads
    /// companies: for [`Txn::touch_company`] once the event is applied.
    pub(super) fn company_before(&self, body: &Body) -> Option<(CompanyId, CompanyFields)> {
        let Body::Visitor(VisitorEvent {
            company: Some(company),
            ..
        }) = body
        else {
            return None;
        };
        let before = self.hub.state.company_fields(&company.id)?;
        Some((company.id.clone(), before))
    }

    /// Notes every member of a company whose name or attributes an input just changed:
    /// a segment that reads companies may hold them differently now, though their own
    /// profiles did not change.
    pub(super) fn touch_company(
        &mut self,
        (company, before): (CompanyId, CompanyFields),
        customer: CustomerId,
    ) {
        let state = &self.hub.state;
        if state
            .company_fields(&company)
            .is_some_and(|now| now == before)
        {
            return;
        }
        for visitor in state.company_members(&company) {
            self.touch_visitor(visitor, customer);
        }
    }

    /// Notes a visitor a change is about to move or just moved, for
    /// [`Txn::settle_segments`].
    pub(super) fn touch_visitor(&mut self, visitor: VisitorId, customer: CustomerId) {
        if !self.seq.touched.iter().any(|(v, _)| *v == visitor) {
            self.seq.touched.push((visitor, customer));
        }
    }

    /// Evaluates the visitors this hold changed against the segments and commits a
    /// `segment:entered` or `segment:left` for each membership that moved, in the order
    /// the visitors were changed and then by segment id. Called before every hand-off, so
    /// a hold of the lock never ends with a membership that its profile contradicts (what
    /// a snapshot's rebuilt members rely on).
    pub(super) fn settle_segments(&mut self) {
        let touched = std::mem::take(&mut self.seq.touched);
        for (visitor, customer) in touched {
            for (segment_id, entered) in self.hub.state.segment_moves(visitor) {
                self.commit(Body::Segment {
                    entered,
                    segment_id,
                    visitor_id: visitor,
                    customer_id: customer,
                });
            }
        }
    }

    /// Erases (delete) or redacts (anonymize) the retained history of a visitor change.
    /// Anonymizing swaps in the copies redacted beforehand, and redacts here only what
    /// changed since (events that arrived, records another change replaced).
    pub(super) fn forget_in_history(&mut self, op: &AdminOp, redactions: &Redactions) {
        let Some(forgetting) = Forgetting::of(op) else {
            // Nothing the other changes touch is in the history's frames.
            return;
        };
        let customers = forgetting.customers();
        self.hub
            .retention
            .write()
            .rewrite_customers(customers, forgetting.erases(), |record| {
                match redactions.get(&record.seq) {
                    Some((was, redacted)) if Arc::ptr_eq(was, record) => redacted.clone(),
                    _ => forgetting.record(record).map(Arc::new),
                }
            });
        if forgetting.erases() {
            self.seq.dedupe.forget_customers(customers);
        }
        // The log still holds what was forgotten: on one node the snapshot thread compacts
        // it after the next snapshot; in a cluster the next shared snapshot purges the
        // stream below itself (the applier takes these to know it should).
        self.seq.forgotten.push((self.seq.last_seq, op.clone()));
    }
}

/// The refusal of a change that would make a profile hold more than its limits.
pub(super) fn profile_full(hub: &Hub, full: ProfileFull) -> HubError {
    hub.metrics.limit_hit(Limit::ProfileSize);
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

/// The eventIds of retained events by customer, so forgetting a visitor's customers costs
/// what they hold rather than a walk over everyone's.
#[derive(Default)]
pub(super) struct Dedupe(HashMap<CustomerId, HashMap<Box<str>, Seq>>);

impl Dedupe {
    fn get(&self, customer: CustomerId, event_id: &str) -> Option<Seq> {
        self.0.get(&customer)?.get(event_id).copied()
    }

    pub(super) fn insert(&mut self, customer: CustomerId, event_id: Box<str>, seq: Seq) {
        self.0.entry(customer).or_default().insert(event_id, seq);
    }

    /// Forgets the eventIds of records that left the retained history.
    pub(super) fn forget(&mut self, evicted: &[Arc<Record>]) {
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
pub(super) type Redactions = HashMap<Seq, (Arc<Record>, Option<Arc<Record>>)>;

/// A record as anonymizing keeps it, or `None` when that changes nothing.
pub(super) fn redact(record: &Arc<Record>) -> Option<Arc<Record>> {
    record.anonymized().map(Arc::new)
}
