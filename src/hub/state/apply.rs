//! The one way state changes: [`HubState::apply`] folds a published event in, and
//! [`HubState::apply_admin`] a visitor change that is not an event ([`AdminOp`]). Both
//! depend only on the state and their input, so replaying the log in seq order rebuilds
//! the state exactly. Every change saves its entity's snapshot preimage first and stamps
//! the entity with the seq that changed it (see `copy_on_write.rs`).
//!
//! What the sweeper forgets (customers idle past the visitor age, actions past the
//! retention age) is its choice, made with the time of its tick, so it is an [`AdminOp`]
//! too: logged, and repeated by a replay rather than decided again.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::entities::{MAX_ACTIVITY_PER_SESSION, MAX_SESSIONS_PER_CUSTOMER};
use super::recency::recency_key;
use super::{
    Action, Activity, ClientInfo, Company, Customer, HubState, IdentityState, MapKey, Profile,
    SessionInfo, Transition,
};
use crate::clock::Millis;
use crate::hub::segments::Segment;
use crate::ids::{
    ActionId, ChannelUserId, CompanyId, CustomerId, SegmentId, Seq, SessionId, UserId, VisitorId,
};
use crate::ingest::event::{
    Body, CompanyInfo, LifecycleEvent, Published, VisitorEvent, VisitorKind,
};
use crate::ingest::validate::company_of;

/// A change to visitors that is not an event: logged in order with the events and applied
/// by [`HubState::apply_admin`] (so a replay repeats it), never delivered to subscribers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum AdminOp {
    /// Merge attributes into a visitor's traits, and make it a member of a company.
    UpdateTraits {
        visitor_id: VisitorId,
        traits: Map<String, Value>,
        /// Absent from what releases before companies logged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        company: Option<CompanyChange>,
    },
    /// Remove traits, channels and user ids; keep the action history.
    Anonymize {
        visitor_id: VisitorId,
        customer_ids: Vec<CustomerId>,
    },
    /// Forget everything about the visitor's customers.
    Delete {
        visitor_id: VisitorId,
        customer_ids: Vec<CustomerId>,
    },
    /// Forget customers idle past the visitor age (the sweeper's choice, so logged), with
    /// their actions; a profile goes with its last customer. Their retained events stay
    /// until retention drops them.
    Evict { customer_ids: Vec<CustomerId> },
    /// Forget actions whose last event is older than `cutoff` (the sweeper's tick time
    /// less the retention age, so logged). An action named here that has had an event
    /// since `cutoff` stays, which keeps the change idempotent. Their retained events stay
    /// until retention drops them.
    EvictActions {
        action_ids: Vec<ActionId>,
        cutoff: Millis,
    },
    /// Create or replace a segment's definition (`hub::segments`). Who it holds changes
    /// by the `segment:entered` and `segment:left` events decided after it.
    PutSegment { segment: Segment },
    /// Remove a segment and its memberships.
    DeleteSegment { segment_id: SegmentId },
}

/// The company a visitor change names, as the request gave it (`{"id", "name"?, ...}`,
/// checked by `ingest::validate::company_of` before it is logged), with the time it was
/// decided at: a company's first and last seen times come from its input, never a clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompanyChange {
    pub at: Millis,
    pub company: Map<String, Value>,
}

impl HubState {
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
            // Changes no customer: the membership is the whole of it.
            Body::Segment {
                entered,
                segment_id,
                visitor_id,
                ..
            } => {
                let mut segments = self.segments.write();
                match entered {
                    true => segments.enter(*segment_id, *visitor_id),
                    false => segments.leave(*segment_id, *visitor_id),
                }
            }
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
            client: ClientInfo::default(),
            stamp: seq,
        });
        c.stamp = seq;
        c.last_seen = c.last_seen.max(at);
        if let Some(s) = session.and_then(|id| c.sessions.iter_mut().find(|s| s.id == id)) {
            s.last_seen = s.last_seen.max(at);
        }
        let visitor = c.visitor_id;
        drop(c);
        // A company is seen when one of its visitors is: one lookup per event, so its
        // `lastSeenAt` never needs a scan of its members.
        let company = visitor.and_then(|v| self.profiles.get(&v).and_then(|p| p.company.clone()));
        if let Some(mut company) = company.and_then(|id| self.company_mut(&id, seq)) {
            company.last_seen = company.last_seen.max(at);
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
            .entry(MapKey {
                action_map_id: e.action_map_id,
                action_map_version: e.action_map_version,
                media: e.media,
            })
            .or_default();
        *counts.counts.entry(e.state).or_default() += 1;
    }

    fn apply_visitor(&self, e: &VisitorEvent, at: Millis, seq: Seq) {
        match e.kind {
            VisitorKind::Page | VisitorKind::Track => self.record_activity(e, at, seq),
            VisitorKind::Exit => self.record_exit(e, at, seq),
            VisitorKind::Update => {
                let visitor = self.current_visitor(e.customer_id, seq);
                if let Some(attributes) = &e.attributes {
                    if let Some(mut profile) = self.profile_mut(visitor, seq) {
                        profile.traits.extend(attributes.clone());
                    }
                }
                if let Some(company) = &e.company {
                    self.join_company(visitor, company, at, seq);
                }
                return;
            }
            _ => {}
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
                // An identify through channels alone leaves the user id as it was.
                VisitorKind::Identify | VisitorKind::Signin | VisitorKind::Userinfo
                    if e.user_id.is_some() =>
                {
                    c.user_id = e.user_id.clone()
                }
                _ => {}
            }
        }
        if e.links() {
            let visitor = self.link(e.customer_id, e.user_id.as_ref(), e.channels.as_ref(), seq);
            if let Some(traits) = &e.traits {
                let mut profile = self.profile_mut(visitor, seq).expect("linked above");
                profile.traits.extend(traits.clone());
            }
            if let Some(channels) = &e.channels {
                self.add_channels(visitor, channels, seq);
            }
            if let Some(company) = &e.company {
                self.join_company(visitor, company, at, seq);
            }
        }
    }

    /// The profile of the customer's visitor, started (under the customer's own id) when
    /// the customer is a lone visitor still: what an update changes.
    fn current_visitor(&self, customer: CustomerId, seq: Seq) -> VisitorId {
        let visitor = self
            .profile_of(customer)
            .unwrap_or(VisitorId::of_first_customer(customer));
        self.merge_into(visitor, &[], seq);
        visitor
    }

    /// Makes the profile `visitor` a member of `company` (its one company: a new one
    /// replaces the old), creating the company or taking its newer name and attributes.
    fn join_company(&self, visitor: VisitorId, company: &CompanyInfo, at: Millis, seq: Seq) {
        self.save_company(&company.id);
        {
            let mut entry = self
                .companies
                .entry(company.id.clone())
                .or_insert_with(|| Company {
                    name: None,
                    attributes: Map::new(),
                    visitor_count: 0,
                    first_seen: at,
                    last_seen: at,
                    stamp: seq,
                });
            if company.name.is_some() {
                entry.name.clone_from(&company.name);
            }
            entry.attributes.extend(company.attributes.clone());
            entry.first_seen = entry.first_seen.min(at);
            entry.last_seen = entry.last_seen.max(at);
            entry.stamp = seq;
        }
        let before = match self.profile_mut(visitor, seq) {
            Some(mut p) => p.company.replace(company.id.clone()),
            None => return,
        };
        if before.as_ref() != Some(&company.id) {
            self.count_member(before.as_ref(), -1, seq);
            self.count_member(Some(&company.id), 1, seq);
        }
    }

    /// Moves a company's visitor count by one member joining or leaving.
    fn count_member(&self, company: Option<&CompanyId>, change: i64, seq: Seq) {
        if let Some(mut c) = company.and_then(|id| self.company_mut(id, seq)) {
            c.visitor_count = c.visitor_count.saturating_add_signed(change);
        }
    }

    /// Closes the newest remembered view of the exit's page in its session: its time on
    /// page ends at the exit (the newest exit, when a page is hidden and shown again).
    /// An exit of a page the session does not remember changes nothing but last seen.
    fn record_exit(&self, e: &VisitorEvent, at: Millis, seq: Seq) {
        let (Some(session), Some(url)) = (e.session_id, e.page.as_ref().and_then(|p| p.get("url")))
        else {
            return;
        };
        let Some(mut c) = self.customer_mut(e.customer_id, seq) else {
            return;
        };
        let Some(s) = c.sessions.iter_mut().find(|s| s.id == session) else {
            return;
        };
        let viewed = s
            .activity
            .iter_mut()
            .rev()
            .find(|a| a.kind == VisitorKind::Page && a.detail.get("url") == Some(url));
        if let Some(page) = viewed.filter(|page| page.at <= at) {
            page.exited_at = Some(at);
        }
    }

    /// Applies a change that is not an event, logged after the event at `seq`.
    /// Deterministic like [`HubState::apply`], and idempotent, so a replay that meets a change
    /// a snapshot already holds may apply it again.
    pub fn apply_admin(&self, op: &AdminOp, seq: Seq) {
        match op {
            AdminOp::UpdateTraits {
                visitor_id,
                traits,
                company,
            } => {
                // The sequencer took it only for a visitor there was; replayed after the
                // visitor was forgotten at the same seq, it must not make a profile again.
                if self.visitor_customers(*visitor_id).is_empty() {
                    return;
                }
                self.merge_into(*visitor_id, &[], seq);
                if let Some(mut p) = self.profile_mut(*visitor_id, seq) {
                    p.traits.extend(traits.clone());
                }
                // Checked before it was logged; one this release cannot read changes nothing.
                let named = company
                    .as_ref()
                    .and_then(|c| Some((c.at, company_of(c.company.clone()).ok()?)));
                if let Some((at, company)) = named {
                    self.join_company(*visitor_id, &company, at, seq);
                }
            }
            AdminOp::Anonymize {
                visitor_id,
                customer_ids,
            } => {
                let (users, channels, company) = match self.profile_mut(*visitor_id, seq) {
                    Some(mut p) => {
                        p.traits.clear();
                        let channels = std::mem::take(&mut p.channels);
                        let users =
                            std::mem::replace(&mut p.user_ids, Arc::from(Vec::<UserId>::new()));
                        (users, channels, p.company.take())
                    }
                    None => (Arc::from(Vec::<UserId>::new()), Map::new(), None),
                };
                // Where the person works is theirs too; the company stays, one member less.
                self.count_member(company.as_ref(), -1, seq);
                for user in users.iter() {
                    self.users.remove(user);
                }
                self.unindex_channels(*visitor_id, ChannelUserId::all_in(&channels));
                for id in customer_ids {
                    let actions = match self.customer_mut(*id, seq) {
                        Some(mut c) => {
                            c.user_id = None;
                            c.identity = IdentityState::Anonymous;
                            // Its place and device are about the person too.
                            c.client = ClientInfo::default();
                            for session in c.sessions.iter_mut() {
                                for activity in session.activity.iter_mut() {
                                    activity.detail = activity.anonymized_detail();
                                }
                            }
                            c.actions.clone()
                        }
                        None => Vec::new(),
                    };
                    // The actions keep their states and transitions; their latest report
                    // loses its free text, as the history's copy of it does.
                    for action in actions {
                        self.save_action(action);
                        if let Some(mut a) = self.actions.get_mut(&action) {
                            a.latest = a.latest.anonymized();
                        }
                    }
                }
            }
            AdminOp::Delete {
                visitor_id,
                customer_ids,
            } => {
                self.forget_profile(*visitor_id, seq);
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
                        self.forget_profile(visitor, seq);
                    }
                }
            }
            AdminOp::EvictActions { action_ids, cutoff } => {
                self.evict_actions(action_ids, *cutoff, seq)
            }
            AdminOp::PutSegment { segment } => self.segments.write().put(segment.clone()),
            AdminOp::DeleteSegment { segment_id } => self.segments.write().remove(*segment_id),
        }
    }

    /// Removes a profile, the user ids and channel ids that named it, and its company
    /// membership (the company stays).
    fn forget_profile(&self, visitor: VisitorId, seq: Seq) {
        self.save_profile(visitor);
        // A forgotten visitor leaves its segments without an event (docs/protocol.md).
        self.segments.write().forget(visitor);
        if let Some((_, p)) = self.profiles.remove(&visitor) {
            for user in p.user_ids.iter() {
                self.users.remove(user);
            }
            self.unindex_channels(visitor, ChannelUserId::all_in(&p.channels));
            self.count_member(p.company.as_ref(), -1, seq);
        }
    }

    /// Removes a customer with its actions; returns its profile's visitor id, if it had one.
    fn forget_customer(&self, id: CustomerId) -> Option<VisitorId> {
        self.save_customer(id);
        let (_, c) = self.customers.remove(&id)?;
        let lone = VisitorId::of_first_customer(id);
        if !self.profiles.contains_key(&lone) {
            self.segments.write().forget(lone);
        }
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
        if e.kind == VisitorKind::Page {
            c.client.note(e);
        }
        let Some(session) = e.session_id.or(c.current_session) else {
            return;
        };
        let Some(s) = c.sessions.iter_mut().find(|s| s.id == session) else {
            return;
        };
        if e.kind == VisitorKind::Page {
            s.pages_viewed += 1;
        }
        s.activity.push_back(Activity {
            at,
            kind: e.kind,
            exited_at: None,
            detail: Activity::detail_of(e),
        });
        while s.activity.len() > MAX_ACTIVITY_PER_SESSION {
            s.activity.pop_front();
        }
    }

    /// Links a customer to the profile its identity event names (see
    /// [`HubState::linking`]): starts it, or folds the other profiles the event names into
    /// it, and gives it the user id. Returns the customer's visitor id.
    fn link(
        &self,
        customer: CustomerId,
        user_id: Option<&UserId>,
        channels: Option<&Map<String, Value>>,
        seq: Seq,
    ) -> VisitorId {
        let linking = self.linking(customer, user_id, channels);
        let visitor = linking.target;
        if !linking.exists {
            // The customer's first profile keeps the id it had as a lone visitor.
            self.start_profile(visitor, customer, seq);
        }
        // Profiles that are one person: fold them into the one the customer joins.
        for source in linking.folds {
            self.fold_profile(source, visitor, seq);
        }
        if let Some(user_id) = user_id {
            if self.users.get(user_id).map(|v| *v) != Some(visitor) {
                self.add_user(visitor, user_id, seq);
            }
        }
        // The customer is in the profile (again, when it was forgotten and came back).
        let joining = self
            .profiles
            .get(&visitor)
            .is_some_and(|p| !p.customers.contains(&customer));
        if joining {
            if let Some(mut p) = self.profile_mut(visitor, seq) {
                p.customers.push(customer);
            }
        }
        let linked = self
            .customers
            .get(&customer)
            .is_some_and(|c| c.visitor_id == Some(visitor));
        if !linked {
            if let Some(mut c) = self.customer_mut(customer, seq) {
                c.visitor_id = Some(visitor);
            }
        }
        visitor
    }

    /// A new profile `visitor` holding `customer` alone, and nothing else yet.
    fn start_profile(&self, visitor: VisitorId, customer: CustomerId, seq: Seq) {
        self.save_profile(visitor);
        self.profiles.insert(
            visitor,
            Profile {
                user_ids: Arc::from(Vec::<UserId>::new()),
                customers: vec![customer],
                traits: Map::new(),
                channels: Map::new(),
                company: None,
                stamp: seq,
            },
        );
    }

    /// Puts every customer (and the profiles they belong to) into the profile `visitor`,
    /// creating it if the visitor was a customer with no profile yet.
    fn merge_into(&self, visitor: VisitorId, customers: &[CustomerId], seq: Seq) {
        if !self.profiles.contains_key(&visitor) {
            // A visitor without a profile is a lone customer; its profile starts with it.
            let first = visitor.first_customer();
            self.start_profile(visitor, first, seq);
            if let Some(mut c) = self.customer_mut(first, seq) {
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
    fn fold_profile(&self, source_id: VisitorId, target: VisitorId, seq: Seq) {
        self.save_profile(source_id);
        let Some((_, source)) = self.profiles.remove(&source_id) else {
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
        // The target's id wins on a channel both hold; the source's then names no one.
        let (mut moved, mut dropped) = (Map::new(), Map::new());
        // The target's company wins too; the source's loses a member unless the target
        // takes it over.
        let mut left_company = source.company.clone();
        match self.profile_mut(target, seq) {
            Some(mut p) => {
                if p.company.is_none() {
                    p.company = left_company.take();
                }
                for c in source.customers {
                    if !p.customers.contains(&c) {
                        p.customers.push(c);
                    }
                }
                for (k, v) in source.traits {
                    p.traits.entry(k).or_insert(v);
                }
                for (k, v) in source.channels {
                    if p.channels.contains_key(&k) {
                        dropped.insert(k, v);
                    } else {
                        p.channels.insert(k.clone(), v.clone());
                        moved.insert(k, v);
                    }
                }
            }
            None => dropped = source.channels,
        }
        self.count_member(left_company.as_ref(), -1, seq);
        self.unindex_channels(source_id, ChannelUserId::all_in(&dropped));
        self.index_channels(target, ChannelUserId::all_in(&moved));
    }

    fn add_user(&self, visitor: VisitorId, user_id: &UserId, seq: Seq) {
        if let Some(mut p) = self.profile_mut(visitor, seq) {
            if !p.user_ids.contains(user_id) {
                let mut users = p.user_ids.to_vec();
                users.push(user_id.clone());
                p.user_ids = users.into();
            }
        }
        self.users.insert(user_id.clone(), visitor);
    }

    // ---- the sweeper's eviction of old actions ----

    /// The actions whose last event is older than `cutoff`, in id order (so two hubs with
    /// the same state name the same ones in the same chunks): a scan that takes no lock
    /// beyond one map shard at a time, so the sweeper runs it outside the sequencer lock.
    pub fn actions_before(&self, cutoff: Millis) -> Vec<ActionId> {
        let mut old: Vec<ActionId> = self
            .actions
            .iter()
            .filter(|a| a.last().timestamp < cutoff)
            .map(|a| *a.key())
            .collect();
        old.sort_unstable();
        old
    }

    /// Those of `ids` whose last event is still older than `cutoff`, in their order: what
    /// an [`AdminOp::EvictActions`] decided now would forget.
    pub fn still_before(&self, ids: &[ActionId], cutoff: Millis) -> Vec<ActionId> {
        let old = |id: &&ActionId| {
            self.actions
                .get(*id)
                .is_some_and(|a| a.last().timestamp < cutoff)
        };
        ids.iter().filter(old).copied().collect()
    }

    /// Forgets the given actions whose last event is older than `cutoff`, and takes them
    /// off their customers' lists, stamping those customers with `seq` (the change is
    /// logged after the event at `seq`). Saves preimages like every other change, so it
    /// may run while a snapshot is being written.
    fn evict_actions(&self, ids: &[ActionId], cutoff: Millis, seq: Seq) {
        // Customers in id order, so their changes are made in an order both hubs share.
        let mut evicted: BTreeMap<CustomerId, HashSet<ActionId>> = BTreeMap::new();
        for id in self.still_before(ids, cutoff) {
            // Nothing else changes actions meanwhile (this runs under the sequencer lock,
            // or in recovery's one thread), so an action found old above is old still.
            self.save_action(id);
            if let Some((_, action)) = self.actions.remove(&id) {
                evicted
                    .entry(action.latest.customer_id)
                    .or_default()
                    .insert(id);
            }
        }
        // One pass over each customer's list, however many of its actions go.
        for (customer, gone) in evicted {
            if let Some(mut c) = self.customer_mut(customer, seq) {
                c.actions.retain(|a| !gone.contains(a));
            }
        }
    }
}
