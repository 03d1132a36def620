//! The hub's in-memory state: customers (identity, sessions), visitor profiles, actions
//! (current state and transitions), and per action-map counters.
//!
//! The state changes only through [`HubState::apply`], which takes a published event and is
//! deterministic: applying the same events in seq order always builds the same state, so a
//! log replay rebuilds it. Only the sequencer calls `apply` (under its lock); HTTP handlers,
//! snapshots and the fan-out read concurrently through the methods here, which never hold a
//! map entry while touching another entry of the same map.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::ids::{ActionId, ActionMapId, CustomerId, Seq, SessionId};
use crate::ingest::event::{
    format_millis, serialize_lifecycle, Body, EndReason, EventData, LifecycleEvent, Millis,
    Published, VisitorEvent, VisitorKind,
};
use crate::ingest::lifecycle::{ActionState, MediaType};
use crate::store::codec::{Dec, DecodeError, Enc};

/// Sessions remembered per customer; older ones are forgotten.
const MAX_SESSIONS_PER_CUSTOMER: usize = 32;
/// Page views and track events remembered per session; older ones are forgotten.
const MAX_ACTIVITY_PER_SESSION: usize = 50;
/// Most user ids one profile links. What a browser can make a profile hold is bounded, so
/// one token cannot grow the hub, and every identify costs the same however old the
/// profile is (docs/protocol.md, "Limits").
pub const MAX_USER_IDS_PER_PROFILE: usize = 32;
/// Most customers (browsers) one profile holds, merges included.
pub const MAX_CUSTOMERS_PER_PROFILE: usize = 100;
/// Largest a profile's `traits`, and its `channels`, may grow, as JSON.
pub const MAX_PROFILE_OBJECT_BYTES: usize = 16 * 1024;

/// How sure the hub is of who a customer is, weakest first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum IdentityState {
    Anonymous,
    Recognized,
    Authenticated,
}

impl IdentityState {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityState::Anonymous => "anonymous",
            IdentityState::Recognized => "recognized",
            IdentityState::Authenticated => "authenticated",
        }
    }
}

/// One web session of a customer.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub id: SessionId,
    pub started_at: Millis,
    pub last_seen: Millis,
    pub ended: Option<(Millis, EndReason)>,
    pub pages_viewed: u64,
    /// The newest page views and track events, oldest first, at most
    /// [`MAX_ACTIVITY_PER_SESSION`].
    pub activity: VecDeque<Activity>,
}

/// One page view or custom event within a session.
#[derive(Clone, Debug)]
pub struct Activity {
    pub at: Millis,
    pub kind: VisitorKind,
    /// The page (`page` events) or the event's name and properties (`track`).
    pub detail: Value,
}

/// One browser identity.
#[derive(Clone, Debug)]
pub struct Customer {
    pub identity: IdentityState,
    /// The site's user id this customer last identified as.
    pub user_id: Option<String>,
    /// The visitor profile this customer belongs to, once linked to a user id.
    pub visitor_id: Option<CustomerId>,
    /// Newest last; at most [`MAX_SESSIONS_PER_CUSTOMER`].
    pub sessions: VecDeque<SessionInfo>,
    /// The open session, if any.
    pub current_session: Option<SessionId>,
    /// Actions of this customer still held in state.
    pub actions: Vec<ActionId>,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// The seq of the event that last changed this customer (for snapshots).
    pub stamp: Seq,
}

/// One visitor: the customers (browsers) known to be the same person.
#[derive(Clone, Debug)]
pub struct Profile {
    pub user_ids: Arc<[String]>,
    pub customers: Vec<CustomerId>,
    pub traits: Map<String, Value>,
    pub channels: Map<String, Value>,
    /// The seq of the event that last changed this profile (for snapshots).
    pub stamp: Seq,
}

/// A state an action entered, with the event that put it there.
#[derive(Clone, Copy, Debug)]
pub struct Transition {
    pub state: ActionState,
    pub seq: Seq,
    pub timestamp: Millis,
}

/// One web action.
#[derive(Clone, Debug)]
pub struct Action {
    /// The latest lifecycle event, as published.
    pub latest: LifecycleEvent,
    pub transitions: Vec<Transition>,
}

impl Action {
    pub fn last(&self) -> Transition {
        *self
            .transitions
            .last()
            .expect("an action has at least one transition")
    }

    pub fn is_terminal(&self) -> bool {
        self.latest.media.is_terminal(self.latest.state)
    }
}

/// What the sequencer needs to know of an action to check a new report against it.
#[derive(Clone, Copy, Debug)]
pub struct ActionHead {
    pub media: MediaType,
    pub action_map_id: ActionMapId,
    pub action_map_version: u32,
    pub customer_id: CustomerId,
    pub session_id: SessionId,
    pub state: ActionState,
    pub seq: Seq,
}

/// The per-map counters, as a snapshot copies them.
pub type SnapshotMaps = BTreeMap<(ActionMapId, u32), MapCounts>;

/// Per (action map, version) counts of actions that reached each state.
#[derive(Clone, Debug, PartialEq)]
pub struct MapCounts {
    media: MediaType,
    counts: BTreeMap<ActionState, u64>,
}

/// Everything the hub knows, in memory.
#[derive(Default)]
pub struct HubState {
    actions: DashMap<ActionId, Action>,
    customers: DashMap<CustomerId, Customer>,
    /// Profiles by visitor id.
    profiles: DashMap<CustomerId, Profile>,
    /// userId -> visitor id.
    users: DashMap<String, CustomerId>,
    maps: Mutex<BTreeMap<(ActionMapId, u32), MapCounts>>,
    /// The preimages of a snapshot being written (see [`HubState::begin_snapshot`]).
    cow: Mutex<Option<CopyOnWrite>>,
    /// Whether `cow` is set: one atomic load on every change when no snapshot runs.
    cow_on: AtomicBool,
    /// Customers ordered by when they were last seen and by when their open session was,
    /// so the sweeper and the visitor list never scan every customer. A leaf lock: nothing
    /// is taken while it is held.
    recency: Mutex<Recency>,
}

/// The orderings of [`HubState::recency`]; derived from the customers, never snapshotted.
#[derive(Default)]
struct Recency {
    /// (last seen, customer), for every customer.
    seen: BTreeSet<(Millis, CustomerId)>,
    /// (the open session's last event, customer), for customers with an open session.
    open: BTreeSet<(Millis, CustomerId)>,
}

/// The customers of a [`Recency`] set whose time is before `cutoff`, oldest first, at most
/// `max`.
fn idle_before(
    set: &BTreeSet<(Millis, CustomerId)>,
    cutoff: Millis,
    max: usize,
) -> Vec<CustomerId> {
    set.range(..(cutoff, CustomerId(uuid::Uuid::nil())))
        .take(max)
        .map(|(_, id)| *id)
        .collect()
}

/// Where a customer stands in [`Recency`]: its last seen and its open session's.
type RecencyKey = (Millis, Option<Millis>);

fn recency_key(c: &Customer) -> RecencyKey {
    let open = c
        .current_session
        .and_then(|open| c.sessions.iter().find(|s| s.id == open))
        .map(|s| s.last_seen);
    (c.last_seen, open)
}

impl Recency {
    fn update(&mut self, id: CustomerId, before: Option<RecencyKey>, after: Option<RecencyKey>) {
        if before == after {
            return;
        }
        if let Some((seen, open)) = before {
            self.seen.remove(&(seen, id));
            if let Some(open) = open {
                self.open.remove(&(open, id));
            }
        }
        if let Some((seen, open)) = after {
            self.seen.insert((seen, id));
            if let Some(open) = open {
                self.open.insert((open, id));
            }
        }
    }
}

impl HubState {
    // ---- reads for the sequencer ----

    pub fn action_head(&self, id: ActionId) -> Option<ActionHead> {
        self.actions.get(&id).map(|a| ActionHead {
            media: a.latest.media,
            action_map_id: a.latest.action_map_id,
            action_map_version: a.latest.action_map_version,
            customer_id: a.latest.customer_id,
            session_id: a.latest.session_id,
            state: a.latest.state,
            seq: a.last().seq,
        })
    }

    /// Whether the customer has seen this session before, and its open session if another.
    pub fn session_status(&self, customer: CustomerId, session: SessionId) -> SessionStatus {
        let Some(c) = self.customers.get(&customer) else {
            return SessionStatus::New { replaces: None };
        };
        if c.sessions.iter().any(|s| s.id == session) {
            return SessionStatus::Known;
        }
        let replaces = c
            .current_session
            .and_then(|open| c.sessions.iter().find(|s| s.id == open).cloned());
        SessionStatus::New { replaces }
    }

    /// The customer's open session, if it is `session`.
    pub fn open_session(&self, customer: CustomerId, session: SessionId) -> Option<SessionInfo> {
        let c = self.customers.get(&customer)?;
        if c.current_session != Some(session) {
            return None;
        }
        c.sessions.iter().find(|s| s.id == session).cloned()
    }

    pub fn user_of(&self, customer: CustomerId) -> Option<String> {
        self.customers
            .get(&customer)
            .and_then(|c| c.user_id.clone())
    }

    pub fn identity_of(&self, customer: CustomerId) -> Option<IdentityState> {
        self.customers.get(&customer).map(|c| c.identity)
    }

    /// The `offered` actions of a session, as the events that would move them to `ignored`.
    pub fn offered_actions(&self, customer: CustomerId, session: SessionId) -> Vec<LifecycleEvent> {
        let ids = match self.customers.get(&customer) {
            Some(c) => c.actions.clone(),
            None => return Vec::new(),
        };
        let mut offered: Vec<(Seq, LifecycleEvent)> = ids
            .into_iter()
            .filter_map(|id| {
                let a = self.actions.get(&id)?;
                (a.latest.session_id == session && a.latest.state == ActionState::Offered)
                    .then(|| (a.last().seq, a.latest.clone()))
            })
            .collect();
        offered.sort_by_key(|(seq, _)| *seq);
        offered.into_iter().map(|(_, e)| e).collect()
    }

    /// If linking `customer` to `user_id` would merge it with other customers: the profile's
    /// visitor id and every customer it would then hold.
    pub fn merge_preview(
        &self,
        customer: CustomerId,
        user_id: &str,
    ) -> Option<(CustomerId, Vec<CustomerId>)> {
        let target = *self.users.get(user_id)?;
        let mine = self.customers.get(&customer).and_then(|c| c.visitor_id);
        if mine == Some(target) {
            return None;
        }
        let mut customers = self.profiles.get(&target)?.customers.clone();
        let joining = match mine {
            Some(other) => self
                .profiles
                .get(&other)
                .map(|p| p.customers.clone())
                .unwrap_or_default(),
            None => vec![customer],
        };
        for c in joining {
            if !customers.contains(&c) {
                customers.push(c);
            }
        }
        Some((target, customers))
    }

    /// Open sessions with no event since `cutoff`, the longest idle first, at most `max`.
    /// Read from the recency index: costs what it returns, not the number of customers.
    pub fn idle_sessions(&self, cutoff: Millis, max: usize) -> Vec<(CustomerId, SessionInfo)> {
        let ids = idle_before(&self.recency.lock().open, cutoff, max);
        ids.into_iter()
            .filter_map(|id| {
                let c = self.customers.get(&id)?;
                let open = c.current_session?;
                let s = c.sessions.iter().find(|s| s.id == open)?;
                Some((id, s.clone()))
            })
            .collect()
    }

    /// Customers not seen since `cutoff`, the longest idle first, at most `max`.
    pub fn idle_customers(&self, cutoff: Millis, max: usize) -> Vec<CustomerId> {
        idle_before(&self.recency.lock().seen, cutoff, max)
    }

    /// Up to `max` customers seen before the position `before` (exclusive; `None` from the
    /// newest), most recently seen first, and the position to continue from. Copied out
    /// in chunks, so a reader walking every customer holds the index only briefly.
    pub fn customers_by_recency(
        &self,
        before: Option<(Millis, CustomerId)>,
        max: usize,
    ) -> Vec<(Millis, CustomerId)> {
        let recency = self.recency.lock();
        match before {
            Some(key) => recency.seen.range(..key).rev().take(max).copied().collect(),
            None => recency.seen.iter().rev().take(max).copied().collect(),
        }
    }

    fn recency_of(&self, id: CustomerId) -> Option<RecencyKey> {
        self.customers.get(&id).map(|c| recency_key(&c))
    }

    /// The user ids linked to a customer's profile (for `where.userId`).
    pub fn linked_users(&self, customer: CustomerId) -> Option<Arc<[String]>> {
        let visitor = self.customers.get(&customer)?.visitor_id?;
        self.profiles.get(&visitor).map(|p| p.user_ids.clone())
    }

    /// The customers of the profile a user id belongs to.
    pub fn customers_of_user(&self, user_id: &str) -> Vec<CustomerId> {
        let Some(visitor) = self.users.get(user_id).map(|v| *v) else {
            return Vec::new();
        };
        self.profiles
            .get(&visitor)
            .map(|p| p.customers.clone())
            .unwrap_or_default()
    }

    pub fn action_count(&self) -> usize {
        self.actions.len()
    }

    // ---- the limits of what a profile holds ----

    /// Refuses a visitor event that would make a profile hold more than its limits. Costs
    /// the same however old the profile is: what it copies is bounded by those limits.
    pub fn check_visitor_growth(&self, e: &VisitorEvent) -> Result<(), ProfileFull> {
        let links = matches!(
            e.kind,
            VisitorKind::Identify | VisitorKind::Signin | VisitorKind::Userinfo
        );
        let Some(user_id) = e.user_id.as_deref().filter(|_| links) else {
            return Ok(());
        };
        let target = self.users.get(user_id).map(|v| *v);
        let mine = self
            .customers
            .get(&e.customer_id)
            .and_then(|c| c.visitor_id);
        if target.is_some() && target == mine && e.traits.is_none() && e.channels.is_none() {
            return Ok(());
        }
        // What `link` and `apply_visitor` would make of it.
        let mut after = match (target, mine) {
            (Some(t), Some(m)) if t != m => self.holdings(t).folding(self.holdings(m)),
            (Some(v), _) | (None, Some(v)) => self.holdings(v),
            (None, None) => Holdings::default(),
        };
        after.add_user(user_id);
        after.add_customer(e.customer_id);
        if let Some(traits) = &e.traits {
            after.traits.extend(traits.clone());
        }
        if let Some(channels) = &e.channels {
            after.channels.extend(channels.clone());
        }
        after.check()
    }

    /// Refuses merging visitor `source` into `target` past a profile's limits.
    pub fn check_merge_growth(
        &self,
        source: CustomerId,
        target: CustomerId,
    ) -> Result<(), ProfileFull> {
        self.holdings(target).folding(self.holdings(source)).check()
    }

    /// Refuses merging `traits` into a visitor's traits past a profile's limits.
    pub fn check_traits_growth(
        &self,
        visitor: CustomerId,
        traits: &Map<String, Value>,
    ) -> Result<(), ProfileFull> {
        let mut after = self.holdings(visitor);
        after.traits.extend(traits.clone());
        after.check()
    }

    /// A copy of what a visitor's profile holds (a lone customer: itself).
    fn holdings(&self, visitor: CustomerId) -> Holdings {
        match self.profiles.get(&visitor) {
            Some(p) => Holdings {
                user_ids: p.user_ids.to_vec(),
                customers: p.customers.clone(),
                traits: p.traits.clone(),
                channels: p.channels.clone(),
            },
            None => Holdings {
                customers: vec![visitor],
                ..Holdings::default()
            },
        }
    }

    // ---- the one way state changes ----

    /// Applies one published event. Deterministic: depends only on the state and the event.
    pub fn apply(&self, p: &Published) {
        // Only the event's own customer can change where it stands in the recency index.
        let customer = p.body.customer_id();
        let before = self.recency_of(customer);
        self.apply_body(p);
        let after = self.recency_of(customer);
        self.recency.lock().update(customer, before, after);
    }

    fn apply_body(&self, p: &Published) {
        let (at, seq) = (p.timestamp, p.seq);
        match &p.body {
            Body::Lifecycle(e) => {
                self.touch(e.customer_id, Some(e.session_id), at, seq);
                self.apply_lifecycle(e, seq, at);
            }
            Body::Visitor(e) => {
                self.touch(e.customer_id, e.session_id, at, seq);
                self.apply_visitor(e, at, seq);
            }
            Body::SessionStarted {
                customer_id,
                session_id,
                started_at,
                ..
            } => {
                self.touch(*customer_id, None, at, seq);
                let mut c = self.customer_mut(*customer_id, seq).expect("touched above");
                c.sessions.push_back(SessionInfo {
                    id: *session_id,
                    started_at: *started_at,
                    last_seen: *started_at,
                    ended: None,
                    pages_viewed: 0,
                    activity: VecDeque::new(),
                });
                while c.sessions.len() > MAX_SESSIONS_PER_CUSTOMER {
                    c.sessions.pop_front();
                }
                c.current_session = Some(*session_id);
            }
            Body::SessionEnded {
                customer_id,
                session_id,
                ended_at,
                reason,
                ..
            } => {
                if let Some(mut c) = self.customer_mut(*customer_id, seq) {
                    if let Some(s) = c.sessions.iter_mut().find(|s| s.id == *session_id) {
                        s.ended = Some((*ended_at, *reason));
                    }
                    if c.current_session == Some(*session_id) {
                        c.current_session = None;
                    }
                }
            }
            // A merge caused by identify/signin/userinfo already happened when that event
            // was applied, and this finds everyone in place; one asked for through the API
            // happens here.
            Body::Merged {
                visitor_id,
                merged_customer_ids,
                ..
            } => self.merge_into(*visitor_id, merged_customer_ids, seq),
        }
    }

    /// Creates the customer if new, and marks it (and a known session) as seen.
    fn touch(&self, customer: CustomerId, session: Option<SessionId>, at: Millis, seq: Seq) {
        self.save_customer(customer);
        let mut c = self.customers.entry(customer).or_insert_with(|| Customer {
            identity: IdentityState::Anonymous,
            user_id: None,
            visitor_id: None,
            sessions: VecDeque::new(),
            current_session: None,
            actions: Vec::new(),
            first_seen: at,
            last_seen: at,
            stamp: seq,
        });
        c.stamp = seq;
        c.last_seen = c.last_seen.max(at);
        if let Some(s) = session.and_then(|id| c.sessions.iter_mut().find(|s| s.id == id)) {
            s.last_seen = s.last_seen.max(at);
        }
    }

    fn apply_lifecycle(&self, e: &LifecycleEvent, seq: Seq, at: Millis) {
        let transition = Transition {
            state: e.state,
            seq,
            timestamp: at,
        };
        self.save_action(e.action_id);
        let is_new = match self.actions.get_mut(&e.action_id) {
            Some(mut action) => {
                action.latest = e.clone();
                action.transitions.push(transition);
                false
            }
            None => {
                self.actions.insert(
                    e.action_id,
                    Action {
                        latest: e.clone(),
                        transitions: vec![transition],
                    },
                );
                true
            }
        };
        if is_new {
            if let Some(mut c) = self.customer_mut(e.customer_id, seq) {
                c.actions.push(e.action_id);
            }
        }
        let mut maps = self.maps.lock();
        let counts = maps
            .entry((e.action_map_id, e.action_map_version))
            .or_insert_with(|| MapCounts {
                media: e.media,
                counts: BTreeMap::new(),
            });
        *counts.counts.entry(e.state).or_default() += 1;
    }

    fn apply_visitor(&self, e: &VisitorEvent, at: Millis, seq: Seq) {
        if matches!(e.kind, VisitorKind::Page | VisitorKind::Track) {
            self.record_activity(e, at, seq);
        }
        {
            let Some(mut c) = self.customer_mut(e.customer_id, seq) else {
                return;
            };
            let next = match e.kind {
                VisitorKind::Signin => Some(IdentityState::Authenticated),
                VisitorKind::Signout => Some(IdentityState::Anonymous),
                VisitorKind::Userinfo => Some(IdentityState::Recognized),
                VisitorKind::Identify if c.identity == IdentityState::Anonymous => {
                    Some(IdentityState::Recognized)
                }
                _ => None,
            };
            if let Some(next) = next {
                c.identity = next;
            }
            match e.kind {
                VisitorKind::Signout => c.user_id = None,
                VisitorKind::Identify | VisitorKind::Signin | VisitorKind::Userinfo => {
                    c.user_id = e.user_id.clone()
                }
                VisitorKind::Page | VisitorKind::Track => {}
            }
        }
        if let (Some(user_id), true) = (
            &e.user_id,
            matches!(
                e.kind,
                VisitorKind::Identify | VisitorKind::Signin | VisitorKind::Userinfo
            ),
        ) {
            let visitor = self.link(e.customer_id, user_id, seq);
            let mut profile = self.profile_mut(visitor, seq).expect("linked above");
            if let Some(traits) = &e.traits {
                profile.traits.extend(traits.clone());
            }
            if let Some(channels) = &e.channels {
                profile.channels.extend(channels.clone());
            }
        }
    }

    /// Applies a change that is not an event, logged after the event at `seq`.
    /// Deterministic like [`HubState::apply`], and idempotent, so a replay that meets a change
    /// a snapshot already holds may apply it again.
    pub fn apply_admin(&self, op: &AdminOp, seq: Seq) {
        match op {
            AdminOp::UpdateTraits { visitor_id, traits } => {
                self.merge_into(*visitor_id, &[], seq);
                if let Some(mut p) = self.profile_mut(*visitor_id, seq) {
                    p.traits.extend(traits.clone());
                }
            }
            AdminOp::Anonymize {
                visitor_id,
                customer_ids,
            } => {
                let users = match self.profile_mut(*visitor_id, seq) {
                    Some(mut p) => {
                        p.traits.clear();
                        p.channels.clear();
                        std::mem::replace(&mut p.user_ids, Arc::from(Vec::<String>::new()))
                    }
                    None => Arc::from(Vec::<String>::new()),
                };
                for user in users.iter() {
                    self.users.remove(user);
                }
                for id in customer_ids {
                    if let Some(mut c) = self.customer_mut(*id, seq) {
                        c.user_id = None;
                        c.identity = IdentityState::Anonymous;
                    }
                }
            }
            AdminOp::Delete {
                visitor_id,
                customer_ids,
            } => {
                self.save_profile(*visitor_id);
                if let Some((_, p)) = self.profiles.remove(visitor_id) {
                    for user in p.user_ids.iter() {
                        self.users.remove(user);
                    }
                }
                for id in customer_ids {
                    self.forget_customer(*id);
                }
            }
            AdminOp::Evict { customer_ids } => {
                for id in customer_ids {
                    let Some(visitor) = self.forget_customer(*id) else {
                        continue;
                    };
                    // A profile goes with its last customer.
                    let emptied = match self.profile_mut(visitor, seq) {
                        Some(mut p) => {
                            p.customers.retain(|c| c != id);
                            p.customers.is_empty()
                        }
                        None => false,
                    };
                    if emptied {
                        self.save_profile(visitor);
                        if let Some((_, p)) = self.profiles.remove(&visitor) {
                            for user in p.user_ids.iter() {
                                self.users.remove(user);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Removes a customer with its actions; returns its profile's visitor id, if it had one.
    fn forget_customer(&self, id: CustomerId) -> Option<CustomerId> {
        self.save_customer(id);
        let (_, c) = self.customers.remove(&id)?;
        self.recency.lock().update(id, Some(recency_key(&c)), None);
        for action in &c.actions {
            self.save_action(*action);
            self.actions.remove(action);
        }
        c.visitor_id
    }

    /// Keeps a page view or track event in its session (a track event without a session
    /// goes to the customer's open session, if any).
    fn record_activity(&self, e: &VisitorEvent, at: Millis, seq: Seq) {
        let Some(mut c) = self.customer_mut(e.customer_id, seq) else {
            return;
        };
        let Some(session) = e.session_id.or(c.current_session) else {
            return;
        };
        let Some(s) = c.sessions.iter_mut().find(|s| s.id == session) else {
            return;
        };
        let detail = match e.kind {
            VisitorKind::Page => {
                s.pages_viewed += 1;
                Value::Object(e.page.clone().unwrap_or_default())
            }
            _ => json!({ "name": e.name, "properties": e.properties }),
        };
        s.activity.push_back(Activity {
            at,
            kind: e.kind,
            detail,
        });
        while s.activity.len() > MAX_ACTIVITY_PER_SESSION {
            s.activity.pop_front();
        }
    }

    /// Links a customer to a user id's profile, merging profiles when the user id already
    /// belongs to another one. Returns the customer's visitor id.
    fn link(&self, customer: CustomerId, user_id: &str, seq: Seq) -> CustomerId {
        let target = self.users.get(user_id).map(|v| *v);
        let mine = self.customers.get(&customer).and_then(|c| c.visitor_id);
        let visitor = match (target, mine) {
            (Some(t), Some(m)) if t == m => return t,
            (None, Some(m)) => {
                self.add_user(m, user_id, seq);
                return m;
            }
            (None, None) => {
                self.save_profile(customer);
                self.profiles.insert(
                    customer,
                    Profile {
                        user_ids: Arc::from(vec![user_id.to_string()]),
                        customers: vec![customer],
                        traits: Map::new(),
                        channels: Map::new(),
                        stamp: seq,
                    },
                );
                self.users.insert(user_id.to_string(), customer);
                customer
            }
            (Some(t), None) => {
                if let Some(mut p) = self.profile_mut(t, seq) {
                    if !p.customers.contains(&customer) {
                        p.customers.push(customer);
                    }
                }
                t
            }
            (Some(t), Some(m)) => {
                // Two profiles are one person: fold the customer's profile into the user's.
                self.fold_profile(m, t, seq);
                t
            }
        };
        if let Some(mut c) = self.customer_mut(customer, seq) {
            c.visitor_id = Some(visitor);
        }
        visitor
    }

    /// Puts every customer (and the profiles they belong to) into the profile `visitor`,
    /// creating it if the visitor was a customer with no profile yet.
    fn merge_into(&self, visitor: CustomerId, customers: &[CustomerId], seq: Seq) {
        if !self.profiles.contains_key(&visitor) {
            self.save_profile(visitor);
            self.profiles.insert(
                visitor,
                Profile {
                    user_ids: Arc::from(Vec::<String>::new()),
                    customers: vec![visitor],
                    traits: Map::new(),
                    channels: Map::new(),
                    stamp: seq,
                },
            );
            if let Some(mut c) = self.customer_mut(visitor, seq) {
                c.visitor_id = Some(visitor);
            }
        }
        for &customer in customers {
            let current = self.customers.get(&customer).and_then(|c| c.visitor_id);
            match current {
                Some(v) if v == visitor => {}
                Some(other) => self.fold_profile(other, visitor, seq),
                None => {
                    if let Some(mut p) = self.profile_mut(visitor, seq) {
                        if !p.customers.contains(&customer) {
                            p.customers.push(customer);
                        }
                    }
                    if let Some(mut c) = self.customer_mut(customer, seq) {
                        c.visitor_id = Some(visitor);
                    }
                }
            }
        }
    }

    /// Moves everything of profile `source` into profile `target` and forgets `source`.
    fn fold_profile(&self, source: CustomerId, target: CustomerId, seq: Seq) {
        self.save_profile(source);
        let Some((_, source)) = self.profiles.remove(&source) else {
            return;
        };
        for u in source.user_ids.iter() {
            self.add_user(target, u, seq);
        }
        for c in &source.customers {
            if let Some(mut cust) = self.customer_mut(*c, seq) {
                cust.visitor_id = Some(target);
            }
        }
        if let Some(mut p) = self.profile_mut(target, seq) {
            for c in source.customers {
                if !p.customers.contains(&c) {
                    p.customers.push(c);
                }
            }
            for (k, v) in source.traits {
                p.traits.entry(k).or_insert(v);
            }
            for (k, v) in source.channels {
                p.channels.entry(k).or_insert(v);
            }
        }
    }

    fn add_user(&self, visitor: CustomerId, user_id: &str, seq: Seq) {
        if let Some(mut p) = self.profile_mut(visitor, seq) {
            if !p.user_ids.iter().any(|u| u == user_id) {
                let mut users = p.user_ids.to_vec();
                users.push(user_id.to_string());
                p.user_ids = users.into();
            }
        }
        self.users.insert(user_id.to_string(), visitor);
    }

    /// The actions whose last event is older than `cutoff`: a scan that takes no lock
    /// beyond one map shard at a time, so the sweeper runs it outside the sequencer lock.
    pub fn actions_before(&self, cutoff: Millis) -> Vec<ActionId> {
        self.actions
            .iter()
            .filter(|a| a.last().timestamp < cutoff)
            .map(|a| *a.key())
            .collect()
    }

    /// Forgets the given actions if their last event is still older than `cutoff`,
    /// returning how many. Called under the sequencer lock. While a snapshot is being
    /// written it forgets nothing (the sweeper tries again later): eviction is not an
    /// event, so it has no seq to stamp the customers it changes with.
    pub fn evict_actions(&self, ids: &[ActionId], cutoff: Millis) -> usize {
        if self.cow_on.load(Ordering::Acquire) {
            return 0;
        }
        let mut evicted: HashMap<CustomerId, HashSet<ActionId>> = HashMap::new();
        for id in ids {
            if let Some((_, action)) = self
                .actions
                .remove_if(id, |_, a| a.last().timestamp < cutoff)
            {
                evicted
                    .entry(action.latest.customer_id)
                    .or_default()
                    .insert(*id);
            }
        }
        // One pass over each customer's list, however many of its actions go.
        let mut count = 0;
        for (customer, gone) in evicted {
            count += gone.len();
            if let Some(mut c) = self.customers.get_mut(&customer) {
                c.actions.retain(|a| !gone.contains(a));
            }
        }
        count
    }

    // ---- views for HTTP and snapshots ----

    /// An action as the lifecycle event of its latest state plus `seq` and `timestamp`.
    pub fn action_view(&self, id: ActionId, with_transitions: bool) -> Option<Value> {
        let a = self.actions.get(&id)?;
        Some(action_json(&a, with_transitions))
    }

    /// The live (not terminal) actions of a customer, oldest first.
    pub fn live_actions(&self, customer: CustomerId) -> Vec<Value> {
        let ids = self
            .customers
            .get(&customer)
            .map(|c| c.actions.clone())
            .unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| {
                let a = self.actions.get(&id)?;
                (!a.is_terminal()).then(|| action_json(&a, false))
            })
            .collect()
    }

    /// The actions (live or recently ended) matching a predicate on their latest event,
    /// restricted to the given customers when `customers` is `Some`, and to those whose
    /// latest change is at or before `at` (an action changed later is not as it was then).
    /// Runs concurrently with the sequencer.
    pub fn select_actions(
        &self,
        customers: Option<&[CustomerId]>,
        at: Seq,
        mut keep: impl FnMut(&LifecycleEvent) -> bool,
    ) -> Vec<(Seq, Value, CustomerId)> {
        let mut out = Vec::new();
        let mut visit = |a: &Action| {
            if a.last().seq <= at && keep(&a.latest) {
                out.push((a.last().seq, action_json(a, false), a.latest.customer_id));
            }
        };
        match customers {
            Some(customers) => {
                for c in customers {
                    let ids = self
                        .customers
                        .get(c)
                        .map(|c| c.actions.clone())
                        .unwrap_or_default();
                    for id in ids {
                        if let Some(a) = self.actions.get(&id) {
                            visit(&a);
                        }
                    }
                }
            }
            None => {
                for a in self.actions.iter() {
                    visit(&a);
                }
            }
        }
        out.sort_by_key(|(seq, _, _)| *seq);
        out
    }

    /// `{"customerId", "identity": {"state", "userId"}}`, as in snapshot frames.
    pub fn customer_identity(&self, customer: CustomerId) -> Option<Value> {
        let c = self.customers.get(&customer)?;
        Some(json!({
            "customerId": customer,
            "identity": { "state": c.identity.as_str(), "userId": c.user_id },
        }))
    }

    /// The customer view of `GET /v1/customers/{id}`.
    pub fn customer_view(&self, customer: CustomerId) -> Option<Value> {
        let mut view = {
            let c = self.customers.get(&customer)?;
            let sessions: Vec<Value> = c.sessions.iter().map(session_json).collect();
            json!({
                "customerId": customer,
                "identity": { "state": c.identity.as_str(), "userId": c.user_id },
                "visitorId": c.visitor_id,
                "currentSessionId": c.current_session,
                "sessions": sessions,
                "firstSeen": format_millis(c.first_seen),
                "lastSeen": format_millis(c.last_seen),
            })
        };
        view["actions"] = self.live_actions(customer).into();
        Some(view)
    }

    /// `GET /v1/stats/action-maps`.
    pub fn action_map_stats(&self) -> Value {
        let maps = self.maps.lock();
        let list: Vec<Value> = maps
            .iter()
            .map(|((id, version), m)| {
                let counts: Map<String, Value> = m
                    .counts
                    .iter()
                    .map(|(state, n)| (state.as_str().to_string(), (*n).into()))
                    .collect();
                let offered = m.counts.get(&ActionState::Offered).copied().unwrap_or(0);
                let accepted = m.counts.get(&ActionState::Accepted).copied().unwrap_or(0);
                let rate = (offered > 0).then(|| accepted as f64 / offered as f64);
                json!({
                    "actionMapId": id,
                    "actionMapVersion": version,
                    "actionMediaType": m.media.as_str(),
                    "counts": counts,
                    "acceptRate": rate,
                })
            })
            .collect();
        json!({ "actionMaps": list })
    }

    /// The distinct customers among some (deduplicated, in first-seen order).
    pub fn distinct(customers: impl IntoIterator<Item = CustomerId>) -> Vec<CustomerId> {
        let mut seen = HashSet::new();
        customers.into_iter().filter(|c| seen.insert(*c)).collect()
    }
}

/// A change to visitors that is not an event: logged in order with the events and applied
/// by [`HubState::apply_admin`] (so a replay repeats it), never delivered to subscribers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum AdminOp {
    /// Merge attributes into a visitor's traits.
    UpdateTraits {
        visitor_id: CustomerId,
        traits: Map<String, Value>,
    },
    /// Remove traits, channels and user ids; keep the action history.
    Anonymize {
        visitor_id: CustomerId,
        customer_ids: Vec<CustomerId>,
    },
    /// Forget everything about the visitor's customers.
    Delete {
        visitor_id: CustomerId,
        customer_ids: Vec<CustomerId>,
    },
    /// Forget customers idle past the visitor age (the sweeper's choice, so logged), with
    /// their actions; a profile goes with its last customer. Their retained events stay
    /// until retention drops them.
    Evict { customer_ids: Vec<CustomerId> },
}

// ---- snapshots: copy-on-write preimages ----
//
// A snapshot at seq S must hold the state exactly as of S while the sequencer goes on
// changing it. `begin_snapshot` (under the sequencer lock) records S; from then on, the
// first change to a customer, profile or action not yet visited by the snapshot walk saves
// the value it had at S (its "preimage") before changing it. Every entity carries the seq
// of its last change (`stamp`), so "had it changed since S" is one comparison. The walk
// visits each map's keys in sorted order; for each key, under the `cow` lock, it takes the
// preimage if one was saved, else the live value if its stamp is <= S (an entity created
// after S has neither and is skipped), and then records that it has passed that key, so no
// later change saves a preimage it no longer needs. Entities removed before the walk
// collected the keys are left in the preimage table and written at the end. No lock is
// held while an entity is encoded, and the sequencer waits at most for one entity's clone.

/// Which keys of a map the snapshot walk has passed.
#[derive(Clone, Copy)]
enum Walked<K> {
    NotYet,
    Upto(K),
    All,
}

struct Preimages<K, V> {
    saved: HashMap<K, V>,
    walked: Walked<K>,
}

impl<K: Ord + Hash + Copy, V> Preimages<K, V> {
    fn new() -> Self {
        Preimages {
            saved: HashMap::new(),
            walked: Walked::NotYet,
        }
    }

    /// Whether a change to `key` must save its preimage first.
    fn wants(&self, key: &K) -> bool {
        let ahead = match &self.walked {
            Walked::NotYet => true,
            Walked::Upto(passed) => key > passed,
            Walked::All => false,
        };
        ahead && !self.saved.contains_key(key)
    }
}

struct CopyOnWrite {
    at: Seq,
    customers: Preimages<CustomerId, Customer>,
    profiles: Preimages<CustomerId, Profile>,
    actions: Preimages<ActionId, Action>,
}

/// One entity of a snapshot, handed to the writer.
pub enum SnapshotItem<'a> {
    Customer(CustomerId, &'a Customer),
    Profile(CustomerId, &'a Profile),
    Action(&'a Action),
}

fn customer_stamp(c: &Customer) -> Seq {
    c.stamp
}

fn profile_stamp(p: &Profile) -> Seq {
    p.stamp
}

fn action_stamp(a: &Action) -> Seq {
    a.last().seq
}

impl HubState {
    /// Saves the preimage of `key` if a snapshot needs it. Must be called with no entry of
    /// any map held (the snapshot walk takes `cow`, then a map entry).
    fn save<K, V>(
        &self,
        map: &DashMap<K, V>,
        key: K,
        table: fn(&mut CopyOnWrite) -> &mut Preimages<K, V>,
        stamp: fn(&V) -> Seq,
    ) where
        K: Ord + Hash + Copy,
        V: Clone,
    {
        if !self.cow_on.load(Ordering::Acquire) {
            return;
        }
        let mut cow = self.cow.lock();
        let Some(cow) = cow.as_mut() else {
            return;
        };
        let at = cow.at;
        let table = table(cow);
        if table.wants(&key) {
            if let Some(value) = map.get(&key).filter(|v| stamp(v) <= at) {
                table.saved.insert(key, value.clone());
            }
        }
    }

    fn save_customer(&self, id: CustomerId) {
        self.save(&self.customers, id, |c| &mut c.customers, customer_stamp);
    }

    fn save_profile(&self, id: CustomerId) {
        self.save(&self.profiles, id, |c| &mut c.profiles, profile_stamp);
    }

    fn save_action(&self, id: ActionId) {
        self.save(&self.actions, id, |c| &mut c.actions, action_stamp);
    }

    /// A customer to change for the event at `seq`, its preimage saved first.
    fn customer_mut(
        &self,
        id: CustomerId,
        seq: Seq,
    ) -> Option<dashmap::mapref::one::RefMut<'_, CustomerId, Customer>> {
        self.save_customer(id);
        let mut c = self.customers.get_mut(&id)?;
        c.stamp = seq;
        Some(c)
    }

    fn profile_mut(
        &self,
        id: CustomerId,
        seq: Seq,
    ) -> Option<dashmap::mapref::one::RefMut<'_, CustomerId, Profile>> {
        self.save_profile(id);
        let mut p = self.profiles.get_mut(&id)?;
        p.stamp = seq;
        Some(p)
    }

    /// Starts a snapshot as of `at`, the latest applied seq. Called under the sequencer
    /// lock, so no event is half applied; it copies only the per-map counters (a handful
    /// of entries) and returns them.
    pub fn begin_snapshot(&self, at: Seq) -> SnapshotMaps {
        *self.cow.lock() = Some(CopyOnWrite {
            at,
            customers: Preimages::new(),
            profiles: Preimages::new(),
            actions: Preimages::new(),
        });
        self.cow_on.store(true, Ordering::Release);
        self.maps.lock().clone()
    }

    /// Walks the state as of the snapshot's seq, handing every entity to `emit`. Runs on
    /// the snapshot thread, concurrently with the sequencer.
    pub fn walk_snapshot<E>(
        &self,
        emit: &mut impl FnMut(SnapshotItem<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.walk(
            &self.customers,
            |c| &mut c.customers,
            customer_stamp,
            &mut |k, v| emit(SnapshotItem::Customer(*k, v)),
        )?;
        self.walk(
            &self.profiles,
            |c| &mut c.profiles,
            profile_stamp,
            &mut |k, v| emit(SnapshotItem::Profile(*k, v)),
        )?;
        self.walk(
            &self.actions,
            |c| &mut c.actions,
            action_stamp,
            &mut |_, v| emit(SnapshotItem::Action(v)),
        )
    }

    fn walk<K, V, E>(
        &self,
        map: &DashMap<K, V>,
        table: fn(&mut CopyOnWrite) -> &mut Preimages<K, V>,
        stamp: fn(&V) -> Seq,
        emit: &mut impl FnMut(&K, &V) -> Result<(), E>,
    ) -> Result<(), E>
    where
        K: Ord + Hash + Copy,
        V: Clone,
    {
        // Collect the keys first: no map shard is held while anything is encoded.
        let mut keys: Vec<K> = map.iter().map(|e| *e.key()).collect();
        keys.sort_unstable();
        for key in keys {
            let value = {
                let mut cow = self.cow.lock();
                let cow = cow.as_mut().expect("a snapshot is running");
                let at = cow.at;
                let table = table(cow);
                let value = table
                    .saved
                    .remove(&key)
                    .or_else(|| map.get(&key).filter(|v| stamp(v) <= at).map(|v| v.clone()));
                table.walked = Walked::Upto(key);
                value
            };
            if let Some(value) = value {
                emit(&key, &value)?;
            }
        }
        let removed = {
            let mut cow = self.cow.lock();
            let table = table(cow.as_mut().expect("a snapshot is running"));
            table.walked = Walked::All;
            std::mem::take(&mut table.saved)
        };
        for (key, value) in removed {
            emit(&key, &value)?;
        }
        Ok(())
    }

    /// Ends the snapshot: changes stop saving preimages.
    pub fn end_snapshot(&self) {
        self.cow_on.store(false, Ordering::Release);
        *self.cow.lock() = None;
    }

    /// An empty state about to be filled from a snapshot, with room for about `actions`
    /// actions.
    pub fn restoring(maps: SnapshotMaps, actions: usize) -> HubState {
        let state = HubState {
            actions: DashMap::with_capacity(actions),
            ..HubState::default()
        };
        *state.maps.lock() = maps;
        state
    }

    pub fn restore_customer(&self, id: CustomerId, c: Customer) {
        self.recency.lock().update(id, None, Some(recency_key(&c)));
        self.customers.insert(id, c);
    }

    /// Restores a profile, and the user ids that point to it.
    pub fn restore_profile(&self, id: CustomerId, p: Profile) {
        for user in p.user_ids.iter() {
            self.users.insert(user.clone(), id);
        }
        self.profiles.insert(id, p);
    }

    pub fn restore_action(&self, a: Action) {
        self.actions.insert(a.latest.action_id, a);
    }
}

// ---- the snapshot encoding of state ----

impl MapCounts {
    pub fn encode(key: &(ActionMapId, u32), m: &MapCounts, e: &mut Enc) {
        e.uuid(key.0 .0);
        e.u32(key.1);
        e.str(m.media.as_str());
        e.u32(m.counts.len() as u32);
        for (state, n) in &m.counts {
            e.str(state.as_str());
            e.u64(*n);
        }
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<((ActionMapId, u32), MapCounts), DecodeError> {
        let key = (ActionMapId(d.uuid()?), d.u32()?);
        let media = media(d)?;
        let n = d.u32()?;
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let state = action_state(d)?;
            counts.insert(state, d.u64()?);
        }
        Ok((key, MapCounts { media, counts }))
    }
}

fn media(d: &mut Dec<'_>) -> Result<MediaType, DecodeError> {
    MediaType::parse(d.str()?).ok_or(DecodeError("unknown media type"))
}

fn action_state(d: &mut Dec<'_>) -> Result<ActionState, DecodeError> {
    ActionState::parse(d.str()?).ok_or(DecodeError("unknown action state"))
}

const END_REASONS: [EndReason; 3] = [EndReason::Replaced, EndReason::Signout, EndReason::Idle];
const IDENTITIES: [IdentityState; 3] = [
    IdentityState::Anonymous,
    IdentityState::Recognized,
    IdentityState::Authenticated,
];

impl Customer {
    pub fn encode(&self, e: &mut Enc) {
        e.u8(IDENTITIES
            .iter()
            .position(|i| *i == self.identity)
            .unwrap_or(0) as u8);
        e.opt_str(self.user_id.as_deref());
        e.opt_uuid(self.visitor_id.map(|v| v.0));
        e.u32(self.sessions.len() as u32);
        for s in &self.sessions {
            e.uuid(s.id.0);
            e.i64(s.started_at);
            e.i64(s.last_seen);
            e.bool(s.ended.is_some());
            if let Some((at, reason)) = s.ended {
                e.i64(at);
                e.u8(END_REASONS.iter().position(|r| *r == reason).unwrap_or(0) as u8);
            }
            e.u64(s.pages_viewed);
            e.u32(s.activity.len() as u32);
            for a in &s.activity {
                e.i64(a.at);
                e.bool(a.kind == VisitorKind::Page);
                e.json(a.detail.as_object().unwrap_or(&Map::new()));
            }
        }
        e.opt_uuid(self.current_session.map(|s| s.0));
        e.u32(self.actions.len() as u32);
        for a in &self.actions {
            e.uuid(a.0);
        }
        e.i64(self.first_seen);
        e.i64(self.last_seen);
        e.u64(self.stamp.0);
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<Customer, DecodeError> {
        let identity = *IDENTITIES
            .get(d.u8()? as usize)
            .ok_or(DecodeError("unknown identity state"))?;
        let user_id = d.opt_str()?.map(str::to_string);
        let visitor_id = d.opt_uuid()?.map(CustomerId);
        let n = d.u32()?;
        let mut sessions = VecDeque::with_capacity(n as usize);
        for _ in 0..n {
            let id = SessionId(d.uuid()?);
            let (started_at, last_seen) = (d.i64()?, d.i64()?);
            let ended = match d.bool()? {
                true => {
                    let at = d.i64()?;
                    let reason = *END_REASONS
                        .get(d.u8()? as usize)
                        .ok_or(DecodeError("unknown end reason"))?;
                    Some((at, reason))
                }
                false => None,
            };
            let pages_viewed = d.u64()?;
            let n = d.u32()?;
            let mut activity = VecDeque::with_capacity(n as usize);
            for _ in 0..n {
                let at = d.i64()?;
                let kind = match d.bool()? {
                    true => VisitorKind::Page,
                    false => VisitorKind::Track,
                };
                activity.push_back(Activity {
                    at,
                    kind,
                    detail: Value::Object(d.json()?),
                });
            }
            sessions.push_back(SessionInfo {
                id,
                started_at,
                last_seen,
                ended,
                pages_viewed,
                activity,
            });
        }
        let current_session = d.opt_uuid()?.map(SessionId);
        let n = d.u32()?;
        let actions = (0..n)
            .map(|_| d.uuid().map(ActionId))
            .collect::<Result<_, _>>()?;
        Ok(Customer {
            identity,
            user_id,
            visitor_id,
            sessions,
            current_session,
            actions,
            first_seen: d.i64()?,
            last_seen: d.i64()?,
            stamp: Seq(d.u64()?),
        })
    }
}

impl Profile {
    pub fn encode(&self, e: &mut Enc) {
        e.u32(self.user_ids.len() as u32);
        for u in self.user_ids.iter() {
            e.str(u);
        }
        e.u32(self.customers.len() as u32);
        for c in &self.customers {
            e.uuid(c.0);
        }
        e.json(&self.traits);
        e.json(&self.channels);
        e.u64(self.stamp.0);
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<Profile, DecodeError> {
        let n = d.u32()?;
        let user_ids: Vec<String> = (0..n)
            .map(|_| d.str().map(str::to_string))
            .collect::<Result<_, _>>()?;
        let n = d.u32()?;
        let customers = (0..n)
            .map(|_| d.uuid().map(CustomerId))
            .collect::<Result<_, _>>()?;
        Ok(Profile {
            user_ids: user_ids.into(),
            customers,
            traits: d.json()?,
            channels: d.json()?,
            stamp: Seq(d.u64()?),
        })
    }
}

impl Action {
    pub fn encode(&self, e: &mut Enc) {
        let l = &self.latest;
        e.uuid(l.action_id.0);
        e.str(l.state.as_str());
        e.str(l.media.as_str());
        e.uuid(l.action_map_id.0);
        e.u32(l.action_map_version);
        e.uuid(l.customer_id.0);
        e.uuid(l.session_id.0);
        e.bool(l.error_code.is_some());
        e.i64(l.error_code.unwrap_or(0));
        e.opt_str(l.error_message.as_deref());
        e.opt_str(l.event_id.as_deref());
        e.bool(l.data.is_some());
        if let Some(data) = &l.data {
            e.str(data.as_str());
        }
        e.u32(self.transitions.len() as u32);
        for t in &self.transitions {
            e.str(t.state.as_str());
            e.u64(t.seq.0);
            e.i64(t.timestamp);
        }
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<Action, DecodeError> {
        let action_id = ActionId(d.uuid()?);
        let state = action_state(d)?;
        let media = media(d)?;
        let action_map_id = ActionMapId(d.uuid()?);
        let action_map_version = d.u32()?;
        let customer_id = CustomerId(d.uuid()?);
        let session_id = SessionId(d.uuid()?);
        let has_code = d.bool()?;
        let code = d.i64()?;
        let latest = LifecycleEvent {
            action_id,
            state,
            media,
            action_map_id,
            action_map_version,
            customer_id,
            session_id,
            error_code: has_code.then_some(code),
            error_message: d.opt_str()?.map(str::to_string),
            event_id: d.opt_str()?.map(str::to_string),
            data: match d.bool()? {
                true => Some(
                    EventData::from_written(d.str()?)
                        .ok_or(DecodeError("a JSON field is not an object"))?,
                ),
                false => None,
            },
        };
        let n = d.u32()?;
        if n == 0 {
            return Err(DecodeError("an action without transitions"));
        }
        let transitions = (0..n)
            .map(|_| {
                Ok(Transition {
                    state: action_state(d)?,
                    seq: Seq(d.u64()?),
                    timestamp: d.i64()?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Action {
            latest,
            transitions,
        })
    }
}

/// A profile limit a change would exceed.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileFull {
    /// The limit's name, as docs/protocol.md lists it.
    pub limit: &'static str,
    /// The field that would grow past it.
    pub field: &'static str,
    pub max: usize,
    /// What the profile would hold.
    pub would_be: usize,
}

/// What a profile would hold after a change, built the way [`HubState::apply`] builds it, to
/// check the limits before the change is made.
#[derive(Default)]
struct Holdings {
    user_ids: Vec<String>,
    customers: Vec<CustomerId>,
    traits: Map<String, Value>,
    channels: Map<String, Value>,
}

impl Holdings {
    fn add_user(&mut self, user_id: &str) {
        if !self.user_ids.iter().any(|u| u == user_id) {
            self.user_ids.push(user_id.to_string());
        }
    }

    fn add_customer(&mut self, customer: CustomerId) {
        if !self.customers.contains(&customer) {
            self.customers.push(customer);
        }
    }

    /// This profile with `source` folded in, as `HubState::fold_profile` does it.
    fn folding(mut self, source: Holdings) -> Holdings {
        for u in &source.user_ids {
            self.add_user(u);
        }
        for c in source.customers {
            self.add_customer(c);
        }
        for (k, v) in source.traits {
            self.traits.entry(k).or_insert(v);
        }
        for (k, v) in source.channels {
            self.channels.entry(k).or_insert(v);
        }
        self
    }

    fn check(&self) -> Result<(), ProfileFull> {
        let json_len =
            |m: &Map<String, Value>| serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
        let held = [
            (
                "userIdsPerProfile",
                "userId",
                MAX_USER_IDS_PER_PROFILE,
                self.user_ids.len(),
            ),
            (
                "customersPerProfile",
                "customerId",
                MAX_CUSTOMERS_PER_PROFILE,
                self.customers.len(),
            ),
            (
                "profileTraitsBytes",
                "traits",
                MAX_PROFILE_OBJECT_BYTES,
                json_len(&self.traits),
            ),
            (
                "profileChannelsBytes",
                "channels",
                MAX_PROFILE_OBJECT_BYTES,
                json_len(&self.channels),
            ),
        ];
        match held.into_iter().find(|(_, _, max, n)| n > max) {
            Some((limit, field, max, would_be)) => Err(ProfileFull {
                limit,
                field,
                max,
                would_be,
            }),
            None => Ok(()),
        }
    }
}

/// Whether a session is new to a customer, and which open session it would replace.
#[derive(Debug)]
pub enum SessionStatus {
    Known,
    New { replaces: Option<SessionInfo> },
}

fn session_json(s: &SessionInfo) -> Value {
    let mut v = json!({
        "sessionId": s.id,
        "startedAt": format_millis(s.started_at),
        "lastSeenAt": format_millis(s.last_seen),
        "pagesViewed": s.pages_viewed,
    });
    if let Some((at, reason)) = s.ended {
        v["endedAt"] = format_millis(at).into();
        v["endReason"] = reason.as_str().into();
    }
    v
}

/// A session's remembered page views and track events, oldest first.
fn activity_json(s: &SessionInfo) -> Value {
    s.activity
        .iter()
        .map(|a| {
            let mut v = json!({ "type": a.kind.as_str(), "at": format_millis(a.at) });
            match a.kind {
                VisitorKind::Page => v["page"] = a.detail.clone(),
                _ => {
                    v["name"] = a.detail["name"].clone();
                    if !a.detail["properties"].is_null() {
                        v["properties"] = a.detail["properties"].clone();
                    }
                }
            }
            v
        })
        .collect()
}

/// An action's view: its latest lifecycle event, `seq`, `timestamp`, maybe `transitions`.
struct ActionJson<'a>(&'a Action, bool);

impl Serialize for ActionJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ActionJson(action, with_transitions) = self;
        let mut map = serializer.serialize_map(None)?;
        serialize_lifecycle(&mut map, &action.latest)?;
        let last = action.last();
        map.serialize_entry("seq", &last.seq)?;
        map.serialize_entry("timestamp", &format_millis(last.timestamp))?;
        if *with_transitions {
            let transitions: Vec<Value> = action
                .transitions
                .iter()
                .map(|t| {
                    json!({
                        "actionState": t.state.as_str(),
                        "seq": t.seq,
                        "timestamp": format_millis(t.timestamp),
                    })
                })
                .collect();
            map.serialize_entry("transitions", &transitions)?;
        }
        map.end()
    }
}

fn action_json(action: &Action, with_transitions: bool) -> Value {
    serde_json::to_value(ActionJson(action, with_transitions)).expect("actions serialize")
}

/// The visitor API's reads. A visitor is a profile (customers known to be one person), or
/// a customer no profile holds yet; either way its id is a customerId (see `visitorId`).
impl HubState {
    /// Resolves the `{id}` of the visitor API: any customerId of the visitor (its own id
    /// included), or `user:<userId>`. `Err` when the id is malformed.
    pub fn resolve_visitor(&self, id: &str) -> Result<Option<CustomerId>, crate::ids::BadId> {
        if let Some(user) = id.strip_prefix("user:") {
            return Ok(self.users.get(user).map(|v| *v));
        }
        let id = CustomerId::parse(id)?;
        if self.profiles.contains_key(&id) {
            return Ok(Some(id));
        }
        Ok(self.customers.get(&id).map(|c| c.visitor_id.unwrap_or(id)))
    }

    /// The customers of a visitor, the visitor's own id first when it is one of them.
    pub fn visitor_customers(&self, visitor: CustomerId) -> Vec<CustomerId> {
        match self.profiles.get(&visitor) {
            Some(p) => p.customers.clone(),
            None if self.customers.contains_key(&visitor) => vec![visitor],
            None => Vec::new(),
        }
    }

    /// Every visitor id, most recently seen first, narrowed by a case-insensitive search of
    /// user ids and the `name` and `email` traits, and by whether it is identified. Walks
    /// the recency index a chunk at a time (a visitor is as recent as its most recent
    /// customer, met first), so it never holds a lock for long; callers run it off the
    /// async workers, as it visits every customer.
    pub fn visitors(&self, search: Option<&str>, identified: Option<bool>) -> Vec<CustomerId> {
        const CHUNK: usize = 4096;
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let wanted = |users: &[String], traits: Option<&Map<String, Value>>| {
            if identified.is_some_and(|want| want == users.is_empty()) {
                return false;
            }
            let Some(needle) = &needle else {
                return true;
            };
            let trait_text = |key: &str| {
                traits
                    .and_then(|t| t.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_lowercase)
            };
            users
                .iter()
                .any(|u| u.to_lowercase().contains(needle.as_str()))
                || ["name", "email"]
                    .iter()
                    .any(|k| trait_text(k).is_some_and(|t| t.contains(needle.as_str())))
        };
        let mut met = HashSet::new();
        let mut found = Vec::new();
        let mut cursor = None;
        loop {
            let chunk = self.customers_by_recency(cursor, CHUNK);
            let Some(last) = chunk.last() else {
                break;
            };
            cursor = Some(*last);
            for (_, id) in chunk {
                let Some(visitor) = self.customers.get(&id).map(|c| c.visitor_id.unwrap_or(id))
                else {
                    continue;
                };
                if !met.insert(visitor) {
                    continue;
                }
                let keep = match self.profiles.get(&visitor) {
                    Some(p) => wanted(&p.user_ids, Some(&p.traits)),
                    None => wanted(&[], None),
                };
                if keep {
                    found.push(visitor);
                }
            }
        }
        found
    }

    /// The visitor view of `GET /v1/visitors/{id}`; `full` adds every session and action
    /// (with transitions), for exports.
    pub fn visitor_view(&self, visitor: CustomerId, full: bool) -> Option<Value> {
        let customers = self.visitor_customers(visitor);
        if customers.is_empty() {
            return None;
        }
        let (user_ids, traits, channels) = match self.profiles.get(&visitor) {
            Some(p) => (p.user_ids.to_vec(), p.traits.clone(), p.channels.clone()),
            None => (Vec::new(), Map::new(), Map::new()),
        };
        let mut latest: Option<(Millis, IdentityState, Option<String>)> = None;
        let (mut first_seen, mut last_seen) = (Millis::MAX, Millis::MIN);
        let (mut sessions, mut active, mut pages) = (0usize, 0usize, 0u64);
        let mut session_list = Vec::new();
        let mut action_ids = Vec::new();
        for id in &customers {
            let Some(c) = self.customers.get(id) else {
                continue;
            };
            first_seen = first_seen.min(c.first_seen);
            last_seen = last_seen.max(c.last_seen);
            // The visitor is as identified as its best-identified customer.
            if latest
                .as_ref()
                .is_none_or(|(seen, state, _)| (c.identity, c.last_seen) > (*state, *seen))
            {
                latest = Some((c.last_seen, c.identity, c.user_id.clone()));
            }
            sessions += c.sessions.len();
            active += usize::from(c.current_session.is_some());
            pages += c.sessions.iter().map(|s| s.pages_viewed).sum::<u64>();
            action_ids.extend(c.actions.iter().copied());
            if full {
                session_list.extend(c.sessions.iter().map(|s| {
                    let mut v = session_json(s);
                    v["customerId"] = json!(id);
                    v["activity"] = activity_json(s);
                    v
                }));
            }
        }
        let (_, state, user_id) = latest?;
        let live: Vec<Value> = customers
            .iter()
            .flat_map(|c| self.live_actions(*c))
            .collect();
        let mut view = json!({
            "visitorId": visitor,
            "identity": { "state": state.as_str(), "userId": user_id },
            "identified": !user_ids.is_empty(),
            "userIds": user_ids,
            "customers": customers,
            "traits": traits,
            "channels": channels,
            "sessions": { "total": sessions, "active": active },
            "liveActions": live,
            "firstSeen": format_millis(first_seen),
            "lastSeen": format_millis(last_seen),
            "counts": {
                "customers": customers.len(),
                "sessions": sessions,
                "actions": action_ids.len(),
                "liveActions": live.len(),
                "pagesViewed": pages,
            },
        });
        if full {
            let actions: Vec<Value> = action_ids
                .iter()
                .filter_map(|id| self.action_view(*id, true))
                .collect();
            view["sessionHistory"] = session_list.into();
            view["actions"] = actions.into();
        }
        Some(view)
    }

    /// Every session of a visitor's customers, newest first, each with its customerId.
    pub fn visitor_sessions(&self, visitor: CustomerId) -> Vec<Value> {
        let mut sessions: Vec<(Millis, Value)> = Vec::new();
        for id in self.visitor_customers(visitor) {
            let Some(c) = self.customers.get(&id) else {
                continue;
            };
            for s in &c.sessions {
                let mut v = session_json(s);
                v["customerId"] = json!(id);
                v["active"] = json!(c.current_session == Some(s.id));
                v["activity"] = activity_json(s);
                sessions.push((s.started_at, v));
            }
        }
        sessions.sort_by_key(|(started, _)| std::cmp::Reverse(*started));
        sessions.into_iter().map(|(_, v)| v).collect()
    }

    /// The visitor whose profile holds `channels[channel] == user`.
    pub fn visitor_by_channel(&self, channel: &str, user: &str) -> Option<CustomerId> {
        self.profiles
            .iter()
            .find(|p| p.channels.get(channel).and_then(Value::as_str) == Some(user))
            .map(|p| *p.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::event::{Event, Published};
    use serde_json::json;

    /// A deterministic mix of every kind of change: new customers and sessions, actions
    /// moving through states, sign-ins that merge profiles, traits, sessions ending.
    fn events(n: u64) -> Vec<Published> {
        let customers: Vec<CustomerId> = (0..12).map(|_| CustomerId::new_random()).collect();
        let sessions: Vec<SessionId> = (0..12).map(|_| SessionId::new_random()).collect();
        let actions: Vec<ActionId> = (0..30).map(|_| ActionId::new_random()).collect();
        let map = ActionMapId::new_random();
        let states = ["offered", "accepted", "started", "engaged", "ended"];
        (1..=n)
            .map(|seq| {
                let i = (seq * 7919 % 1000) as usize;
                let (c, s) = (i % 12, (i / 12) % 12);
                let body = match seq % 6 {
                    0 => Body::SessionStarted {
                        customer_id: customers[c],
                        session_id: sessions[s],
                        user_id: None,
                        started_at: seq as i64,
                    },
                    1 | 2 => {
                        let a = i % 30;
                        let json = serde_json::json!({
                            "actionId": actions[a].to_string(),
                            "actionState": states[(seq as usize / 6) % 5],
                            "actionMediaType": "webchat",
                            "actionMapId": map.to_string(), "actionMapVersion": 1,
                            "customerId": customers[a % 12].to_string(),
                            "sessionId": sessions[s].to_string(),
                            "data": {"n": seq},
                        });
                        Event::from_json(json).unwrap().into()
                    }
                    3 => {
                        let json = serde_json::json!({
                            "type": if seq % 4 == 0 { "identify" } else { "signin" },
                            "customerId": customers[c].to_string(),
                            "sessionId": sessions[s].to_string(),
                            "userId": format!("user-{}", i % 5),
                            "traits": {"seen": seq},
                        });
                        Event::from_json(json).unwrap().into()
                    }
                    4 => Event::from_json(serde_json::json!({
                        "type": "page", "customerId": customers[c].to_string(),
                        "sessionId": sessions[s].to_string(), "page": {"url": "https://x/"},
                    }))
                    .unwrap()
                    .into(),
                    _ => Body::SessionEnded {
                        customer_id: customers[c],
                        session_id: sessions[s],
                        user_id: None,
                        started_at: 0,
                        ended_at: seq as i64,
                        pages_viewed: 1,
                        reason: EndReason::Idle,
                    },
                };
                Published {
                    seq: Seq(seq),
                    timestamp: seq as i64 * 10,
                    body,
                }
            })
            .collect()
    }

    /// Everything in a state, comparable.
    fn fingerprint(state: &HubState) -> Vec<String> {
        let mut out: Vec<String> = state
            .customers
            .iter()
            .map(|e| format!("c {:?} {:?}", e.key(), *e))
            .chain(
                state
                    .profiles
                    .iter()
                    .map(|e| format!("p {:?} {:?}", e.key(), *e)),
            )
            .chain(state.actions.iter().map(|e| format!("a {:?}", *e)))
            .chain(
                state
                    .users
                    .iter()
                    .map(|e| format!("u {} {:?}", e.key(), *e)),
            )
            .collect();
        out.sort();
        out.push(format!("{:?}", *state.maps.lock()));
        out
    }

    #[test]
    fn a_snapshot_holds_the_state_as_of_its_seq_while_changes_go_on() {
        let all = events(600);
        for split in [0, 1, 250, 599] {
            let (before, after) = all.split_at(split);
            let expected = HubState::default();
            let live = HubState::default();
            for p in before {
                expected.apply(p);
                live.apply(p);
            }
            let maps = live.begin_snapshot(Seq(split as u64));
            let mut pending = after.iter();
            let (mut customers, mut profiles, mut actions) = (Vec::new(), Vec::new(), Vec::new());
            // Apply two later events between every entity the walk hands out.
            live.walk_snapshot(&mut |item| {
                match item {
                    SnapshotItem::Customer(id, c) => customers.push((id, c.clone())),
                    SnapshotItem::Profile(id, p) => profiles.push((id, p.clone())),
                    SnapshotItem::Action(a) => actions.push(a.clone()),
                }
                for p in pending.by_ref().take(2) {
                    live.apply(p);
                }
                Ok::<(), ()>(())
            })
            .unwrap();
            live.end_snapshot();
            for p in pending {
                live.apply(p);
            }
            let restored = HubState::restoring(maps, 0);
            for (id, c) in customers {
                restored.restore_customer(id, c);
            }
            for (id, p) in profiles {
                restored.restore_profile(id, p);
            }
            for a in actions {
                restored.restore_action(a);
            }
            assert_eq!(
                fingerprint(&restored),
                fingerprint(&expected),
                "split {split}"
            );
            let whole = HubState::default();
            for p in &all {
                whole.apply(p);
            }
            assert_eq!(
                fingerprint(&live),
                fingerprint(&whole),
                "the live state moved on"
            );
        }
    }

    /// A small state with fixed ids and times, so the views' JSON is the same on every run:
    /// two customers linked into one profile, a lone customer, ended and open sessions,
    /// page and track activity, live and ended actions, and maps with and without offers.
    fn pinned_state() -> (HubState, [CustomerId; 3], [ActionId; 4]) {
        let id = |n: u32| format!("00000000-0000-4000-8000-{n:012x}");
        let (c1, c2, c3) = (id(0xc1), id(0xc2), id(0xc3));
        let (s1, s2, s3) = (id(0x51), id(0x52), id(0x53));
        let (a1, a2, a3, a4) = (id(0xa1), id(0xa2), id(0xa3), id(0xa4));
        let (m1, m2) = (id(0x01), id(0x02));
        let at = |seq: u64| 1_767_225_600_000 + seq as i64 * 1_000 + 7;
        let event = |json: Value| Body::from(Event::from_json(json).unwrap());
        let lifecycle = |action: &str, state: &str, media: &str, map: &str, version: u32| {
            let (customer, session) = match action {
                a if a == a3 => (&c2, &s2),
                a if a == a4 => (&c3, &s3),
                _ => (&c1, &s1),
            };
            json!({
                "actionId": action, "actionState": state, "actionMediaType": media,
                "actionMapId": map, "actionMapVersion": version,
                "customerId": customer, "sessionId": session,
            })
        };
        let started = |customer: &str, session: &str, seq: u64| Body::SessionStarted {
            customer_id: CustomerId::parse(customer).unwrap(),
            session_id: SessionId::parse(session).unwrap(),
            user_id: None,
            started_at: at(seq),
        };
        let mut offered = lifecycle(&a1, "offered", "webchat", &m1, 1);
        offered["data"] = json!({"z": 1, "a": "x"});
        offered["eventId"] = json!("ev-1");
        // The latest event of a live action carries `data` (keys unsorted, a float) and an
        // `eventId`, so the views show them.
        let mut offered_with_data = lifecycle(&a2, "offered", "contentoffer", &m2, 3);
        offered_with_data["data"] = json!({"z": 1, "a": "x", "f": 1.5});
        offered_with_data["eventId"] = json!("ev-2");
        let mut errored = lifecycle(&a3, "errored", "webchat", &m1, 1);
        errored["errorCode"] = json!(42);
        errored["errorMessage"] = json!("boom");
        let bodies = vec![
            started(&c1, &s1, 1),
            event(offered),
            event(json!({"type": "page", "customerId": c1, "sessionId": s1,
                "page": {"url": "https://example.test/", "title": "Home"}})),
            event(json!({"type": "track", "customerId": c1, "sessionId": s1,
                "name": "clicked", "properties": {"button": "buy"}})),
            event(json!({"type": "track", "customerId": c1, "name": "scrolled"})),
            event(lifecycle(&a1, "accepted", "webchat", &m1, 1)),
            event(offered_with_data),
            event(
                json!({"type": "signin", "customerId": c1, "sessionId": s1, "userId": "u-1",
                "traits": {"name": "Ada", "email": "ada@example.test"},
                "channels": {"slack": "U1"}}),
            ),
            Body::SessionEnded {
                customer_id: CustomerId::parse(&c1).unwrap(),
                session_id: SessionId::parse(&s1).unwrap(),
                user_id: Some("u-1".into()),
                started_at: at(1),
                ended_at: at(8),
                pages_viewed: 1,
                reason: EndReason::Signout,
            },
            started(&c2, &s2, 10),
            event(
                json!({"type": "identify", "customerId": c2, "sessionId": s2,
                "userId": "u-1", "traits": {"plan": "pro"}}),
            ),
            event(lifecycle(&a3, "offered", "webchat", &m1, 1)),
            event(errored),
            started(&c3, &s3, 14),
            event(json!({"type": "page", "customerId": c3, "sessionId": s3,
                "page": {"url": "https://example.test/b"}})),
            event(lifecycle(&a4, "qualified", "webchat", &m1, 2)),
        ];
        let state = HubState::default();
        for (seq, body) in (1..).zip(bodies) {
            state.apply(&Published {
                seq: Seq(seq),
                timestamp: at(seq),
                body,
            });
        }
        let customer = |id: &str| CustomerId::parse(id).unwrap();
        let action = |id: &str| ActionId::parse(id).unwrap();
        (
            state,
            [customer(&c1), customer(&c2), customer(&c3)],
            [action(&a1), action(&a2), action(&a3), action(&a4)],
        )
    }

    /// Every JSON view of [`pinned_state`], named, as the HTTP API and snapshot frames
    /// write it.
    fn pinned_views() -> Vec<(&'static str, String)> {
        let (state, [c1, c2, c3], [a1, ..]) = pinned_state();
        // The visitor API resolves any of a visitor's customers to its profile.
        let visitor = state.resolve_visitor(&c2.to_string()).unwrap().unwrap();
        let text = |v: Value| serde_json::to_string(&v).unwrap();
        let snapshot_actions = |customers: Option<&[CustomerId]>, at: u64| {
            let selected = state.select_actions(customers, Seq(at), |e| {
                e.media == MediaType::Webchat || customers.is_none()
            });
            text(json!(selected
                .into_iter()
                .map(|(seq, view, customer)| json!([seq, view, customer]))
                .collect::<Vec<_>>()))
        };
        vec![
            ("action", text(state.action_view(a1, true).unwrap())),
            ("customer c1", text(state.customer_view(c1).unwrap())),
            ("customer c2", text(state.customer_view(c2).unwrap())),
            ("action map stats", text(state.action_map_stats())),
            ("visitor", text(state.visitor_view(visitor, false).unwrap())),
            ("visitor lone", text(state.visitor_view(c3, false).unwrap())),
            (
                "visitor export",
                text(state.visitor_view(c1, true).unwrap()),
            ),
            ("visitor sessions", text(state.visitor_sessions(c1).into())),
            ("snapshot actions", snapshot_actions(None, 16)),
            ("snapshot actions of c1", snapshot_actions(Some(&[c1]), 6)),
            (
                "snapshot customer",
                text(state.customer_identity(c1).unwrap()),
            ),
            (
                "snapshot customer lone",
                text(state.customer_identity(c3).unwrap()),
            ),
        ]
    }

    /// The views' exact bytes, field order included: the console, the SDK and outside
    /// clients read them. Captured from the views as they were written with `json!`.
    const PINNED: &[(&str, &str)] = &[
        (
            "action",
            r#"{"actionId":"00000000-0000-4000-8000-0000000000a1","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"accepted","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","seq":6,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:06.007Z","transitions":[{"actionState":"offered","seq":2,"timestamp":"2026-01-01T00:00:02.007Z"},{"actionState":"accepted","seq":6,"timestamp":"2026-01-01T00:00:06.007Z"}]}"#,
        ),
        (
            "customer c1",
            r#"{"actions":[{"actionId":"00000000-0000-4000-8000-0000000000a1","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"accepted","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","seq":6,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:06.007Z"},{"actionId":"00000000-0000-4000-8000-0000000000a2","actionMapId":"00000000-0000-4000-8000-000000000002","actionMapVersion":3,"actionMediaType":"contentoffer","actionState":"offered","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","data":{"a":"x","f":1.5,"z":1},"eventId":"ev-2","seq":7,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:07.007Z"}],"currentSessionId":null,"customerId":"00000000-0000-4000-8000-0000000000c1","firstSeen":"2026-01-01T00:00:01.007Z","identity":{"state":"authenticated","userId":"u-1"},"lastSeen":"2026-01-01T00:00:08.007Z","sessions":[{"endReason":"signout","endedAt":"2026-01-01T00:00:08.007Z","lastSeenAt":"2026-01-01T00:00:08.007Z","pagesViewed":1,"sessionId":"00000000-0000-4000-8000-000000000051","startedAt":"2026-01-01T00:00:01.007Z"}],"visitorId":"00000000-0000-4000-8000-0000000000c1"}"#,
        ),
        (
            "customer c2",
            r#"{"actions":[],"currentSessionId":"00000000-0000-4000-8000-000000000052","customerId":"00000000-0000-4000-8000-0000000000c2","firstSeen":"2026-01-01T00:00:10.007Z","identity":{"state":"recognized","userId":"u-1"},"lastSeen":"2026-01-01T00:00:13.007Z","sessions":[{"lastSeenAt":"2026-01-01T00:00:13.007Z","pagesViewed":0,"sessionId":"00000000-0000-4000-8000-000000000052","startedAt":"2026-01-01T00:00:10.007Z"}],"visitorId":"00000000-0000-4000-8000-0000000000c1"}"#,
        ),
        (
            "action map stats",
            r#"{"actionMaps":[{"acceptRate":0.5,"actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","counts":{"accepted":1,"errored":1,"offered":2}},{"acceptRate":null,"actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":2,"actionMediaType":"webchat","counts":{"qualified":1}},{"acceptRate":0.0,"actionMapId":"00000000-0000-4000-8000-000000000002","actionMapVersion":3,"actionMediaType":"contentoffer","counts":{"offered":1}}]}"#,
        ),
        (
            "visitor",
            r#"{"channels":{"slack":"U1"},"counts":{"actions":3,"customers":2,"liveActions":2,"pagesViewed":1,"sessions":2},"customers":["00000000-0000-4000-8000-0000000000c1","00000000-0000-4000-8000-0000000000c2"],"firstSeen":"2026-01-01T00:00:01.007Z","identified":true,"identity":{"state":"authenticated","userId":"u-1"},"lastSeen":"2026-01-01T00:00:13.007Z","liveActions":[{"actionId":"00000000-0000-4000-8000-0000000000a1","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"accepted","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","seq":6,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:06.007Z"},{"actionId":"00000000-0000-4000-8000-0000000000a2","actionMapId":"00000000-0000-4000-8000-000000000002","actionMapVersion":3,"actionMediaType":"contentoffer","actionState":"offered","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","data":{"a":"x","f":1.5,"z":1},"eventId":"ev-2","seq":7,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:07.007Z"}],"sessions":{"active":1,"total":2},"traits":{"email":"ada@example.test","name":"Ada","plan":"pro"},"userIds":["u-1"],"visitorId":"00000000-0000-4000-8000-0000000000c1"}"#,
        ),
        (
            "visitor lone",
            r#"{"channels":{},"counts":{"actions":1,"customers":1,"liveActions":1,"pagesViewed":1,"sessions":1},"customers":["00000000-0000-4000-8000-0000000000c3"],"firstSeen":"2026-01-01T00:00:14.007Z","identified":false,"identity":{"state":"anonymous","userId":null},"lastSeen":"2026-01-01T00:00:16.007Z","liveActions":[{"actionId":"00000000-0000-4000-8000-0000000000a4","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":2,"actionMediaType":"webchat","actionState":"qualified","customerId":"00000000-0000-4000-8000-0000000000c3","customerIdType":"cookie","seq":16,"sessionId":"00000000-0000-4000-8000-000000000053","timestamp":"2026-01-01T00:00:16.007Z"}],"sessions":{"active":1,"total":1},"traits":{},"userIds":[],"visitorId":"00000000-0000-4000-8000-0000000000c3"}"#,
        ),
        (
            "visitor export",
            r#"{"actions":[{"actionId":"00000000-0000-4000-8000-0000000000a1","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"accepted","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","seq":6,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:06.007Z","transitions":[{"actionState":"offered","seq":2,"timestamp":"2026-01-01T00:00:02.007Z"},{"actionState":"accepted","seq":6,"timestamp":"2026-01-01T00:00:06.007Z"}]},{"actionId":"00000000-0000-4000-8000-0000000000a2","actionMapId":"00000000-0000-4000-8000-000000000002","actionMapVersion":3,"actionMediaType":"contentoffer","actionState":"offered","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","data":{"a":"x","f":1.5,"z":1},"eventId":"ev-2","seq":7,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:07.007Z","transitions":[{"actionState":"offered","seq":7,"timestamp":"2026-01-01T00:00:07.007Z"}]},{"actionId":"00000000-0000-4000-8000-0000000000a3","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"errored","customerId":"00000000-0000-4000-8000-0000000000c2","customerIdType":"cookie","errorCode":42,"errorMessage":"boom","seq":13,"sessionId":"00000000-0000-4000-8000-000000000052","timestamp":"2026-01-01T00:00:13.007Z","transitions":[{"actionState":"offered","seq":12,"timestamp":"2026-01-01T00:00:12.007Z"},{"actionState":"errored","seq":13,"timestamp":"2026-01-01T00:00:13.007Z"}]}],"channels":{"slack":"U1"},"counts":{"actions":3,"customers":2,"liveActions":2,"pagesViewed":1,"sessions":2},"customers":["00000000-0000-4000-8000-0000000000c1","00000000-0000-4000-8000-0000000000c2"],"firstSeen":"2026-01-01T00:00:01.007Z","identified":true,"identity":{"state":"authenticated","userId":"u-1"},"lastSeen":"2026-01-01T00:00:13.007Z","liveActions":[{"actionId":"00000000-0000-4000-8000-0000000000a1","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"accepted","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","seq":6,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:06.007Z"},{"actionId":"00000000-0000-4000-8000-0000000000a2","actionMapId":"00000000-0000-4000-8000-000000000002","actionMapVersion":3,"actionMediaType":"contentoffer","actionState":"offered","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","data":{"a":"x","f":1.5,"z":1},"eventId":"ev-2","seq":7,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:07.007Z"}],"sessionHistory":[{"activity":[{"at":"2026-01-01T00:00:03.007Z","page":{"title":"Home","url":"https://example.test/"},"type":"page"},{"at":"2026-01-01T00:00:04.007Z","name":"clicked","properties":{"button":"buy"},"type":"track"},{"at":"2026-01-01T00:00:05.007Z","name":"scrolled","type":"track"}],"customerId":"00000000-0000-4000-8000-0000000000c1","endReason":"signout","endedAt":"2026-01-01T00:00:08.007Z","lastSeenAt":"2026-01-01T00:00:08.007Z","pagesViewed":1,"sessionId":"00000000-0000-4000-8000-000000000051","startedAt":"2026-01-01T00:00:01.007Z"},{"activity":[],"customerId":"00000000-0000-4000-8000-0000000000c2","lastSeenAt":"2026-01-01T00:00:13.007Z","pagesViewed":0,"sessionId":"00000000-0000-4000-8000-000000000052","startedAt":"2026-01-01T00:00:10.007Z"}],"sessions":{"active":1,"total":2},"traits":{"email":"ada@example.test","name":"Ada","plan":"pro"},"userIds":["u-1"],"visitorId":"00000000-0000-4000-8000-0000000000c1"}"#,
        ),
        (
            "visitor sessions",
            r#"[{"active":true,"activity":[],"customerId":"00000000-0000-4000-8000-0000000000c2","lastSeenAt":"2026-01-01T00:00:13.007Z","pagesViewed":0,"sessionId":"00000000-0000-4000-8000-000000000052","startedAt":"2026-01-01T00:00:10.007Z"},{"active":false,"activity":[{"at":"2026-01-01T00:00:03.007Z","page":{"title":"Home","url":"https://example.test/"},"type":"page"},{"at":"2026-01-01T00:00:04.007Z","name":"clicked","properties":{"button":"buy"},"type":"track"},{"at":"2026-01-01T00:00:05.007Z","name":"scrolled","type":"track"}],"customerId":"00000000-0000-4000-8000-0000000000c1","endReason":"signout","endedAt":"2026-01-01T00:00:08.007Z","lastSeenAt":"2026-01-01T00:00:08.007Z","pagesViewed":1,"sessionId":"00000000-0000-4000-8000-000000000051","startedAt":"2026-01-01T00:00:01.007Z"}]"#,
        ),
        (
            "snapshot actions",
            r#"[[6,{"actionId":"00000000-0000-4000-8000-0000000000a1","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"accepted","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","seq":6,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:06.007Z"},"00000000-0000-4000-8000-0000000000c1"],[7,{"actionId":"00000000-0000-4000-8000-0000000000a2","actionMapId":"00000000-0000-4000-8000-000000000002","actionMapVersion":3,"actionMediaType":"contentoffer","actionState":"offered","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","data":{"a":"x","f":1.5,"z":1},"eventId":"ev-2","seq":7,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:07.007Z"},"00000000-0000-4000-8000-0000000000c1"],[13,{"actionId":"00000000-0000-4000-8000-0000000000a3","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"errored","customerId":"00000000-0000-4000-8000-0000000000c2","customerIdType":"cookie","errorCode":42,"errorMessage":"boom","seq":13,"sessionId":"00000000-0000-4000-8000-000000000052","timestamp":"2026-01-01T00:00:13.007Z"},"00000000-0000-4000-8000-0000000000c2"],[16,{"actionId":"00000000-0000-4000-8000-0000000000a4","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":2,"actionMediaType":"webchat","actionState":"qualified","customerId":"00000000-0000-4000-8000-0000000000c3","customerIdType":"cookie","seq":16,"sessionId":"00000000-0000-4000-8000-000000000053","timestamp":"2026-01-01T00:00:16.007Z"},"00000000-0000-4000-8000-0000000000c3"]]"#,
        ),
        (
            "snapshot actions of c1",
            r#"[[6,{"actionId":"00000000-0000-4000-8000-0000000000a1","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"accepted","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","seq":6,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:06.007Z"},"00000000-0000-4000-8000-0000000000c1"]]"#,
        ),
        (
            "snapshot customer",
            r#"{"customerId":"00000000-0000-4000-8000-0000000000c1","identity":{"state":"authenticated","userId":"u-1"}}"#,
        ),
        (
            "snapshot customer lone",
            r#"{"customerId":"00000000-0000-4000-8000-0000000000c3","identity":{"state":"anonymous","userId":null}}"#,
        ),
    ];

    #[test]
    fn the_json_views_are_written_byte_for_byte_as_pinned() {
        let views = pinned_views();
        let names: Vec<&str> = views.iter().map(|(name, _)| *name).collect();
        let pinned: Vec<&str> = PINNED.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, pinned);
        for ((name, json), (_, expected)) in views.iter().zip(PINNED) {
            assert_eq!(json, expected, "{name}");
        }
    }

    #[test]
    fn entities_encode_and_decode_unchanged() {
        let state = HubState::default();
        for p in events(300) {
            state.apply(&p);
        }
        let mut e = Enc::default();
        for c in state.customers.iter() {
            c.encode(&mut e);
        }
        for p in state.profiles.iter() {
            p.encode(&mut e);
        }
        for a in state.actions.iter() {
            a.encode(&mut e);
        }
        let mut d = Dec::new(&e.buf);
        for c in state.customers.iter() {
            assert_eq!(
                format!("{:?}", Customer::decode(&mut d).unwrap()),
                format!("{:?}", *c)
            );
        }
        for p in state.profiles.iter() {
            assert_eq!(
                format!("{:?}", Profile::decode(&mut d).unwrap()),
                format!("{:?}", *p)
            );
        }
        for a in state.actions.iter() {
            assert_eq!(
                format!("{:?}", Action::decode(&mut d).unwrap()),
                format!("{:?}", *a)
            );
        }
        assert!(d.is_empty());
    }
}
