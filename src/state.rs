//! The hub's in-memory state: customers (identity, sessions), visitor profiles, actions
//! (current state and transitions), and per action-map counters.
//!
//! State changes only through [`State::apply`], which takes a published event and is
//! deterministic: applying the same events in seq order always builds the same state, so a
//! log replay rebuilds it. Only the sequencer calls `apply` (under its lock); HTTP handlers,
//! snapshots and the fan-out read concurrently through the methods here, which never hold a
//! map entry while touching another entry of the same map.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::event::{
    format_millis, serialize_lifecycle, Body, EndReason, LifecycleEvent, Millis, Published,
    VisitorEvent, VisitorKind,
};
use crate::ids::{ActionId, ActionMapId, CustomerId, Seq, SessionId};
use crate::lifecycle::{ActionState, MediaType};

/// Sessions remembered per customer; older ones are forgotten.
const MAX_SESSIONS_PER_CUSTOMER: usize = 32;
/// Page views and track events remembered per session; older ones are forgotten.
const MAX_ACTIVITY_PER_SESSION: usize = 50;

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
}

/// One visitor: the customers (browsers) known to be the same person.
#[derive(Clone, Debug)]
pub struct Profile {
    pub user_ids: Arc<[String]>,
    pub customers: Vec<CustomerId>,
    pub traits: Map<String, Value>,
    pub channels: Map<String, Value>,
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
    pub state: ActionState,
    pub seq: Seq,
}

/// Per (action map, version) counts of actions that reached each state.
#[derive(Clone, Debug)]
struct MapCounts {
    media: MediaType,
    counts: BTreeMap<ActionState, u64>,
}

/// Everything the hub knows, in memory.
#[derive(Default)]
pub struct State {
    actions: DashMap<ActionId, Action>,
    customers: DashMap<CustomerId, Customer>,
    /// Profiles by visitor id.
    profiles: DashMap<CustomerId, Profile>,
    /// userId -> visitor id.
    users: DashMap<String, CustomerId>,
    maps: Mutex<BTreeMap<(ActionMapId, u32), MapCounts>>,
}

impl State {
    // ---- reads for the sequencer ----

    pub fn action_head(&self, id: ActionId) -> Option<ActionHead> {
        self.actions.get(&id).map(|a| ActionHead {
            media: a.latest.media,
            action_map_id: a.latest.action_map_id,
            action_map_version: a.latest.action_map_version,
            customer_id: a.latest.customer_id,
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

    /// Open sessions with no event since `cutoff`.
    pub fn idle_sessions(&self, cutoff: Millis) -> Vec<(CustomerId, SessionInfo)> {
        let mut idle = Vec::new();
        for c in self.customers.iter() {
            let Some(open) = c.current_session else {
                continue;
            };
            if let Some(s) = c
                .sessions
                .iter()
                .find(|s| s.id == open && s.last_seen < cutoff)
            {
                idle.push((*c.key(), s.clone()));
            }
        }
        idle
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

    // ---- the one way state changes ----

    /// Applies one published event. Deterministic: depends only on the state and the event.
    pub fn apply(&self, p: &Published) {
        let at = p.timestamp;
        match &p.body {
            Body::Lifecycle(e) => {
                self.touch(e.customer_id, Some(e.session_id), at);
                self.apply_lifecycle(e, p.seq, at);
            }
            Body::Visitor(e) => {
                self.touch(e.customer_id, e.session_id, at);
                self.apply_visitor(e, at);
            }
            Body::SessionStarted {
                customer_id,
                session_id,
                started_at,
                ..
            } => {
                self.touch(*customer_id, None, at);
                let mut c = self.customers.get_mut(customer_id).expect("touched above");
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
                if let Some(mut c) = self.customers.get_mut(customer_id) {
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
            } => self.merge_into(*visitor_id, merged_customer_ids),
        }
    }

    /// Creates the customer if new, and marks it (and a known session) as seen.
    fn touch(&self, customer: CustomerId, session: Option<SessionId>, at: Millis) {
        let mut c = self.customers.entry(customer).or_insert_with(|| Customer {
            identity: IdentityState::Anonymous,
            user_id: None,
            visitor_id: None,
            sessions: VecDeque::new(),
            current_session: None,
            actions: Vec::new(),
            first_seen: at,
            last_seen: at,
        });
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
            if let Some(mut c) = self.customers.get_mut(&e.customer_id) {
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

    fn apply_visitor(&self, e: &VisitorEvent, at: Millis) {
        if matches!(e.kind, VisitorKind::Page | VisitorKind::Track) {
            self.record_activity(e, at);
        }
        {
            let Some(mut c) = self.customers.get_mut(&e.customer_id) else {
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
            let visitor = self.link(e.customer_id, user_id);
            let mut profile = self.profiles.get_mut(&visitor).expect("linked above");
            if let Some(traits) = &e.traits {
                profile.traits.extend(traits.clone());
            }
            if let Some(channels) = &e.channels {
                profile.channels.extend(channels.clone());
            }
        }
    }

    /// Applies a change that is not an event. Deterministic, like [`State::apply`].
    pub fn apply_admin(&self, op: &AdminOp) {
        match op {
            AdminOp::UpdateTraits { visitor_id, traits } => {
                self.merge_into(*visitor_id, &[]);
                if let Some(mut p) = self.profiles.get_mut(visitor_id) {
                    p.traits.extend(traits.clone());
                }
            }
            AdminOp::Anonymize {
                visitor_id,
                customer_ids,
            } => {
                if let Some(mut p) = self.profiles.get_mut(visitor_id) {
                    for user in p.user_ids.iter() {
                        self.users.remove(user);
                    }
                    p.user_ids = Arc::from(Vec::<String>::new());
                    p.traits.clear();
                    p.channels.clear();
                }
                for id in customer_ids {
                    if let Some(mut c) = self.customers.get_mut(id) {
                        c.user_id = None;
                        c.identity = IdentityState::Anonymous;
                    }
                }
            }
            AdminOp::Delete {
                visitor_id,
                customer_ids,
            } => {
                if let Some((_, p)) = self.profiles.remove(visitor_id) {
                    for user in p.user_ids.iter() {
                        self.users.remove(user);
                    }
                }
                for id in customer_ids {
                    if let Some((_, c)) = self.customers.remove(id) {
                        for action in c.actions {
                            self.actions.remove(&action);
                        }
                    }
                }
            }
        }
    }

    /// Keeps a page view or track event in its session (a track event without a session
    /// goes to the customer's open session, if any).
    fn record_activity(&self, e: &VisitorEvent, at: Millis) {
        let Some(mut c) = self.customers.get_mut(&e.customer_id) else {
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
    fn link(&self, customer: CustomerId, user_id: &str) -> CustomerId {
        let target = self.users.get(user_id).map(|v| *v);
        let mine = self.customers.get(&customer).and_then(|c| c.visitor_id);
        let visitor = match (target, mine) {
            (Some(t), Some(m)) if t == m => return t,
            (None, Some(m)) => {
                self.add_user(m, user_id);
                return m;
            }
            (None, None) => {
                self.profiles.insert(
                    customer,
                    Profile {
                        user_ids: Arc::from(vec![user_id.to_string()]),
                        customers: vec![customer],
                        traits: Map::new(),
                        channels: Map::new(),
                    },
                );
                self.users.insert(user_id.to_string(), customer);
                customer
            }
            (Some(t), None) => {
                if let Some(mut p) = self.profiles.get_mut(&t) {
                    if !p.customers.contains(&customer) {
                        p.customers.push(customer);
                    }
                }
                t
            }
            (Some(t), Some(m)) => {
                // Two profiles are one person: fold the customer's profile into the user's.
                self.fold_profile(m, t);
                t
            }
        };
        if let Some(mut c) = self.customers.get_mut(&customer) {
            c.visitor_id = Some(visitor);
        }
        visitor
    }

    /// Puts every customer (and the profiles they belong to) into the profile `visitor`,
    /// creating it if the visitor was a customer with no profile yet.
    fn merge_into(&self, visitor: CustomerId, customers: &[CustomerId]) {
        if !self.profiles.contains_key(&visitor) {
            self.profiles.insert(
                visitor,
                Profile {
                    user_ids: Arc::from(Vec::<String>::new()),
                    customers: vec![visitor],
                    traits: Map::new(),
                    channels: Map::new(),
                },
            );
            if let Some(mut c) = self.customers.get_mut(&visitor) {
                c.visitor_id = Some(visitor);
            }
        }
        for &customer in customers {
            let current = self.customers.get(&customer).and_then(|c| c.visitor_id);
            match current {
                Some(v) if v == visitor => {}
                Some(other) => self.fold_profile(other, visitor),
                None => {
                    if let Some(mut p) = self.profiles.get_mut(&visitor) {
                        if !p.customers.contains(&customer) {
                            p.customers.push(customer);
                        }
                    }
                    if let Some(mut c) = self.customers.get_mut(&customer) {
                        c.visitor_id = Some(visitor);
                    }
                }
            }
        }
    }

    /// Moves everything of profile `source` into profile `target` and forgets `source`.
    fn fold_profile(&self, source: CustomerId, target: CustomerId) {
        let Some((_, source)) = self.profiles.remove(&source) else {
            return;
        };
        for u in source.user_ids.iter() {
            self.add_user(target, u);
        }
        for c in &source.customers {
            if let Some(mut cust) = self.customers.get_mut(c) {
                cust.visitor_id = Some(target);
            }
        }
        if let Some(mut p) = self.profiles.get_mut(&target) {
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

    fn add_user(&self, visitor: CustomerId, user_id: &str) {
        if let Some(mut p) = self.profiles.get_mut(&visitor) {
            if !p.user_ids.iter().any(|u| u == user_id) {
                let mut users = p.user_ids.to_vec();
                users.push(user_id.to_string());
                p.user_ids = users.into();
            }
        }
        self.users.insert(user_id.to_string(), visitor);
    }

    /// Forgets actions whose last event is older than `cutoff`, returning how many.
    pub fn evict_actions_before(&self, cutoff: Millis) -> usize {
        let old: Vec<(ActionId, CustomerId)> = self
            .actions
            .iter()
            .filter(|a| a.last().timestamp < cutoff)
            .map(|a| (*a.key(), a.latest.customer_id))
            .collect();
        for (id, customer) in &old {
            self.actions.remove(id);
            if let Some(mut c) = self.customers.get_mut(customer) {
                c.actions.retain(|a| a != id);
            }
        }
        old.len()
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
    /// restricted to the given customers when `customers` is `Some`.
    pub fn select_actions(
        &self,
        customers: Option<&[CustomerId]>,
        mut keep: impl FnMut(&LifecycleEvent) -> bool,
    ) -> Vec<(Seq, Value, CustomerId)> {
        let mut out = Vec::new();
        let mut visit = |a: &Action| {
            if keep(&a.latest) {
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
/// by [`State::apply_admin`] (so a replay repeats it), never delivered to subscribers.
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
impl State {
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
    /// user ids and the `name` and `email` traits, and by whether it is identified.
    pub fn visitors(&self, search: Option<&str>, identified: Option<bool>) -> Vec<CustomerId> {
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let mut found: Vec<(Millis, CustomerId)> = Vec::new();
        let mut consider =
            |visitor: CustomerId, users: &[String], traits: Option<&Map<String, Value>>| {
                if identified.is_some_and(|want| want == users.is_empty()) {
                    return;
                }
                if let Some(needle) = &needle {
                    let trait_text = |key: &str| {
                        traits
                            .and_then(|t| t.get(key))
                            .and_then(Value::as_str)
                            .map(str::to_lowercase)
                    };
                    let hit = users
                        .iter()
                        .any(|u| u.to_lowercase().contains(needle.as_str()))
                        || ["name", "email"]
                            .iter()
                            .any(|k| trait_text(k).is_some_and(|t| t.contains(needle.as_str())));
                    if !hit {
                        return;
                    }
                }
                found.push((0, visitor));
            };
        for p in self.profiles.iter() {
            consider(*p.key(), &p.user_ids, Some(&p.traits));
        }
        let lone: Vec<CustomerId> = self
            .customers
            .iter()
            .filter(|c| c.visitor_id.is_none())
            .map(|c| *c.key())
            .collect();
        for c in lone {
            consider(c, &[], None);
        }
        for entry in &mut found {
            entry.0 = self.visitor_last_seen(entry.1);
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        found.into_iter().map(|(_, v)| v).collect()
    }

    fn visitor_last_seen(&self, visitor: CustomerId) -> Millis {
        self.visitor_customers(visitor)
            .iter()
            .filter_map(|c| self.customers.get(c).map(|c| c.last_seen))
            .max()
            .unwrap_or(0)
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
