//! The reads the edge turns into views (`edge::views`): an action, a customer, the live
//! actions of a customer, the per-map counts, the actions and identities a `snapshot`
//! frame shows, and the visitor API's reads (resolving ids, the list and its search, a
//! visitor, its sessions, its export). Each returns typed copies, taken one map entry at
//! a time; none shapes JSON.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::{
    Action, ClientInfo, Company, Customer, HubState, IdentityState, SessionInfo, SnapshotMaps,
};
use crate::clock::Millis;
use crate::ids::{
    ActionId, ChannelUserId, CompanyId, CustomerId, SegmentId, Seq, UserId, VisitorId,
};
use crate::ingest::event::LifecycleEvent;

impl HubState {
    pub fn action(&self, id: ActionId) -> Option<Action> {
        self.actions.get(&id).map(|a| a.clone())
    }

    pub fn customer(&self, id: CustomerId) -> Option<Customer> {
        self.customers.get(&id).map(|c| c.clone())
    }

    /// The live (not terminal) actions of a customer, oldest first.
    pub fn live_actions(&self, customer: CustomerId) -> Vec<Action> {
        let ids = self
            .customers
            .get(&customer)
            .map(|c| c.actions.clone())
            .unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| {
                let a = self.actions.get(&id)?;
                (!a.is_terminal()).then(|| a.clone())
            })
            .collect()
    }

    /// The per-map counters (a handful of entries).
    pub fn map_counts(&self) -> SnapshotMaps {
        self.maps.lock().clone()
    }

    /// The actions (live or recently ended) matching a predicate on their latest event,
    /// restricted to the given customers when `customers` is `Some`, and to those whose
    /// latest change is at or before `at` (an action changed later is not as it was then),
    /// in the order of that change. Runs concurrently with the sequencer.
    pub fn actions_as_of(
        &self,
        customers: Option<&[CustomerId]>,
        at: Seq,
        mut keep: impl FnMut(&LifecycleEvent) -> bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let mut visit = |a: &Action| {
            if a.last().seq <= at && keep(&a.latest) {
                out.push(a.clone());
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
        out.sort_by_key(|a| a.last().seq);
        out
    }

    /// A customer's identity and the user id it last identified as.
    pub fn identity_and_user(
        &self,
        customer: CustomerId,
    ) -> Option<(IdentityState, Option<UserId>)> {
        let c = self.customers.get(&customer)?;
        Some((c.identity, c.user_id.clone()))
    }
}

/// A visitor as the visitor API shows it, gathered from its profile and its customers.
#[derive(Clone, Debug)]
pub struct Visitor {
    pub id: VisitorId,
    /// The identity of its best-identified customer (authenticated over recognized over
    /// anonymous; the most recently seen among equals), and that customer's user id.
    pub identity: IdentityState,
    pub user_id: Option<UserId>,
    pub user_ids: Vec<UserId>,
    pub customers: Vec<CustomerId>,
    pub traits: Map<String, Value>,
    pub channels: Map<String, Value>,
    /// Its company's id and name.
    pub company: Option<(CompanyId, Option<String>)>,
    /// Its company's attributes, for the segment conditions that read them
    /// (`HubState::segment_subject` fills them in); `None` in every other view.
    pub company_attributes: Option<Map<String, Value>>,
    /// The segments it is in now, in id order, with their names.
    pub segments: Vec<(SegmentId, String)>,
    /// Its customers' sessions held, and how many of them are open.
    pub sessions: usize,
    pub active_sessions: usize,
    pub pages_viewed: u64,
    /// How many actions its customers hold, live or ended.
    pub actions: usize,
    /// How many of those are webchats that reached `started`: its conversations.
    pub conversations: usize,
    pub live_actions: Vec<Action>,
    pub first_seen: Millis,
    pub last_seen: Millis,
    /// The client info of its most recently seen customer that has some: the browser
    /// the person used last.
    pub client: ClientInfo,
    /// Every session and held action, when asked for (exports).
    pub history: Option<VisitorHistory>,
}

/// Everything held about a visitor's customers, for its export.
#[derive(Clone, Debug)]
pub struct VisitorHistory {
    /// Customer by customer, each customer's oldest first.
    pub sessions: Vec<VisitorSession>,
    /// Live or ended, customer by customer, each customer's oldest first.
    pub actions: Vec<Action>,
}

/// A session of one of a visitor's customers.
#[derive(Clone, Debug)]
pub struct VisitorSession {
    pub customer_id: CustomerId,
    /// Whether it is its customer's open session.
    pub active: bool,
    pub session: SessionInfo,
}

/// The visitor API's reads. A visitor is a profile (customers known to be one person), or
/// a customer no profile holds yet; either way it is named by the customer it began with
/// ([`VisitorId::of_first_customer`]).
impl HubState {
    /// Resolves the `{id}` of the visitor API: any customerId of the visitor (its own id
    /// included), or `user:<userId>`. `Err` when the id is malformed.
    pub fn resolve_visitor(&self, id: &str) -> Result<Option<VisitorId>, crate::ids::BadId> {
        if let Some(user) = id.strip_prefix("user:") {
            return Ok(self.users.get(user).map(|v| *v));
        }
        let id = CustomerId::parse(id)?;
        // The visitor's own id finds its profile even once that customer is forgotten (an
        // evicted customer leaves its profile behind).
        let own = VisitorId::of_first_customer(id);
        if self.profiles.contains_key(&own) {
            return Ok(Some(own));
        }
        Ok(self.customers.get(&id).map(|c| c.visitor_id.unwrap_or(own)))
    }

    /// The customers of a visitor, the visitor's own id first when it is one of them.
    pub fn visitor_customers(&self, visitor: VisitorId) -> Vec<CustomerId> {
        let lone = visitor.first_customer();
        match self.profiles.get(&visitor) {
            Some(p) => p.customers.clone(),
            None if self.customers.contains_key(&lone) => vec![lone],
            None => Vec::new(),
        }
    }

    /// Every visitor id, most recently seen first, narrowed by a case-insensitive search of
    /// user ids and the `name` and `email` traits, by whether it is identified, and by the
    /// company it belongs to. Walks
    /// the recency index a chunk at a time (a visitor is as recent as its most recent
    /// customer, met first), so it never holds a lock for long; callers run it off the
    /// async workers, as it visits every customer.
    pub fn visitors(
        &self,
        search: Option<&str>,
        identified: Option<bool>,
        company: Option<&str>,
    ) -> Vec<VisitorId> {
        const CHUNK: usize = 4096;
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let wanted = |users: &[UserId],
                      traits: Option<&Map<String, Value>>,
                      member_of: Option<&CompanyId>| {
            if identified.is_some_and(|want| want == users.is_empty()) {
                return false;
            }
            if company.is_some_and(|want| member_of.map(CompanyId::as_str) != Some(want)) {
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
                .any(|u| u.as_str().to_lowercase().contains(needle.as_str()))
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
                let Some(visitor) = self
                    .customers
                    .get(&id)
                    .map(|c| c.visitor_id.unwrap_or(VisitorId::of_first_customer(id)))
                else {
                    continue;
                };
                if !met.insert(visitor) {
                    continue;
                }
                let keep = match self.profiles.get(&visitor) {
                    Some(p) => wanted(&p.user_ids, Some(&p.traits), p.company()),
                    None => wanted(&[], None, None),
                };
                if keep {
                    found.push(visitor);
                }
            }
        }
        found
    }

    /// A visitor for `GET /v1/visitors/{id}`; `history` adds every session and action, for
    /// exports.
    pub fn visitor(&self, visitor: VisitorId, history: bool) -> Option<Visitor> {
        let customers = self.visitor_customers(visitor);
        if customers.is_empty() {
            return None;
        }
        let (user_ids, traits, channels, company) = match self.profiles.get(&visitor) {
            Some(p) => (
                p.user_ids.to_vec(),
                p.traits.clone(),
                p.channels.clone(),
                p.company.clone(),
            ),
            None => (Vec::new(), Map::new(), Map::new(), None),
        };
        let company = company.map(|id| {
            let name = self.companies.get(&id).and_then(|c| c.name.clone());
            (id, name)
        });
        let mut latest: Option<(Millis, IdentityState, Option<UserId>)> = None;
        let (mut first_seen, mut last_seen) = (Millis::MAX, Millis::MIN);
        let (mut sessions, mut active, mut pages) = (0usize, 0usize, 0u64);
        let mut session_list = Vec::new();
        let mut action_ids = Vec::new();
        let mut client: Option<(Millis, ClientInfo)> = None;
        for id in &customers {
            let Some(c) = self.customers.get(id) else {
                continue;
            };
            if !c.client.is_empty() && client.as_ref().is_none_or(|(seen, _)| c.last_seen > *seen) {
                client = Some((c.last_seen, c.client.clone()));
            }
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
            if history {
                session_list.extend(c.sessions.iter().map(|s| VisitorSession {
                    customer_id: *id,
                    active: c.current_session == Some(s.id),
                    session: s.clone(),
                }));
            }
        }
        let (_, identity, user_id) = latest?;
        let live_actions = customers
            .iter()
            .flat_map(|c| self.live_actions(*c))
            .collect();
        let conversations = action_ids
            .iter()
            .filter(|id| self.actions.get(id).is_some_and(|a| a.is_conversation()))
            .count();
        let history = history.then(|| VisitorHistory {
            sessions: session_list,
            actions: action_ids
                .iter()
                .filter_map(|id| self.action(*id))
                .collect(),
        });
        Some(Visitor {
            id: visitor,
            identity,
            user_id,
            user_ids,
            customers,
            traits,
            channels,
            company,
            company_attributes: None,
            segments: self.segments.read().of(visitor),
            sessions,
            active_sessions: active,
            pages_viewed: pages,
            actions: action_ids.len(),
            conversations,
            live_actions,
            first_seen,
            last_seen,
            client: client.map(|(_, info)| info).unwrap_or_default(),
            history,
        })
    }

    /// Every session of a visitor's customers, newest first.
    pub fn visitor_sessions(&self, visitor: VisitorId) -> Vec<VisitorSession> {
        let mut sessions = Vec::new();
        for id in self.visitor_customers(visitor) {
            let Some(c) = self.customers.get(&id) else {
                continue;
            };
            sessions.extend(c.sessions.iter().map(|s| VisitorSession {
                customer_id: id,
                active: c.current_session == Some(s.id),
                session: s.clone(),
            }));
        }
        sessions.sort_by_key(|s| std::cmp::Reverse(s.session.started_at));
        sessions
    }

    /// The visitor whose profile holds `channels[channel] == user` (at most one does).
    pub fn visitor_by_channel(&self, channel: &str, user: &str) -> Option<VisitorId> {
        self.channel_owner(&ChannelUserId::new(channel, user))
    }
}

/// The companies API's reads.
impl HubState {
    pub fn company(&self, id: &str) -> Option<Company> {
        self.companies.get(id).map(|c| c.clone())
    }

    /// Every company whose id or name holds `search` (case-insensitive), most recently
    /// seen first, then by id. Visits every company: callers run it off the async workers.
    pub fn companies(&self, search: Option<&str>) -> Vec<(CompanyId, Company)> {
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let holds = |text: &str| {
            needle
                .as_ref()
                .is_none_or(|n| text.to_lowercase().contains(n.as_str()))
        };
        let mut found: Vec<(CompanyId, Company)> = self
            .companies
            .iter()
            .filter(|c| holds(c.key().as_str()) || c.name.as_deref().is_some_and(holds))
            .map(|c| (c.key().clone(), c.value().clone()))
            .collect();
        found.sort_by(|(a_id, a), (b_id, b)| b.last_seen.cmp(&a.last_seen).then(a_id.cmp(b_id)));
        found
    }
}
