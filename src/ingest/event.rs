//! The event model: what clients publish and what the hub publishes and delivers.
//!
//! A published event is validated into a typed [`Event`] ([`crate::ingest::validate`]); a
//! [`Published`] event is an accepted event with its seq and timestamp, and its JSON form
//! ([`crate::ingest::wire`]) is what subscribers receive, the retained history serves, and
//! the log stores. This module is pure: no IO, no state.

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::clock::Millis;
use crate::ids::{
    ActionId, ActionMapId, CompanyId, CustomerId, SegmentId, Seq, SessionId, UserId, VisitorId,
};
use crate::ingest::lifecycle::{ActionState, MediaType};
use crate::ingest::topic::{EventKeys, Topic, VISITOR_NAMES};
pub use crate::ingest::wire::serialize_lifecycle;

/// Largest `data`, `traits`, `channels`, `properties` or `page` object, as JSON.
pub const MAX_OBJECT_BYTES: usize = 4 * 1024;
/// Longest `eventId`.
pub const MAX_EVENT_ID_CHARS: usize = 64;
/// Longest `userId`.
pub const MAX_USER_ID_CHARS: usize = 256;
/// Longest `errorMessage` and track `name`.
pub const MAX_TEXT_CHARS: usize = 1024;

/// A validated event as a client published it.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Lifecycle(LifecycleEvent),
    Visitor(VisitorEvent),
}

/// A report that an action entered a state.
#[derive(Clone, Debug, PartialEq)]
pub struct LifecycleEvent {
    pub action_id: ActionId,
    pub state: ActionState,
    pub media: MediaType,
    pub action_map_id: ActionMapId,
    pub action_map_version: u32,
    pub customer_id: CustomerId,
    pub session_id: SessionId,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    pub event_id: Option<String>,
    pub data: Option<EventData>,
}

/// The kinds of visitor event, in the order of [`VISITOR_NAMES`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VisitorKind {
    Identify,
    Signin,
    Signout,
    Userinfo,
    Page,
    Track,
    /// Merges `attributes` (and a `company`) into the customer's current visitor.
    Update,
    /// The page a `page` event reported was left or hidden (`pagehide`, or
    /// `visibilitychange` to hidden): it closes that page view's time on page.
    Exit,
}

impl VisitorKind {
    pub(crate) const ALL: [VisitorKind; 8] = [
        VisitorKind::Identify,
        VisitorKind::Signin,
        VisitorKind::Signout,
        VisitorKind::Userinfo,
        VisitorKind::Page,
        VisitorKind::Track,
        VisitorKind::Update,
        VisitorKind::Exit,
    ];

    pub fn as_str(self) -> &'static str {
        VISITOR_NAMES[self as usize]
    }

    pub(crate) fn parse(text: &str) -> Option<VisitorKind> {
        VisitorKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    pub fn topic(self) -> Topic {
        Topic::visitor(self as usize)
    }

    /// The indefinite article before the kind's name in a message: "an identify event".
    pub(crate) fn article(self) -> &'static str {
        match self {
            VisitorKind::Identify | VisitorKind::Update | VisitorKind::Exit => "an",
            _ => "a",
        }
    }

    pub(crate) fn needs_session(self) -> bool {
        !matches!(
            self,
            VisitorKind::Identify | VisitorKind::Track | VisitorKind::Update
        )
    }

    /// Whether the event must carry `userId` (an `identify` may name its visitor through
    /// `channels` instead).
    pub(crate) fn needs_user(self) -> bool {
        matches!(self, VisitorKind::Signin | VisitorKind::Userinfo)
    }

    /// Whether the event links its customer to a visitor profile, through `userId` and
    /// `channels` (the only events that may carry `channels`).
    pub fn links(self) -> bool {
        matches!(
            self,
            VisitorKind::Identify | VisitorKind::Signin | VisitorKind::Userinfo
        )
    }

    /// Whether the event may set the visitor's `company`: the events that set its
    /// attributes (the identity events' `traits`, an update's `attributes`).
    pub fn sets_company(self) -> bool {
        self.links() || self == VisitorKind::Update
    }
}

/// A report about the customer rather than an action.
#[derive(Clone, Debug, PartialEq)]
pub struct VisitorEvent {
    pub kind: VisitorKind,
    pub customer_id: CustomerId,
    pub session_id: Option<SessionId>,
    pub user_id: Option<UserId>,
    pub traits: Option<Map<String, Value>>,
    pub channels: Option<Map<String, Value>>,
    pub page: Option<Map<String, Value>>,
    pub name: Option<String>,
    pub properties: Option<Map<String, Value>>,
    pub event_id: Option<String>,
    /// An `update` event's attributes, merged into the visitor's (the identity events
    /// carry theirs as `traits`).
    pub attributes: Option<Map<String, Value>>,
    /// The company the visitor belongs to from now on (identity and update events).
    pub company: Option<CompanyInfo>,
    /// What the hub's edge found about the client that published a page event (never a
    /// client's own word: the edge refuses a `client` it did not set). It travels in the
    /// event so the log, a replay and every cluster node see the same. Boxed: most events
    /// have none, and an event is moved often.
    pub client: Option<Box<ClientContext>>,
}

/// An event's `company`: `{"id", "name"?, ...}`, every other key one of the company's
/// attributes. Bounded as a whole like `traits` ([`MAX_OBJECT_BYTES`] as JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct CompanyInfo {
    pub id: CompanyId,
    pub name: Option<String>,
    pub attributes: Map<String, Value>,
}

/// Longest `company.id`.
pub const MAX_COMPANY_ID_CHARS: usize = 256;

/// A page event's `client`: the browser and operating system parsed from the User-Agent
/// of the request or connection that published it, and the country and city the trusted
/// proxy's headers named. Never the client's address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientContext {
    pub browser: Option<Software>,
    pub os: Option<Software>,
    pub country: Option<String>,
    pub city: Option<String>,
}

impl ClientContext {
    pub fn is_empty(&self) -> bool {
        *self == ClientContext::default()
    }
}

/// A browser or an operating system: its name, and its version when the User-Agent gave
/// one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Software {
    pub name: String,
    pub version: Option<String>,
}

/// The longest text of a `client` field (a browser's name or version, a country, a city).
pub const MAX_CLIENT_TEXT_CHARS: usize = 64;

impl VisitorEvent {
    /// Whether the event links its customer to a visitor profile: an identity event that
    /// names the visitor by `userId` or `channels`.
    pub fn links(&self) -> bool {
        self.kind.links() && (self.user_id.is_some() || self.channels.is_some())
    }
}

impl Event {
    pub fn customer_id(&self) -> CustomerId {
        match self {
            Event::Lifecycle(e) => e.customer_id,
            Event::Visitor(e) => e.customer_id,
        }
    }

    pub fn session_id(&self) -> Option<SessionId> {
        match self {
            Event::Lifecycle(e) => Some(e.session_id),
            Event::Visitor(e) => e.session_id,
        }
    }

    pub fn event_id(&self) -> Option<&str> {
        match self {
            Event::Lifecycle(e) => e.event_id.as_deref(),
            Event::Visitor(e) => e.event_id.as_deref(),
        }
    }
}

impl LifecycleEvent {
    pub fn topic(&self) -> Topic {
        Topic::lifecycle(self.media, self.state)
    }

    /// What filters look at in this event.
    pub fn keys(&self) -> EventKeys {
        EventKeys {
            topic: self.topic(),
            customer: self.customer_id,
            other_customers: None,
            session: Some(self.session_id),
            action: Some(self.action_id),
            action_map: Some(self.action_map_id),
            action_map_version: Some(self.action_map_version),
            segment: None,
        }
    }
}

/// A lifecycle event's `data` object, kept as its compact JSON text (keys sorted, the bytes
/// every delivered frame carries). As a `serde_json::Map` it cost ~640 bytes an action
/// however few its keys (a `BTreeMap` node has room for eleven).
#[derive(Clone, Debug)]
pub struct EventData(Box<RawValue>);

impl EventData {
    pub fn from_map(object: &Map<String, Value>) -> EventData {
        let text = serde_json::to_string(object).expect("JSON values serialize");
        EventData(RawValue::from_string(text).expect("serde_json writes JSON"))
    }

    /// Text this hub wrote with [`EventData::as_str`] (a snapshot's), or None when it is
    /// not a JSON object.
    pub fn from_written(text: &str) -> Option<EventData> {
        let raw = RawValue::from_string(text.to_owned()).ok()?;
        raw.get().starts_with('{').then_some(EventData(raw))
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &EventData) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for EventData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Why a session ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EndReason {
    Replaced,
    Signout,
    Idle,
}

impl EndReason {
    const ALL: [EndReason; 3] = [EndReason::Replaced, EndReason::Signout, EndReason::Idle];

    pub(crate) fn parse(text: &str) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Replaced => "replaced",
            EndReason::Signout => "signout",
            EndReason::Idle => "idle",
        }
    }
}

/// An event as the hub publishes it, before seq and timestamp are attached.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Lifecycle(LifecycleEvent),
    Visitor(VisitorEvent),
    SessionStarted {
        customer_id: CustomerId,
        session_id: SessionId,
        user_id: Option<UserId>,
        started_at: Millis,
    },
    SessionEnded {
        customer_id: CustomerId,
        session_id: SessionId,
        user_id: Option<UserId>,
        started_at: Millis,
        ended_at: Millis,
        pages_viewed: u64,
        reason: EndReason,
    },
    Merged {
        customer_id: CustomerId,
        visitor_id: VisitorId,
        /// The user id whose link caused the merge; none for a merge asked for by the API.
        user_id: Option<UserId>,
        merged_customer_ids: Vec<CustomerId>,
    },
    /// A visitor entered (`segment:entered`) or left (`segment:left`) a segment, as the
    /// hub decided after the change that moved it. `customer_id` is the customer whose
    /// change it was, or the visitor's first customer.
    Segment {
        entered: bool,
        segment_id: SegmentId,
        visitor_id: VisitorId,
        customer_id: CustomerId,
    },
}

impl Body {
    pub fn topic(&self) -> Topic {
        match self {
            Body::Lifecycle(e) => e.topic(),
            Body::Visitor(e) => e.kind.topic(),
            Body::SessionStarted { .. } => Topic::SESSION_STARTED,
            Body::SessionEnded { .. } => Topic::SESSION_ENDED,
            Body::Merged { .. } => Topic::VISITOR_MERGED,
            Body::Segment { entered: true, .. } => Topic::SEGMENT_ENTERED,
            Body::Segment { entered: false, .. } => Topic::SEGMENT_LEFT,
        }
    }

    pub fn customer_id(&self) -> CustomerId {
        match self {
            Body::Lifecycle(e) => e.customer_id,
            Body::Visitor(e) => e.customer_id,
            Body::SessionStarted { customer_id, .. }
            | Body::SessionEnded { customer_id, .. }
            | Body::Merged { customer_id, .. }
            | Body::Segment { customer_id, .. } => *customer_id,
        }
    }

    pub fn event_id(&self) -> Option<&str> {
        match self {
            Body::Lifecycle(e) => e.event_id.as_deref(),
            Body::Visitor(e) => e.event_id.as_deref(),
            _ => None,
        }
    }

    /// What filters look at.
    pub fn keys(&self) -> EventKeys {
        if let Body::Lifecycle(e) = self {
            return e.keys();
        }
        let mut keys = EventKeys {
            topic: self.topic(),
            customer: self.customer_id(),
            other_customers: None,
            session: None,
            action: None,
            action_map: None,
            action_map_version: None,
            segment: None,
        };
        match self {
            Body::Lifecycle(_) => {}
            Body::Visitor(e) => keys.session = e.session_id,
            Body::SessionStarted { session_id, .. } | Body::SessionEnded { session_id, .. } => {
                keys.session = Some(*session_id)
            }
            Body::Merged {
                merged_customer_ids,
                ..
            } => keys.other_customers = Some(merged_customer_ids.as_slice().into()),
            Body::Segment { segment_id, .. } => keys.segment = Some(*segment_id),
        }
        keys
    }
}

impl From<Event> for Body {
    fn from(event: Event) -> Body {
        match event {
            Event::Lifecycle(e) => Body::Lifecycle(e),
            Event::Visitor(e) => Body::Visitor(e),
        }
    }
}

/// An accepted event: its body, seq and receive time.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub seq: Seq,
    pub timestamp: Millis,
    pub body: Body,
}

// What anonymizing keeps of an event: the one rule, used for the live history, the
// state, a restart's replay and the log's compaction alike (docs/protocol.md, "Visitors",
// says it for clients). It keeps what says what happened and when (ids, topics, states,
// timestamps, counts, page paths, track names, eventIds) and drops everything a person
// typed or a page carried about them.

impl Body {
    /// The event as anonymizing keeps it. Idempotent: anonymizing twice changes nothing.
    pub fn anonymized(&self) -> Body {
        match self {
            Body::Lifecycle(e) => Body::Lifecycle(e.anonymized()),
            Body::Visitor(e) => Body::Visitor(e.anonymized()),
            Body::SessionStarted {
                customer_id,
                session_id,
                started_at,
                ..
            } => Body::SessionStarted {
                customer_id: *customer_id,
                session_id: *session_id,
                user_id: None,
                started_at: *started_at,
            },
            Body::SessionEnded {
                customer_id,
                session_id,
                started_at,
                ended_at,
                pages_viewed,
                reason,
                ..
            } => Body::SessionEnded {
                customer_id: *customer_id,
                session_id: *session_id,
                user_id: None,
                started_at: *started_at,
                ended_at: *ended_at,
                pages_viewed: *pages_viewed,
                reason: *reason,
            },
            Body::Merged {
                customer_id,
                visitor_id,
                merged_customer_ids,
                ..
            } => Body::Merged {
                customer_id: *customer_id,
                visitor_id: *visitor_id,
                user_id: None,
                merged_customer_ids: merged_customer_ids.clone(),
            },
            // Ids only: nothing in it is about the person beyond who they are.
            Body::Segment { .. } => self.clone(),
        }
    }
}

impl LifecycleEvent {
    /// The report without its free text: `data` and `errorMessage` go (`errorCode`, a
    /// number the site's code chose, stays with the state it explains).
    pub fn anonymized(&self) -> LifecycleEvent {
        LifecycleEvent {
            error_message: None,
            data: None,
            ..self.clone()
        }
    }
}

impl VisitorEvent {
    /// The visitor event without anything about the person: `userId`, `traits`,
    /// `channels`, `properties`, `attributes`, `company` and `client` go, and a page keeps only its URL's path
    /// ([`anonymized_page`]). The kind, ids and a track event's `name` stay.
    pub fn anonymized(&self) -> VisitorEvent {
        VisitorEvent {
            kind: self.kind,
            customer_id: self.customer_id,
            session_id: self.session_id,
            user_id: None,
            traits: None,
            channels: None,
            page: self.page.as_ref().and_then(anonymized_page),
            name: self.name.clone(),
            properties: None,
            event_id: self.event_id.clone(),
            attributes: None,
            company: None,
            client: None,
        }
    }
}

/// A page as anonymizing keeps it: `{"url": ..}` with the URL cut to its scheme, host and
/// path ([`url_path_only`]); its title, referrer and every other key go. None when the
/// page had no URL (only page events need one), since nothing of it is kept then.
pub fn anonymized_page(page: &Map<String, Value>) -> Option<Map<String, Value>> {
    let url = page.get("url")?.as_str()?;
    let mut kept = Map::new();
    kept.insert("url".into(), Value::String(url_path_only(url)));
    Some(kept)
}

/// A URL without its query string, fragment and user info (`https://ann@x.example/a?q#f`
/// becomes `https://x.example/a`): those are where sites leave emails, names and tokens.
pub fn url_path_only(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}{host}{path}")
}
