//! The hub's in-memory state: customers (identity, sessions), visitor profiles, actions
//! (current state and transitions), and per action-map counters.
//!
//! The state changes only through [`HubState::apply`], which takes a published event, and
//! [`HubState::apply_admin`], which takes a logged change that is not one ([`AdminOp`]).
//! Both are deterministic: applying the same log in order always builds the same state, so
//! a replay rebuilds it. Only the sequencer calls them (under its lock); HTTP handlers,
//! snapshots and the fan-out read concurrently through the methods here, which never hold a
//! map entry while touching another entry of the same map.
//!
//! One concept a file: `entities.rs` (what is kept), `apply.rs` (the two writers),
//! `channels.rs` (the visitor each channel user id names), `recency.rs` (customers by when
//! they were last seen), `copy_on_write.rs` (a snapshot's preimages, and restoring from
//! one), `encoding.rs` (the entities in a snapshot file), `profile_limits.rs` (what one
//! visitor profile may hold), `queries.rs` (the reads the edge turns into views),
//! `segments.rs` (the visitor a segment condition reads, and the segment table's reads).
//! This file holds the maps and the reads the sequencer decides with, among them the one
//! rule of which profiles an identity event links ([`HubState::linking`]). No JSON shape
//! a client sees is written here: the queries return typed copies, and `edge::views`
//! shapes them.

mod apply;
mod channels;
mod copy_on_write;
mod encoding;
mod entities;
mod profile_limits;
mod queries;
mod recency;
mod segments;

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};

use crate::hub::segments::Segments;
use crate::ids::{
    ActionId, ActionMapId, ChannelUserId, CompanyId, CustomerId, Seq, SessionId, UserId, VisitorId,
};
use crate::ingest::event::LifecycleEvent;
use crate::ingest::lifecycle::{ActionState, MediaType};

pub use apply::{AdminOp, CompanyChange};
pub use copy_on_write::SnapshotItem;
pub use encoding::{decode_membership, encode_membership};
pub use entities::{
    Action, Activity, ClientInfo, Company, Customer, IdentityState, MapCounts, MapKey, Profile,
    SessionInfo, SnapshotMaps, Transition,
};
pub use profile_limits::{
    ProfileFull, MAX_CUSTOMERS_PER_PROFILE, MAX_PROFILE_OBJECT_BYTES, MAX_USER_IDS_PER_PROFILE,
};
pub use queries::{Visitor, VisitorHistory, VisitorSession};
pub use segments::CompanyFields;

use copy_on_write::CopyOnWrite;
use recency::Recency;

/// Everything the hub knows, in memory.
#[derive(Default)]
pub struct HubState {
    actions: DashMap<ActionId, Action>,
    customers: DashMap<CustomerId, Customer>,
    /// Profiles by visitor id.
    profiles: DashMap<VisitorId, Profile>,
    /// userId -> visitor id.
    users: DashMap<UserId, VisitorId>,
    /// Channel user id -> visitor id: the pairs of the profiles' `channels` (`channels.rs`).
    channels: DashMap<ChannelUserId, VisitorId>,
    /// Companies by id, with their visitor counts (kept by the fold as memberships
    /// change, and snapshotted with them).
    companies: DashMap<CompanyId, Company>,
    maps: Mutex<SnapshotMaps>,
    /// The preimages of a snapshot being written (see [`HubState::begin_snapshot`]).
    cow: Mutex<Option<CopyOnWrite>>,
    /// Whether `cow` is set: one atomic load on every change when no snapshot runs.
    cow_on: AtomicBool,
    /// Customers ordered by when they were last seen and by when their open session was,
    /// so the sweeper and the visitor list never scan every customer. A leaf lock: nothing
    /// is taken while it is held.
    recency: Mutex<Recency>,
    /// The segments and their members (`hub::segments`). Changed only by the fold; a leaf
    /// lock, like `recency`.
    segments: RwLock<Segments>,
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

/// The profiles an identity event links (see [`HubState::linking`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Linking {
    /// The profile the customer ends in.
    pub(crate) target: VisitorId,
    /// Whether `target` is a profile already; if not, the event starts it.
    pub(crate) exists: bool,
    /// The other profiles the event folds into `target`, in the order it folds them.
    pub(crate) folds: Vec<VisitorId>,
}

/// Whether a session is new to a customer, and which open session it would replace.
#[derive(Debug)]
pub enum SessionStatus {
    Known,
    New { replaces: Option<SessionInfo> },
}

/// The reads the sequencer decides with.
impl HubState {
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

    pub fn user_of(&self, customer: CustomerId) -> Option<UserId> {
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

    /// The profile `customer` belongs to. That is the customer's own `visitor_id`, or, for
    /// a customer forgotten (idle past the visitor age) and back again, the profile that
    /// outlived it under its id with the profile's other customers: the cookie is the
    /// same browser, and a new profile under that id would replace the one that is there.
    pub(crate) fn profile_of(&self, customer: CustomerId) -> Option<VisitorId> {
        let own = self.customers.get(&customer).and_then(|c| c.visitor_id);
        own.or_else(|| {
            let kept = VisitorId::of_first_customer(customer);
            self.profiles.contains_key(&kept).then_some(kept)
        })
    }

    /// What an identity event (identify, signin, userinfo) of `customer` with `user_id`
    /// and `channels` does to profiles. The profiles it names, in this order: the one
    /// `user_id` belongs to, those its channel ids belong to (in channel name order), and
    /// the customer's own. The first is the one the customer ends in, and every other one
    /// folds into it: a userId or a channel user id names one person, so two profiles that
    /// hold it are one. Naming none, the customer starts a profile under its own id. A
    /// function of the state alone, so the sequencer's decision and the fold agree.
    pub(crate) fn linking(
        &self,
        customer: CustomerId,
        user_id: Option<&UserId>,
        channels: Option<&Map<String, Value>>,
    ) -> Linking {
        let by_user = user_id.and_then(|u| self.users.get(u).map(|v| *v));
        let by_channel = channels
            .into_iter()
            .flat_map(ChannelUserId::all_in)
            .filter_map(|id| self.channel_owner(&id));
        let mut named: Vec<VisitorId> = Vec::new();
        for visitor in by_user
            .into_iter()
            .chain(by_channel)
            .chain(self.profile_of(customer))
        {
            if !named.contains(&visitor) {
                named.push(visitor);
            }
        }
        match named.split_first() {
            Some((target, folds)) => Linking {
                target: *target,
                exists: true,
                folds: folds.to_vec(),
            },
            None => Linking {
                target: VisitorId::of_first_customer(customer),
                exists: false,
                folds: Vec::new(),
            },
        }
    }

    /// If an identity event of `customer` (see [`HubState::linking`]) would merge it with
    /// other customers: the profile's visitor id and every customer it would then hold.
    pub fn merge_preview(
        &self,
        customer: CustomerId,
        user_id: Option<&UserId>,
        channels: Option<&Map<String, Value>>,
    ) -> Option<(VisitorId, Vec<CustomerId>)> {
        let linking = self.linking(customer, user_id, channels);
        let mine = self.profile_of(customer);
        let others = std::iter::once(linking.target)
            .chain(linking.folds.iter().copied())
            .any(|v| Some(v) != mine);
        if !linking.exists || !others {
            return None;
        }
        let mut customers = self.profiles.get(&linking.target)?.customers.clone();
        let folded = linking.folds.iter().flat_map(|f| {
            self.profiles
                .get(f)
                .map(|p| p.customers.clone())
                .unwrap_or_default()
        });
        for c in folded.chain([customer]) {
            if !customers.contains(&c) {
                customers.push(c);
            }
        }
        Some((linking.target, customers))
    }

    /// The user ids linked to a customer's profile (for `where.userId`).
    pub fn linked_users(&self, customer: CustomerId) -> Option<Arc<[UserId]>> {
        let visitor = self.customers.get(&customer)?.visitor_id?;
        self.profiles.get(&visitor).map(|p| p.user_ids.clone())
    }

    /// The customers of the profile a user id belongs to.
    pub fn customers_of_user(&self, user_id: &UserId) -> Vec<CustomerId> {
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

    /// The distinct customers among some (deduplicated, in first-seen order).
    pub fn distinct(customers: impl IntoIterator<Item = CustomerId>) -> Vec<CustomerId> {
        let mut seen = HashSet::new();
        customers.into_iter().filter(|c| seen.insert(*c)).collect()
    }
}

#[cfg(test)]
mod tests;
