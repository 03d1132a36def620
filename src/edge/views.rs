//! The JSON views of the hub's state: what the HTTP API answers about actions, customers,
//! action maps and visitors, and the actions and customers a `snapshot` frame carries
//! (docs/protocol.md gives their shapes). The state's queries return typed copies; each
//! view is a `Serialize` struct borrowing from them, and an action's fields are written by
//! the event model's own lifecycle writer, so they stay the published event's.
//!
//! Every view leaves here as a `serde_json::Value` (see `json`): its map keeps keys in
//! sorted order, which is the order these views have always been written in, byte for
//! byte, since they were built as `json!` values (the tests below pin it). Nothing here
//! writes to state.

use std::collections::{BTreeMap, HashSet};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::clock::{format_millis, Millis};
use crate::hub::state::{
    Action, Activity, Company, HubState, IdentityState, MapCounts, MapKey, SessionInfo, Transition,
    Visitor, VisitorSession,
};
use crate::ids::{
    ActionId, ActionMapId, CompanyId, CustomerId, SegmentId, Seq, SessionId, UserId, VisitorId,
};
use crate::ingest::event::{serialize_lifecycle, LifecycleEvent, Software, VisitorKind};
use crate::ingest::lifecycle::{ActionState, MediaType};
use crate::ingest::protocol::{self, SubscribeRequest};
use crate::ingest::topic::{Filter, TopicSet};
use crate::ingest::wire::WireFrame;

/// `GET /v1/actions/{id}`: the action with its transitions.
pub fn action(state: &HubState, id: ActionId) -> Option<Value> {
    state.action(id).map(|a| json(ActionView::new(&a, true)))
}

/// `GET /v1/customers/{id}`: the customer, its sessions and its live actions.
pub fn customer(state: &HubState, id: CustomerId) -> Option<Value> {
    let customer = state.customer(id)?;
    let live = state.live_actions(id);
    Some(json(CustomerView {
        customer_id: id,
        identity: IdentityView::new(customer.identity, customer.user_id.as_ref()),
        visitor_id: customer.visitor_id,
        current_session_id: customer.current_session,
        sessions: customer.sessions.iter().map(SessionView::new).collect(),
        first_seen: Time(customer.first_seen),
        last_seen: Time(customer.last_seen),
        actions: live.iter().map(|a| ActionView::new(a, false)).collect(),
    }))
}

/// `GET /v1/stats/action-maps`.
pub fn action_maps(state: &HubState) -> Value {
    let maps = state.map_counts();
    json(ActionMapsView {
        action_maps: maps.iter().map(ActionMapView::new).collect(),
    })
}

/// `GET /v1/companies/{id}` (and each company of the list).
pub fn company(id: &CompanyId, company: &Company) -> Value {
    json(CompanyView {
        id,
        name: company.name.as_deref(),
        attributes: &company.attributes,
        visitor_count: company.visitor_count,
        first_seen_at: Time(company.first_seen),
        last_seen_at: Time(company.last_seen),
    })
}

/// A company: its id, name and attributes, how many visitors belong to it now, and when
/// it was first named and last seen (itself or one of its visitors).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CompanyView<'a> {
    id: &'a CompanyId,
    name: Option<&'a str>,
    attributes: &'a Map<String, Value>,
    visitor_count: u64,
    first_seen_at: Time,
    last_seen_at: Time,
}

/// A visitor's company in its view: `{"id", "name"}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct MembershipView<'a> {
    id: &'a CompanyId,
    name: Option<&'a str>,
}

/// A segment a visitor is in, in its view: `{"id", "name"}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct SegmentMembershipView<'a> {
    id: SegmentId,
    name: &'a str,
}

/// `GET /v1/visitors/{id}` (and each visitor of the list).
pub fn visitor(state: &HubState, id: VisitorId) -> Option<Value> {
    state.visitor(id, false).map(|v| json(VisitorView::new(&v)))
}

/// The visitor view plus `sessionHistory` and every held action with its transitions, for
/// `GET /v1/visitors/{id}/export` (which adds the retained events).
pub fn visitor_export(state: &HubState, id: VisitorId) -> Option<Value> {
    state.visitor(id, true).map(|v| json(VisitorView::new(&v)))
}

/// `GET /v1/visitors/{id}/sessions`: every session of the visitor, newest first.
pub fn visitor_sessions(state: &HubState, id: VisitorId) -> Vec<Value> {
    state
        .visitor_sessions(id)
        .iter()
        .map(|s| json(VisitorSessionView::new(s, true)))
        .collect()
}

/// Actions per `snapshot` frame: a big snapshot leaves as several frames of bounded size
/// (about half a MiB each), so no single frame or write is as big as the whole state.
const SNAPSHOT_CHUNK_ACTIONS: usize = 1000;
/// The `snapshot` frames for a subscription (built by the hub on a blocking thread): its matching actions as of `at`, in
/// chunks of at most [`SNAPSHOT_CHUNK_ACTIONS`], each with the customers of its
/// actions not named before (the first also those the filter names); every frame but
/// the last says `"more": true`.
pub fn snapshot_frames(state: &HubState, req: &SubscribeRequest, at: Seq) -> Vec<WireFrame> {
    let filter = &req.filter;
    let narrowed: Option<Vec<CustomerId>> = match (&filter.customer_ids, &filter.user_ids) {
        (Some(customers), _) => Some(customers.clone()),
        (None, Some(users)) => Some(HubState::distinct(
            users.iter().flat_map(|u| state.customers_of_user(u)),
        )),
        (None, None) => None,
    };
    let selected = select_actions(state, narrowed.as_deref(), at, |e| {
        snapshot_matches(req.topics, filter, e, state)
    });
    let mut named = HashSet::new();
    let mut customers_of = |first: Vec<CustomerId>, actions: &[(Seq, Value, CustomerId)]| {
        let ids = first.into_iter().chain(actions.iter().map(|(_, _, c)| *c));
        ids.filter(|c| named.insert(*c))
            .filter_map(|c| customer_identity(state, c))
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

/// The matching actions as of `at` (see [`HubState::actions_as_of`]), in seq order, each
/// as its view with its seq and customer.
fn select_actions(
    state: &HubState,
    customers: Option<&[CustomerId]>,
    at: Seq,
    keep: impl FnMut(&LifecycleEvent) -> bool,
) -> Vec<(Seq, Value, CustomerId)> {
    state
        .actions_as_of(customers, at, keep)
        .iter()
        .map(|a| {
            let view = json(ActionView::new(a, false));
            (a.last().seq, view, a.latest.customer_id)
        })
        .collect()
}

/// `{"customerId", "identity": {"state", "userId"}}`, for a snapshot frame.
fn customer_identity(state: &HubState, customer: CustomerId) -> Option<Value> {
    let (identity, user_id) = state.identity_and_user(customer)?;
    Some(json(CustomerIdentityView {
        customer_id: customer,
        identity: IdentityView::new(identity, user_id.as_ref()),
    }))
}

/// A view as the JSON value it is answered as, its keys sorted (see the module's doc).
fn json(view: impl Serialize) -> Value {
    serde_json::to_value(view).expect("views serialize")
}

/// A time as every view writes it: RFC 3339 with milliseconds, UTC.
#[derive(Clone, Copy)]
pub(crate) struct Time(Millis);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_millis(self.0))
    }
}

impl PartialSchema for Time {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}

impl ToSchema for Time {}

/// A lifecycle event's fields, written by the event model's writer.
pub(crate) struct Lifecycle<'a>(&'a LifecycleEvent);

impl Serialize for Lifecycle<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        serialize_lifecycle(&mut map, self.0)?;
        map.end()
    }
}

/// The document's account of what `serialize_lifecycle` writes (docs/protocol.md section
/// 3 has the rules); schemathesis checks every answer against it, so the two cannot part
/// unnoticed.
impl PartialSchema for Lifecycle<'_> {
    fn schema() -> RefOr<Schema> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let any = || RefOr::from(Schema::from(ObjectBuilder::new()));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("actionId", ActionId::schema())
            .property(
                "actionState",
                text().enum_values(Some(ActionState::ALL.map(ActionState::as_str))),
            )
            .property(
                "actionMediaType",
                text().enum_values(Some(MediaType::ALL.map(MediaType::as_str))),
            )
            .property("actionMapId", ActionMapId::schema())
            .property(
                "actionMapVersion",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .property("customerId", CustomerId::schema())
            .property("customerIdType", text().enum_values(Some(["cookie"])))
            .property("sessionId", SessionId::schema())
            .property("errorCode", i64::schema())
            .property("errorMessage", text())
            .property("eventId", text())
            .property("data", any())
            .required("actionId")
            .required("actionState")
            .required("actionMediaType")
            .required("actionMapId")
            .required("actionMapVersion")
            .required("customerId")
            .required("customerIdType")
            .required("sessionId")
            .into()
    }
}

impl ToSchema for Lifecycle<'_> {
    fn name() -> std::borrow::Cow<'static, str> {
        "LifecycleFields".into()
    }
}

/// An action: its latest lifecycle event plus that event's `seq` and `timestamp`, and
/// maybe every state it entered.
#[derive(Serialize, ToSchema)]
pub(crate) struct ActionView<'a> {
    #[serde(flatten)]
    latest: Lifecycle<'a>,
    seq: Seq,
    timestamp: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    transitions: Option<Vec<TransitionView>>,
}

impl<'a> ActionView<'a> {
    fn new(action: &'a Action, with_transitions: bool) -> Self {
        let last = action.last();
        ActionView {
            latest: Lifecycle(&action.latest),
            seq: last.seq,
            timestamp: Time(last.timestamp),
            transitions: with_transitions
                .then(|| action.transitions.iter().map(TransitionView::new).collect()),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransitionView {
    action_state: &'static str,
    seq: Seq,
    timestamp: Time,
}

impl TransitionView {
    fn new(t: &Transition) -> Self {
        TransitionView {
            action_state: t.state.as_str(),
            seq: t.seq,
            timestamp: Time(t.timestamp),
        }
    }
}

/// `{"state", "userId"}`; `userId` is null when the customer has none.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IdentityView<'a> {
    state: &'static str,
    user_id: Option<&'a UserId>,
}

impl<'a> IdentityView<'a> {
    fn new(identity: IdentityState, user_id: Option<&'a UserId>) -> Self {
        IdentityView {
            state: identity.as_str(),
            user_id,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CustomerIdentityView<'a> {
    customer_id: CustomerId,
    identity: IdentityView<'a>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CustomerView<'a> {
    customer_id: CustomerId,
    identity: IdentityView<'a>,
    visitor_id: Option<VisitorId>,
    current_session_id: Option<SessionId>,
    sessions: Vec<SessionView>,
    first_seen: Time,
    last_seen: Time,
    actions: Vec<ActionView<'a>>,
}

/// A session; `endedAt` and `endReason` once it ended.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionView {
    session_id: SessionId,
    started_at: Time,
    last_seen_at: Time,
    pages_viewed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_reason: Option<&'static str>,
}

impl SessionView {
    fn new(s: &SessionInfo) -> Self {
        SessionView {
            session_id: s.id,
            started_at: Time(s.started_at),
            last_seen_at: Time(s.last_seen),
            pages_viewed: s.pages_viewed,
            ended_at: s.ended.map(|(at, _)| Time(at)),
            end_reason: s.ended.map(|(_, reason)| reason.as_str()),
        }
    }
}

/// A session of a visitor's customer, with its remembered activity, and the
/// visitors-and-users reference's shape of a visit: `id`, `duration` and `pages` (with
/// `timeOnPage`), `referrer`; `active` in the sessions list, not in an export's history.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VisitorSessionView<'a> {
    #[serde(flatten)]
    session: SessionView,
    id: SessionId,
    customer_id: CustomerId,
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<bool>,
    /// Seconds from its start to its end, or to its last event while it is open.
    duration: i64,
    pages: Vec<PageView<'a>>,
    /// The `referrer` of its first remembered page view.
    referrer: Option<&'a Value>,
    activity: Vec<ActivityView<'a>>,
}

impl<'a> VisitorSessionView<'a> {
    fn new(s: &'a VisitorSession, with_active: bool) -> Self {
        let session = &s.session;
        let end = session.ended.map_or(session.last_seen, |(at, _)| at);
        let pages: Vec<&Activity> = session
            .activity
            .iter()
            .filter(|a| a.kind == VisitorKind::Page)
            .collect();
        // A page view is left at its exit when the page reported one, else at the next
        // page view, or at the session's end.
        let left_at = pages.iter().skip(1).map(|a| a.at).chain([end]);
        VisitorSessionView {
            session: SessionView::new(session),
            id: session.id,
            customer_id: s.customer_id,
            active: with_active.then_some(s.active),
            duration: seconds(end - session.started_at),
            referrer: pages.first().and_then(|p| p.detail.get("referrer")),
            pages: pages
                .iter()
                .zip(left_at)
                .map(|(page, left)| PageView {
                    url: page.detail.get("url"),
                    title: page.detail.get("title"),
                    viewed_at: Time(page.at),
                    time_on_page: seconds(page.exited_at.unwrap_or(left) - page.at),
                })
                .collect(),
            activity: session.activity.iter().map(ActivityView::new).collect(),
        }
    }
}

/// Whole seconds of a span of milliseconds (never negative).
fn seconds(span: Millis) -> i64 {
    span.max(0) / 1000
}

/// A page view of a session: `{"url", "title", "viewedAt", "timeOnPage"}` (seconds until
/// its exit, or else the next page view or the session's end).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PageView<'a> {
    url: Option<&'a Value>,
    title: Option<&'a Value>,
    viewed_at: Time,
    time_on_page: i64,
}

/// A page view (`page`) or track event (`name`, and `properties` when it had some).
#[derive(Serialize, ToSchema)]
pub(crate) struct ActivityView<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    at: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<&'a Value>,
}

impl<'a> ActivityView<'a> {
    fn new(a: &'a Activity) -> Self {
        let (page, name, properties) = match a.kind {
            VisitorKind::Page => (Some(&a.detail), None, None),
            _ => {
                let properties = &a.detail["properties"];
                (
                    None,
                    Some(&a.detail["name"]),
                    Some(properties).filter(|p| !p.is_null()),
                )
            }
        };
        ActivityView {
            kind: a.kind.as_str(),
            at: Time(a.at),
            page,
            name,
            properties,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActionMapsView {
    action_maps: Vec<ActionMapView>,
}

/// One (action map, version, media type): how many actions reached each state, and the share of
/// offered ones that were accepted (null before any offer).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActionMapView {
    action_map_id: ActionMapId,
    action_map_version: u32,
    action_media_type: &'static str,
    counts: BTreeMap<&'static str, u64>,
    accept_rate: Option<f64>,
}

impl ActionMapView {
    fn new((key, m): (&MapKey, &MapCounts)) -> Self {
        let reached = |state: ActionState| m.counts().get(&state).copied().unwrap_or(0);
        let (offered, accepted) = (
            reached(ActionState::Offered),
            reached(ActionState::Accepted),
        );
        ActionMapView {
            action_map_id: key.action_map_id,
            action_map_version: key.action_map_version,
            action_media_type: key.media.as_str(),
            counts: m.counts().iter().map(|(s, n)| (s.as_str(), *n)).collect(),
            accept_rate: (offered > 0).then(|| accepted as f64 / offered as f64),
        }
    }
}

/// The traits the visitor view shows as its own fields, under the visitors-and-users
/// reference's names; every other trait is one of its custom `attributes`.
const CONTACT_TRAITS: [&str; 4] = ["name", "email", "phone", "avatarUrl"];

/// A visitor: the reference's profile (`id`, `userId`, the contact fields, `attributes`,
/// `firstSeenAt`, `lastSeenAt`, `conversationCount`, `sessionCount`) beside the hub's own
/// (`visitorId`, identity, customers, channels, sessions, live actions, counts); an
/// export adds `sessionHistory` and `actions`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VisitorView<'a> {
    id: VisitorId,
    visitor_id: VisitorId,
    user_id: Option<&'a UserId>,
    name: Option<&'a Value>,
    email: Option<&'a Value>,
    phone: Option<&'a Value>,
    avatar_url: Option<&'a Value>,
    attributes: Map<String, Value>,
    identity: IdentityView<'a>,
    identified: bool,
    user_ids: &'a [UserId],
    customers: &'a [CustomerId],
    channels: &'a Map<String, Value>,
    company: Option<MembershipView<'a>>,
    segments: Vec<SegmentMembershipView<'a>>,
    sessions: SessionCounts,
    live_actions: Vec<ActionView<'a>>,
    location: LocationView<'a>,
    browser: Option<SoftwareView<'a>>,
    os: Option<SoftwareView<'a>>,
    first_seen_at: Time,
    last_seen_at: Time,
    conversation_count: usize,
    session_count: usize,
    counts: VisitorCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_history: Option<Vec<VisitorSessionView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actions: Option<Vec<ActionView<'a>>>,
}

/// `{"city", "country", "timezone"}`, each null when never reported.
#[derive(Serialize, ToSchema)]
pub(crate) struct LocationView<'a> {
    city: Option<&'a str>,
    country: Option<&'a str>,
    timezone: Option<&'a str>,
}

/// `{"name", "version"}` of a browser or an operating system; `version` null when the
/// User-Agent gave none.
#[derive(Serialize, ToSchema)]
pub(crate) struct SoftwareView<'a> {
    name: &'a str,
    version: Option<&'a str>,
}

impl<'a> SoftwareView<'a> {
    fn new(s: &'a Software) -> Self {
        SoftwareView {
            name: &s.name,
            version: s.version.as_deref(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SessionCounts {
    total: usize,
    active: usize,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VisitorCounts {
    customers: usize,
    sessions: usize,
    actions: usize,
    live_actions: usize,
    pages_viewed: u64,
}

impl<'a> VisitorView<'a> {
    fn new(v: &'a Visitor) -> Self {
        let history = v.history.as_ref();
        let contact = |key: &str| v.traits.get(key);
        let attributes = v
            .traits
            .iter()
            .filter(|(key, _)| !CONTACT_TRAITS.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        VisitorView {
            id: v.id,
            visitor_id: v.id,
            user_id: v.user_id.as_ref(),
            name: contact("name"),
            email: contact("email"),
            phone: contact("phone"),
            avatar_url: contact("avatarUrl"),
            attributes,
            identity: IdentityView::new(v.identity, v.user_id.as_ref()),
            identified: !v.user_ids.is_empty(),
            user_ids: &v.user_ids,
            customers: &v.customers,
            channels: &v.channels,
            segments: v
                .segments
                .iter()
                .map(|(id, name)| SegmentMembershipView { id: *id, name })
                .collect(),
            company: v.company.as_ref().map(|(id, name)| MembershipView {
                id,
                name: name.as_deref(),
            }),
            sessions: SessionCounts {
                total: v.sessions,
                active: v.active_sessions,
            },
            live_actions: v
                .live_actions
                .iter()
                .map(|a| ActionView::new(a, false))
                .collect(),
            location: LocationView {
                city: v.client.city.as_deref(),
                country: v.client.country.as_deref(),
                timezone: v.client.timezone.as_deref(),
            },
            browser: v.client.browser.as_ref().map(SoftwareView::new),
            os: v.client.os.as_ref().map(SoftwareView::new),
            first_seen_at: Time(v.first_seen),
            last_seen_at: Time(v.last_seen),
            conversation_count: v.conversations,
            session_count: v.sessions,
            counts: VisitorCounts {
                customers: v.customers.len(),
                sessions: v.sessions,
                actions: v.actions,
                live_actions: v.live_actions.len(),
                pages_viewed: v.pages_viewed,
            },
            session_history: history.map(|h| {
                h.sessions
                    .iter()
                    .map(|s| VisitorSessionView::new(s, false))
                    .collect()
            }),
            actions: history.map(|h| h.actions.iter().map(|a| ActionView::new(a, true)).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::event::{Body, EndReason, Event, Published};
    use crate::ingest::lifecycle::MediaType;
    use serde_json::json;

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
        // The visitor API resolves any of a visitor's customers to its profile; c1 began it,
        // and c3 is a visitor on its own.
        let v = state.resolve_visitor(&c2.to_string()).unwrap().unwrap();
        let visitor_of = VisitorId::of_first_customer;
        let text = |v: Value| serde_json::to_string(&v).unwrap();
        let snapshot_actions = |customers: Option<&[CustomerId]>, at: u64| {
            let selected = select_actions(&state, customers, Seq(at), |e| {
                e.media == MediaType::Webchat || customers.is_none()
            });
            text(json!(selected
                .into_iter()
                .map(|(seq, view, customer)| json!([seq, view, customer]))
                .collect::<Vec<_>>()))
        };
        vec![
            ("action", text(action(&state, a1).unwrap())),
            ("customer c1", text(customer(&state, c1).unwrap())),
            ("customer c2", text(customer(&state, c2).unwrap())),
            ("action map stats", text(action_maps(&state))),
            ("visitor", text(visitor(&state, v).unwrap())),
            (
                "visitor lone",
                text(visitor(&state, visitor_of(c3)).unwrap()),
            ),
            (
                "visitor export",
                text(visitor_export(&state, visitor_of(c1)).unwrap()),
            ),
            (
                "visitor sessions",
                text(visitor_sessions(&state, visitor_of(c1)).into()),
            ),
            ("snapshot actions", snapshot_actions(None, 16)),
            ("snapshot actions of c1", snapshot_actions(Some(&[c1]), 6)),
            (
                "snapshot customer",
                text(customer_identity(&state, c1).unwrap()),
            ),
            (
                "snapshot customer lone",
                text(customer_identity(&state, c3).unwrap()),
            ),
        ]
    }

    /// The views' exact bytes, field order included: the console, the SDK and outside
    /// clients read them. Captured from the views as they were written with `json!`, in
    /// `hub/state.rs`, before they moved here.
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
            r#"{"attributes":{"plan":"pro"},"avatarUrl":null,"browser":null,"channels":{"slack":"U1"},"company":null,"conversationCount":0,"counts":{"actions":3,"customers":2,"liveActions":2,"pagesViewed":1,"sessions":2},"customers":["00000000-0000-4000-8000-0000000000c1","00000000-0000-4000-8000-0000000000c2"],"email":"ada@example.test","firstSeenAt":"2026-01-01T00:00:01.007Z","id":"00000000-0000-4000-8000-0000000000c1","identified":true,"identity":{"state":"authenticated","userId":"u-1"},"lastSeenAt":"2026-01-01T00:00:13.007Z","liveActions":[{"actionId":"00000000-0000-4000-8000-0000000000a1","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"accepted","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","seq":6,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:06.007Z"},{"actionId":"00000000-0000-4000-8000-0000000000a2","actionMapId":"00000000-0000-4000-8000-000000000002","actionMapVersion":3,"actionMediaType":"contentoffer","actionState":"offered","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","data":{"a":"x","f":1.5,"z":1},"eventId":"ev-2","seq":7,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:07.007Z"}],"location":{"city":null,"country":null,"timezone":null},"name":"Ada","os":null,"phone":null,"segments":[],"sessionCount":2,"sessions":{"active":1,"total":2},"userId":"u-1","userIds":["u-1"],"visitorId":"00000000-0000-4000-8000-0000000000c1"}"#,
        ),
        (
            "visitor lone",
            r#"{"attributes":{},"avatarUrl":null,"browser":null,"channels":{},"company":null,"conversationCount":0,"counts":{"actions":1,"customers":1,"liveActions":1,"pagesViewed":1,"sessions":1},"customers":["00000000-0000-4000-8000-0000000000c3"],"email":null,"firstSeenAt":"2026-01-01T00:00:14.007Z","id":"00000000-0000-4000-8000-0000000000c3","identified":false,"identity":{"state":"anonymous","userId":null},"lastSeenAt":"2026-01-01T00:00:16.007Z","liveActions":[{"actionId":"00000000-0000-4000-8000-0000000000a4","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":2,"actionMediaType":"webchat","actionState":"qualified","customerId":"00000000-0000-4000-8000-0000000000c3","customerIdType":"cookie","seq":16,"sessionId":"00000000-0000-4000-8000-000000000053","timestamp":"2026-01-01T00:00:16.007Z"}],"location":{"city":null,"country":null,"timezone":null},"name":null,"os":null,"phone":null,"segments":[],"sessionCount":1,"sessions":{"active":1,"total":1},"userId":null,"userIds":[],"visitorId":"00000000-0000-4000-8000-0000000000c3"}"#,
        ),
        (
            "visitor export",
            r#"{"actions":[{"actionId":"00000000-0000-4000-8000-0000000000a1","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"accepted","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","seq":6,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:06.007Z","transitions":[{"actionState":"offered","seq":2,"timestamp":"2026-01-01T00:00:02.007Z"},{"actionState":"accepted","seq":6,"timestamp":"2026-01-01T00:00:06.007Z"}]},{"actionId":"00000000-0000-4000-8000-0000000000a2","actionMapId":"00000000-0000-4000-8000-000000000002","actionMapVersion":3,"actionMediaType":"contentoffer","actionState":"offered","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","data":{"a":"x","f":1.5,"z":1},"eventId":"ev-2","seq":7,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:07.007Z","transitions":[{"actionState":"offered","seq":7,"timestamp":"2026-01-01T00:00:07.007Z"}]},{"actionId":"00000000-0000-4000-8000-0000000000a3","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"errored","customerId":"00000000-0000-4000-8000-0000000000c2","customerIdType":"cookie","errorCode":42,"errorMessage":"boom","seq":13,"sessionId":"00000000-0000-4000-8000-000000000052","timestamp":"2026-01-01T00:00:13.007Z","transitions":[{"actionState":"offered","seq":12,"timestamp":"2026-01-01T00:00:12.007Z"},{"actionState":"errored","seq":13,"timestamp":"2026-01-01T00:00:13.007Z"}]}],"attributes":{"plan":"pro"},"avatarUrl":null,"browser":null,"channels":{"slack":"U1"},"company":null,"conversationCount":0,"counts":{"actions":3,"customers":2,"liveActions":2,"pagesViewed":1,"sessions":2},"customers":["00000000-0000-4000-8000-0000000000c1","00000000-0000-4000-8000-0000000000c2"],"email":"ada@example.test","firstSeenAt":"2026-01-01T00:00:01.007Z","id":"00000000-0000-4000-8000-0000000000c1","identified":true,"identity":{"state":"authenticated","userId":"u-1"},"lastSeenAt":"2026-01-01T00:00:13.007Z","liveActions":[{"actionId":"00000000-0000-4000-8000-0000000000a1","actionMapId":"00000000-0000-4000-8000-000000000001","actionMapVersion":1,"actionMediaType":"webchat","actionState":"accepted","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","seq":6,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:06.007Z"},{"actionId":"00000000-0000-4000-8000-0000000000a2","actionMapId":"00000000-0000-4000-8000-000000000002","actionMapVersion":3,"actionMediaType":"contentoffer","actionState":"offered","customerId":"00000000-0000-4000-8000-0000000000c1","customerIdType":"cookie","data":{"a":"x","f":1.5,"z":1},"eventId":"ev-2","seq":7,"sessionId":"00000000-0000-4000-8000-000000000051","timestamp":"2026-01-01T00:00:07.007Z"}],"location":{"city":null,"country":null,"timezone":null},"name":"Ada","os":null,"phone":null,"segments":[],"sessionCount":2,"sessionHistory":[{"activity":[{"at":"2026-01-01T00:00:03.007Z","page":{"title":"Home","url":"https://example.test/"},"type":"page"},{"at":"2026-01-01T00:00:04.007Z","name":"clicked","properties":{"button":"buy"},"type":"track"},{"at":"2026-01-01T00:00:05.007Z","name":"scrolled","type":"track"}],"customerId":"00000000-0000-4000-8000-0000000000c1","duration":7,"endReason":"signout","endedAt":"2026-01-01T00:00:08.007Z","id":"00000000-0000-4000-8000-000000000051","lastSeenAt":"2026-01-01T00:00:08.007Z","pages":[{"timeOnPage":5,"title":"Home","url":"https://example.test/","viewedAt":"2026-01-01T00:00:03.007Z"}],"pagesViewed":1,"referrer":null,"sessionId":"00000000-0000-4000-8000-000000000051","startedAt":"2026-01-01T00:00:01.007Z"},{"activity":[],"customerId":"00000000-0000-4000-8000-0000000000c2","duration":3,"id":"00000000-0000-4000-8000-000000000052","lastSeenAt":"2026-01-01T00:00:13.007Z","pages":[],"pagesViewed":0,"referrer":null,"sessionId":"00000000-0000-4000-8000-000000000052","startedAt":"2026-01-01T00:00:10.007Z"}],"sessions":{"active":1,"total":2},"userId":"u-1","userIds":["u-1"],"visitorId":"00000000-0000-4000-8000-0000000000c1"}"#,
        ),
        (
            "visitor sessions",
            r#"[{"active":true,"activity":[],"customerId":"00000000-0000-4000-8000-0000000000c2","duration":3,"id":"00000000-0000-4000-8000-000000000052","lastSeenAt":"2026-01-01T00:00:13.007Z","pages":[],"pagesViewed":0,"referrer":null,"sessionId":"00000000-0000-4000-8000-000000000052","startedAt":"2026-01-01T00:00:10.007Z"},{"active":false,"activity":[{"at":"2026-01-01T00:00:03.007Z","page":{"title":"Home","url":"https://example.test/"},"type":"page"},{"at":"2026-01-01T00:00:04.007Z","name":"clicked","properties":{"button":"buy"},"type":"track"},{"at":"2026-01-01T00:00:05.007Z","name":"scrolled","type":"track"}],"customerId":"00000000-0000-4000-8000-0000000000c1","duration":7,"endReason":"signout","endedAt":"2026-01-01T00:00:08.007Z","id":"00000000-0000-4000-8000-000000000051","lastSeenAt":"2026-01-01T00:00:08.007Z","pages":[{"timeOnPage":5,"title":"Home","url":"https://example.test/","viewedAt":"2026-01-01T00:00:03.007Z"}],"pagesViewed":1,"referrer":null,"sessionId":"00000000-0000-4000-8000-000000000051","startedAt":"2026-01-01T00:00:01.007Z"}]"#,
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
        let differ: Vec<String> = views
            .iter()
            .zip(PINNED)
            .filter(|((_, json), (_, expected))| json != expected)
            .map(|((name, json), (_, expected))| {
                format!("{name}\n got: {json}\n pinned: {expected}")
            })
            .collect();
        assert!(differ.is_empty(), "{}", differ.join("\n"));
    }
}
