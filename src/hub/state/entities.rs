//! What the state keeps: customers and their sessions, visitor profiles, actions and their
//! transitions, and the per action-map counts. Plain data: [`HubState`](super::HubState)
//! holds it in its maps, and only the fold (`apply.rs`) changes it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::clock::Millis;
use crate::ids::{ActionId, ActionMapId, CompanyId, CustomerId, Seq, SessionId, UserId, VisitorId};
use crate::ingest::event::{
    EndReason, LifecycleEvent, Software, VisitorEvent, VisitorKind, MAX_CLIENT_TEXT_CHARS,
};
use crate::ingest::lifecycle::{ActionState, MediaType};

/// Sessions remembered per customer; older ones are forgotten.
pub(super) const MAX_SESSIONS_PER_CUSTOMER: usize = 32;
/// Page views and track events remembered per session; older ones are forgotten.
pub(super) const MAX_ACTIVITY_PER_SESSION: usize = 50;

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
    /// When a page view's page was last left or hidden (its newest `exit`), if ever.
    pub exited_at: Option<Millis>,
    /// The page (`page` events) or the event's name and properties (`track`), as the
    /// event carried them.
    pub detail: Value,
}

impl Activity {
    /// What a session keeps of a page view or track event.
    pub fn detail_of(e: &VisitorEvent) -> Value {
        match e.kind {
            VisitorKind::Page => Value::Object(e.page.clone().unwrap_or_default()),
            _ => json!({ "name": e.name, "properties": e.properties }),
        }
    }

    /// The detail as anonymizing keeps it: the detail of its event anonymized
    /// ([`VisitorEvent::anonymized`]), so the session's copy follows the history's rule.
    pub fn anonymized_detail(&self) -> Value {
        let object = |v: &Value| v.as_object().cloned();
        let (page, name, properties) = match self.kind {
            VisitorKind::Page => (object(&self.detail), None, None),
            _ => (
                None,
                self.detail["name"].as_str().map(str::to_owned),
                object(&self.detail["properties"]),
            ),
        };
        // The event again as far as the detail tells; its ids play no part in the rule.
        let event = VisitorEvent {
            kind: self.kind,
            customer_id: CustomerId(uuid::Uuid::nil()),
            session_id: None,
            user_id: None,
            traits: None,
            channels: None,
            page,
            name,
            properties,
            event_id: None,
            attributes: None,
            company: None,
            client: None,
        };
        Activity::detail_of(&event.anonymized())
    }
}

/// One browser identity.
#[derive(Clone, Debug)]
pub struct Customer {
    pub identity: IdentityState,
    /// The site's user id this customer last identified as.
    pub user_id: Option<UserId>,
    /// The visitor profile this customer belongs to, once linked to a user id.
    pub visitor_id: Option<VisitorId>,
    /// Newest last; at most [`MAX_SESSIONS_PER_CUSTOMER`].
    pub sessions: VecDeque<SessionInfo>,
    /// The open session, if any.
    pub current_session: Option<SessionId>,
    /// Actions of this customer still held in state.
    pub actions: Vec<ActionId>,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// What its page views said of its browser, system and place.
    pub client: ClientInfo,
    /// The seq of the event that last changed this customer (for snapshots).
    pub stamp: Seq,
}

/// What a customer's page views said of its browser, its operating system and where it
/// is: each field the newest one reported (a page view that says nothing of one keeps
/// the older). Kept per customer, as each is one browser; never an address.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientInfo {
    pub browser: Option<Software>,
    pub os: Option<Software>,
    pub country: Option<String>,
    pub city: Option<String>,
    /// The IANA time zone the page sent as `page.timezone`.
    pub timezone: Option<String>,
}

impl ClientInfo {
    /// Takes what a page event reports: its `client` (set by the edge) and its
    /// `page.timezone` (set by the browser; kept only when it is a short text, since a
    /// page's other keys are the site's own).
    pub(super) fn note(&mut self, e: &VisitorEvent) {
        if let Some(client) = &e.client {
            newer(&mut self.browser, &client.browser);
            newer(&mut self.os, &client.os);
            newer(&mut self.country, &client.country);
            newer(&mut self.city, &client.city);
        }
        let timezone = e.page.as_ref().and_then(|p| p.get("timezone"));
        if let Some(zone) = timezone.and_then(Value::as_str) {
            if !zone.is_empty() && zone.chars().count() <= MAX_CLIENT_TEXT_CHARS {
                self.timezone = Some(zone.to_owned());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == ClientInfo::default()
    }
}

/// Takes `new` over `old` when it says something.
fn newer<T: Clone>(old: &mut Option<T>, new: &Option<T>) {
    if new.is_some() {
        old.clone_from(new);
    }
}

/// One visitor: the customers (browsers) known to be the same person.
#[derive(Clone, Debug)]
pub struct Profile {
    pub user_ids: Arc<[UserId]>,
    pub customers: Vec<CustomerId>,
    pub traits: Map<String, Value>,
    pub channels: Map<String, Value>,
    /// The company the visitor belongs to: the newest one an identity event, an update or
    /// the API named. Segments read it through [`Profile::company`].
    pub company: Option<CompanyId>,
    /// The seq of the event that last changed this profile (for snapshots).
    pub stamp: Seq,
}

impl Profile {
    /// The visitor's company, if any.
    pub fn company(&self) -> Option<&CompanyId> {
        self.company.as_ref()
    }
}

/// A company visitors belong to. It outlives its members: anonymizing or erasing a
/// visitor takes only the membership, and the counts follow.
#[derive(Clone, Debug, PartialEq)]
pub struct Company {
    pub name: Option<String>,
    /// Every key but `id` and `name` its reports carried, newest value per key.
    pub attributes: Map<String, Value>,
    /// How many profiles name it now, kept as memberships change (never counted).
    pub visitor_count: u64,
    /// When it was first named, and when it or one of its visitors was last seen.
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// The seq of the event that last changed this company (for snapshots).
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

    /// Whether it is a webchat that reached `started`: an invitation that became a
    /// conversation (the reference's `conversationCount` counts these).
    pub fn is_conversation(&self) -> bool {
        self.latest.media == MediaType::Webchat
            && self
                .transitions
                .iter()
                .any(|t| t.state == ActionState::Started)
    }
}

/// The per-map counters, as a snapshot copies them.
pub type SnapshotMaps = BTreeMap<MapKey, MapCounts>;

/// What the per-map counters are kept by. The media type is part of it because one map id
/// may serve actions of more than one kind, whose states differ: counted together, a
/// content offer's row would show a webchat's `timedout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MapKey {
    pub action_map_id: ActionMapId,
    pub action_map_version: u32,
    pub media: MediaType,
}

/// Per (action map, version, media type) counts of actions that reached each state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MapCounts {
    pub(super) counts: BTreeMap<ActionState, u64>,
}

impl MapCounts {
    /// How many actions reached each state.
    pub fn counts(&self) -> &BTreeMap<ActionState, u64> {
        &self.counts
    }
}
