//! Events: what clients publish (validated here) and what the hub publishes and delivers.
//!
//! Validation turns an untrusted JSON object into a typed [`Event`] or an `invalid_event`
//! refusal that names the field at fault. A [`Published`] event is an accepted event with
//! its seq and timestamp; its JSON form is what subscribers receive, the retained history
//! serves, and the log stores. This module is pure: no IO, no state.

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::edge::outbox::WireFrame;
use crate::error::HubError;
use crate::ids::{ActionId, ActionMapId, CustomerId, Seq, SessionId};
use crate::ingest::lifecycle::{ActionState, MediaType};
use crate::ingest::topic::{EventKeys, Topic, VISITOR_NAMES};

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
}

impl VisitorKind {
    const ALL: [VisitorKind; 6] = [
        VisitorKind::Identify,
        VisitorKind::Signin,
        VisitorKind::Signout,
        VisitorKind::Userinfo,
        VisitorKind::Page,
        VisitorKind::Track,
    ];

    pub fn as_str(self) -> &'static str {
        VISITOR_NAMES[self as usize]
    }

    fn parse(text: &str) -> Option<VisitorKind> {
        VisitorKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    pub fn topic(self) -> Topic {
        Topic::visitor(self as usize)
    }

    fn needs_session(self) -> bool {
        !matches!(self, VisitorKind::Identify | VisitorKind::Track)
    }

    fn needs_user(self) -> bool {
        matches!(
            self,
            VisitorKind::Identify | VisitorKind::Signin | VisitorKind::Userinfo
        )
    }
}

/// A report about the customer rather than an action.
#[derive(Clone, Debug, PartialEq)]
pub struct VisitorEvent {
    pub kind: VisitorKind,
    pub customer_id: CustomerId,
    pub session_id: Option<SessionId>,
    pub user_id: Option<String>,
    pub traits: Option<Map<String, Value>>,
    pub channels: Option<Map<String, Value>>,
    pub page: Option<Map<String, Value>>,
    pub name: Option<String>,
    pub properties: Option<Map<String, Value>>,
    pub event_id: Option<String>,
}

impl Event {
    /// Validates one published event. Every refusal is `invalid_event` naming the field.
    pub fn from_json(value: Value) -> Result<Event, HubError> {
        let Value::Object(map) = value else {
            return Err(HubError::invalid_field(
                "event",
                "an event must be a JSON object",
            ));
        };
        let mut fields = Fields(map);
        let event = match (
            fields.0.contains_key("actionId"),
            fields.0.contains_key("type"),
        ) {
            (true, false) => Event::Lifecycle(LifecycleEvent::from_fields(&mut fields)?),
            (false, true) => Event::Visitor(VisitorEvent::from_fields(&mut fields)?),
            (true, true) => {
                return Err(HubError::invalid_field(
                    "type",
                    "an event has either `actionId` (lifecycle) or `type` (visitor), not both",
                ))
            }
            (false, false) => {
                return Err(HubError::invalid_field(
                    "actionId",
                    "an event needs `actionId` (lifecycle event) or `type` (visitor event)",
                ))
            }
        };
        fields.finish()?;
        Ok(event)
    }

    /// Validates one published event given as JSON text: a valid lifecycle event through
    /// the typed fast path ([`LifecycleFields`]), anything else through [`Event::from_json`].
    pub fn from_text(text: &str) -> Result<Event, HubError> {
        let typed = serde_json::from_str::<LifecycleFields>(text).ok();
        if let Some(event) = typed.and_then(LifecycleFields::validate) {
            return Ok(Event::Lifecycle(event));
        }
        let value = serde_json::from_str(text)
            .map_err(|e| HubError::invalid_field("event", format!("not JSON: {e}")))?;
        Event::from_json(value)
    }

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
    fn from_fields(f: &mut Fields) -> Result<LifecycleEvent, HubError> {
        let media_text = f.required_str("actionMediaType")?;
        let media = MediaType::parse(&media_text).ok_or_else(|| {
            HubError::invalid_field(
                "actionMediaType",
                format!("unknown actionMediaType {media_text:?}; known: webchat, contentoffer"),
            )
        })?;
        let state_text = f.required_str("actionState")?;
        let state = ActionState::parse(&state_text)
            .filter(|s| media.has_state(*s))
            .ok_or_else(|| {
                let known: Vec<_> = media.states().iter().map(|s| s.as_str()).collect();
                HubError::invalid_field(
                    "actionState",
                    format!(
                        "{media} has no state {state_text:?}; its states are {}",
                        known.join(", ")
                    ),
                )
            })?;
        let action_map_version = f.required("actionMapVersion")?;
        let action_map_version = action_map_version
            .as_u64()
            .filter(|v| (1..=u32::MAX as u64).contains(v))
            .ok_or_else(|| {
                HubError::invalid_field(
                    "actionMapVersion",
                    "actionMapVersion must be an integer >= 1",
                )
            })? as u32;
        match f.optional_str("customerIdType")?.as_deref() {
            None | Some("cookie") => {}
            Some(other) => {
                return Err(HubError::invalid_field(
                    "customerIdType",
                    format!("customerIdType must be \"cookie\", got {other:?}"),
                ))
            }
        }
        let error_code = match f.0.remove("errorCode") {
            None => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                HubError::invalid_field("errorCode", "errorCode must be an integer")
            })?),
        };
        let error_message = f.optional_text("errorMessage", MAX_TEXT_CHARS)?;
        if state != ActionState::Errored {
            for (field, present) in [
                ("errorCode", error_code.is_some()),
                ("errorMessage", error_message.is_some()),
            ] {
                if present {
                    return Err(HubError::invalid_field(
                        field,
                        format!("{field} is accepted only with actionState \"errored\""),
                    ));
                }
            }
        }
        Ok(LifecycleEvent {
            action_id: f.required_id("actionId", ActionId::parse)?,
            state,
            media,
            action_map_id: f.required_id("actionMapId", ActionMapId::parse)?,
            action_map_version,
            customer_id: f.required_id("customerId", CustomerId::parse)?,
            session_id: f.required_id("sessionId", SessionId::parse)?,
            error_code,
            error_message,
            event_id: f.event_id()?,
            data: f.optional_data()?,
        })
    }

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
        }
    }
}

impl VisitorEvent {
    fn from_fields(f: &mut Fields) -> Result<VisitorEvent, HubError> {
        let type_text = f.required_str("type")?;
        let kind = VisitorKind::parse(&type_text).ok_or_else(|| {
            HubError::invalid_field(
                "type",
                format!(
                    "unknown visitor event type {type_text:?}; known: identify, signin, signout, \
                     userinfo, page, track"
                ),
            )
        })?;
        let customer_id = f.required_id("customerId", CustomerId::parse)?;
        let session_id = match f.0.contains_key("sessionId") || kind.needs_session() {
            true => Some(f.required_id("sessionId", SessionId::parse)?),
            false => None,
        };
        let user_id = f.optional_text("userId", MAX_USER_ID_CHARS)?;
        if kind.needs_user() && user_id.is_none() {
            return Err(HubError::invalid_field(
                "userId",
                format!("a {} event needs `userId`", kind.as_str()),
            ));
        }
        let name = f.optional_text("name", MAX_TEXT_CHARS)?;
        if kind == VisitorKind::Track && name.is_none() {
            return Err(HubError::invalid_field(
                "name",
                "a track event needs `name`",
            ));
        }
        let page = f.optional_object("page")?;
        if let Some(page) = &page {
            match page.get("url") {
                None | Some(Value::String(_)) => {}
                Some(_) => {
                    return Err(HubError::invalid_field(
                        "page.url",
                        "page.url must be a string",
                    ))
                }
            }
        }
        let has_url = page.as_ref().is_some_and(|p| {
            p.get("url")
                .is_some_and(|u| u.as_str().is_some_and(|s| !s.is_empty()))
        });
        if kind == VisitorKind::Page && !has_url {
            return Err(HubError::invalid_field(
                "page.url",
                "a page event needs `page.url`",
            ));
        }
        let channels = f.optional_object("channels")?;
        if let Some((channel, _)) = channels.iter().flatten().find(|(_, v)| !v.is_string()) {
            return Err(HubError::invalid_field(
                "channels",
                format!("channels.{channel} must be a string (the user's id on that channel)"),
            ));
        }
        Ok(VisitorEvent {
            kind,
            customer_id,
            session_id,
            user_id,
            traits: f.optional_object("traits")?,
            channels,
            page,
            name,
            properties: f.optional_object("properties")?,
            event_id: f.event_id()?,
        })
    }
}

/// The fields of an incoming object, taken one at a time so that what is left at the end
/// is exactly the unknown ones.
struct Fields(Map<String, Value>);

impl Fields {
    fn required(&mut self, field: &str) -> Result<Value, HubError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Err(HubError::invalid_field(
                field,
                format!("`{field}` is required"),
            )),
            Some(value) => Ok(value),
        }
    }

    fn required_str(&mut self, field: &str) -> Result<String, HubError> {
        match self.required(field)? {
            Value::String(s) => Ok(s),
            _ => Err(HubError::invalid_field(
                field,
                format!("`{field}` must be a string"),
            )),
        }
    }

    fn optional_str(&mut self, field: &str) -> Result<Option<String>, HubError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(HubError::invalid_field(
                field,
                format!("`{field}` must be a string"),
            )),
        }
    }

    /// A non-empty string of at most `max` characters.
    fn optional_text(&mut self, field: &str, max: usize) -> Result<Option<String>, HubError> {
        let Some(text) = self.optional_str(field)? else {
            return Ok(None);
        };
        if !text_fits(&text, max) {
            return Err(HubError::invalid_field(
                field,
                format!("`{field}` must be 1 to {max} characters"),
            ));
        }
        Ok(Some(text))
    }

    fn required_id<T>(
        &mut self,
        field: &str,
        parse: impl Fn(&str) -> Result<T, crate::ids::BadId>,
    ) -> Result<T, HubError> {
        let text = self.required_str(field)?;
        parse(&text).map_err(|_| {
            HubError::invalid_field(field, format!("`{field}` must be a UUIDv4, got {text:?}"))
        })
    }

    fn optional_object(&mut self, field: &str) -> Result<Option<Map<String, Value>>, HubError> {
        let object = self.take_object(field)?;
        if let Some(object) = &object {
            object_fits(field, json_size(object))?;
        }
        Ok(object)
    }

    /// The `data` object of a lifecycle event, as the text the hub keeps.
    fn optional_data(&mut self) -> Result<Option<EventData>, HubError> {
        let Some(object) = self.take_object("data")? else {
            return Ok(None);
        };
        let data = EventData::from_map(&object);
        object_fits("data", data.as_str().len())?;
        Ok(Some(data))
    }

    fn take_object(&mut self, field: &str) -> Result<Option<Map<String, Value>>, HubError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(object)) => Ok(Some(object)),
            Some(_) => Err(HubError::invalid_field(
                field,
                format!("`{field}` must be an object"),
            )),
        }
    }

    fn event_id(&mut self) -> Result<Option<String>, HubError> {
        self.optional_text("eventId", MAX_EVENT_ID_CHARS)
    }

    /// Refuses whatever field was not taken.
    fn finish(self) -> Result<(), HubError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(field) => Err(HubError::invalid_field(
                field,
                format!("unknown field `{field}`; put enrichment in `data`"),
            )),
        }
    }
}

/// Whether a text field is non-empty and at most `max` characters.
fn text_fits(text: &str, max: usize) -> bool {
    !text.is_empty() && text.chars().count() <= max
}

/// The size of an object as JSON, the measure of its limit.
fn json_size(object: &Map<String, Value>) -> usize {
    serde_json::to_vec(object).map_or(usize::MAX, |v| v.len())
}

/// Refuses an object of more than [`MAX_OBJECT_BYTES`] as JSON.
fn object_fits(field: &str, size: usize) -> Result<(), HubError> {
    if size > MAX_OBJECT_BYTES {
        return Err(HubError::invalid_field(
            field,
            format!("`{field}` is {size} bytes as JSON; the limit is {MAX_OBJECT_BYTES}"),
        ));
    }
    Ok(())
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

/// A lifecycle event as a publish frame carries it, its strings borrowed from the frame:
/// the fast path of validation, which builds no JSON tree. It deserializes only when every
/// field has its JSON type and none is unknown, repeated, escaped or a `null` where the
/// general path refuses one; [`LifecycleFields::validate`] then applies the rules of
/// [`Event::from_json`]. It never refuses: whatever it does not take goes through
/// `Event::from_json`, which decides the same way and names the fault.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LifecycleFields<'a> {
    action_id: &'a str,
    action_state: &'a str,
    action_media_type: &'a str,
    action_map_id: &'a str,
    action_map_version: u64,
    customer_id: &'a str,
    #[serde(borrow)]
    customer_id_type: Option<&'a str>,
    session_id: &'a str,
    /// `errorCode: null` is refused by the general path, so here it must not read as absent.
    #[serde(default, deserialize_with = "present")]
    error_code: Option<i64>,
    #[serde(borrow)]
    error_message: Option<&'a str>,
    #[serde(borrow)]
    event_id: Option<&'a str>,
    data: Option<Map<String, Value>>,
}

/// Deserializes a field that, when present, must hold a value (`null` is an error).
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

impl LifecycleFields<'_> {
    /// The event when it keeps every rule, or None (the general path then says which).
    pub fn validate(self) -> Option<LifecycleEvent> {
        let media = MediaType::parse(self.action_media_type)?;
        let state = ActionState::parse(self.action_state).filter(|s| media.has_state(*s))?;
        let action_map_version = u32::try_from(self.action_map_version)
            .ok()
            .filter(|v| *v >= 1)?;
        let cookie = matches!(self.customer_id_type, None | Some("cookie"));
        let error_fields = self.error_code.is_some() || self.error_message.is_some();
        let data = self.data.as_ref().map(EventData::from_map);
        let data_fits = data
            .as_ref()
            .is_none_or(|d| d.as_str().len() <= MAX_OBJECT_BYTES);
        if !cookie || (error_fields && state != ActionState::Errored) || !data_fits {
            return None;
        }
        let text = |text: Option<&str>, max| match text {
            None => Some(None),
            Some(text) => text_fits(text, max).then(|| Some(text.to_owned())),
        };
        Some(LifecycleEvent {
            action_id: ActionId::parse(self.action_id).ok()?,
            state,
            media,
            action_map_id: ActionMapId::parse(self.action_map_id).ok()?,
            action_map_version,
            customer_id: CustomerId::parse(self.customer_id).ok()?,
            session_id: SessionId::parse(self.session_id).ok()?,
            error_code: self.error_code,
            error_message: text(self.error_message, MAX_TEXT_CHARS)?,
            event_id: text(self.event_id, MAX_EVENT_ID_CHARS)?,
            data,
        })
    }
}

/// Milliseconds since the Unix epoch, UTC: the hub's clock for timestamps.
pub type Millis = i64;

/// Formats a timestamp as RFC 3339 with milliseconds, UTC (`2026-01-02T03:04:05.678Z`).
pub fn format_millis(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The hub's receive time now.
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// Why a session ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EndReason {
    Replaced,
    Signout,
    Idle,
}

impl EndReason {
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
        user_id: Option<String>,
        started_at: Millis,
    },
    SessionEnded {
        customer_id: CustomerId,
        session_id: SessionId,
        user_id: Option<String>,
        started_at: Millis,
        ended_at: Millis,
        pages_viewed: u64,
        reason: EndReason,
    },
    Merged {
        customer_id: CustomerId,
        visitor_id: CustomerId,
        /// The user id whose link caused the merge; none for a merge asked for by the API.
        user_id: Option<String>,
        merged_customer_ids: Vec<CustomerId>,
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
        }
    }

    pub fn customer_id(&self) -> CustomerId {
        match self {
            Body::Lifecycle(e) => e.customer_id,
            Body::Visitor(e) => e.customer_id,
            Body::SessionStarted { customer_id, .. }
            | Body::SessionEnded { customer_id, .. }
            | Body::Merged { customer_id, .. } => *customer_id,
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

impl Published {
    /// The delivered `event` frame, serialized once and shared by every receiver.
    pub fn to_frame(&self) -> String {
        #[derive(Serialize)]
        struct Frame<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            seq: Seq,
            topic: &'static str,
            event: &'a Published,
        }
        serde_json::to_string(&Frame {
            kind: "event",
            seq: self.seq,
            topic: self.body.topic().as_str(),
            event: self,
        })
        .expect("events serialize to JSON")
    }
}

/// The identity fields an anonymization removes from retained visitor and session events.
const IDENTITY_FIELDS: [&str; 3] = ["userId", "traits", "channels"];

/// A retained record with the identity fields removed from its event, when it is a visitor
/// or session event that has any (lifecycle events, the action history, stay as they are).
pub fn redact_identity(
    record: &crate::hub::retention::Record,
) -> Option<crate::hub::retention::Record> {
    let unchanged = || {
        Some(crate::hub::retention::Record {
            seq: record.seq,
            timestamp: record.timestamp,
            keys: record.keys.clone(),
            event_id: record.event_id.clone(),
            frame: record.frame.clone(),
        })
    };
    let family = record.keys.topic.as_str().split(':').next().unwrap_or("");
    if !matches!(family, "visitor" | "session") {
        return unchanged();
    }
    let Ok(mut frame) = serde_json::from_str::<Value>(record.frame.as_str()) else {
        return unchanged();
    };
    let Some(event) = frame.get_mut("event").and_then(Value::as_object_mut) else {
        return unchanged();
    };
    for field in IDENTITY_FIELDS {
        event.remove(field);
    }
    Some(crate::hub::retention::Record {
        frame: WireFrame::text(&frame.to_string()),
        ..unchanged()?
    })
}

/// Why a stored event frame could not be read back (the log or a snapshot is damaged, or
/// was written by a release whose events this one does not understand).
#[derive(Debug, thiserror::Error)]
#[error("unreadable event frame: {0}")]
pub struct FrameError(String);

impl Published {
    /// Reads an `event` frame written by [`Published::to_frame`] back into the event. The
    /// inverse of serialization for every [`Body`]: the log replays events through it.
    pub fn from_frame(frame: &str) -> Result<Published, FrameError> {
        let bad = |what: &str| FrameError(what.to_string());
        let value: Value = serde_json::from_str(frame).map_err(|e| FrameError(e.to_string()))?;
        let Value::Object(mut outer) = value else {
            return Err(bad("a frame is an object"));
        };
        let seq = outer
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("`seq` missing"))?;
        let Some(Value::Object(mut event)) = outer.remove("event") else {
            return Err(bad("`event` missing"));
        };
        let topic = match event.remove("topic") {
            Some(Value::String(t)) => t,
            _ => return Err(bad("`event.topic` missing")),
        };
        let timestamp = take_millis(&mut event, "timestamp")?;
        event.remove("seq");
        let body = match topic.as_str() {
            "session:started" | "session:ended" => {
                let customer_id = take_id(&mut event, "customerId", CustomerId::parse)?;
                let session_id = take_id(&mut event, "sessionId", SessionId::parse)?;
                let user_id = take_str(&mut event, "userId");
                let started_at = take_millis(&mut event, "startedAt")?;
                if topic == "session:started" {
                    Body::SessionStarted {
                        customer_id,
                        session_id,
                        user_id,
                        started_at,
                    }
                } else {
                    let reason = take_str(&mut event, "reason");
                    let reason = [EndReason::Replaced, EndReason::Signout, EndReason::Idle]
                        .into_iter()
                        .find(|r| Some(r.as_str()) == reason.as_deref())
                        .ok_or_else(|| bad("`reason` unknown"))?;
                    Body::SessionEnded {
                        customer_id,
                        session_id,
                        user_id,
                        started_at,
                        ended_at: take_millis(&mut event, "endedAt")?,
                        pages_viewed: event
                            .get("pagesViewed")
                            .and_then(Value::as_u64)
                            .ok_or_else(|| bad("`pagesViewed` missing"))?,
                        reason,
                    }
                }
            }
            "visitor:merged" => {
                let ids = match event.remove("mergedCustomerIds") {
                    Some(Value::Array(ids)) => ids,
                    _ => return Err(bad("`mergedCustomerIds` missing")),
                };
                let merged_customer_ids = ids
                    .iter()
                    .map(|id| id.as_str().and_then(|s| CustomerId::parse(s).ok()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("`mergedCustomerIds` holds a bad id"))?;
                Body::Merged {
                    customer_id: take_id(&mut event, "customerId", CustomerId::parse)?,
                    visitor_id: take_id(&mut event, "visitorId", CustomerId::parse)?,
                    user_id: take_str(&mut event, "userId"),
                    merged_customer_ids,
                }
            }
            // Lifecycle and visitor events are what a client published: the validator reads
            // them back exactly (it accepted them once, and serialization only adds fields
            // it knows, such as `customerIdType`).
            _ => Event::from_json(Value::Object(event))
                .map_err(|e| FrameError(e.message.clone()))?
                .into(),
        };
        if body.topic().as_str() != topic {
            return Err(bad("`topic` does not match the event"));
        }
        Ok(Published {
            seq: Seq(seq),
            timestamp,
            body,
        })
    }
}

fn take_str(map: &mut Map<String, Value>, field: &str) -> Option<String> {
    match map.remove(field) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn take_id<T>(
    map: &mut Map<String, Value>,
    field: &str,
    parse: impl Fn(&str) -> Result<T, crate::ids::BadId>,
) -> Result<T, FrameError> {
    take_str(map, field)
        .and_then(|s| parse(&s).ok())
        .ok_or_else(|| FrameError(format!("`{field}` missing or not a UUIDv4")))
}

fn take_millis(map: &mut Map<String, Value>, field: &str) -> Result<Millis, FrameError> {
    take_str(map, field)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| FrameError(format!("`{field}` missing or not RFC 3339")))
}

/// Writes `key: value` when the value is present.
fn entry_opt<M: SerializeMap, T: Serialize>(
    map: &mut M,
    key: &str,
    value: &Option<T>,
) -> Result<(), M::Error> {
    match value {
        Some(v) => map.serialize_entry(key, v),
        None => Ok(()),
    }
}

/// Writes the fields of a lifecycle event in the spec's order.
pub fn serialize_lifecycle<M: SerializeMap>(
    map: &mut M,
    e: &LifecycleEvent,
) -> Result<(), M::Error> {
    map.serialize_entry("actionId", &e.action_id)?;
    map.serialize_entry("actionState", e.state.as_str())?;
    map.serialize_entry("actionMediaType", e.media.as_str())?;
    map.serialize_entry("actionMapId", &e.action_map_id)?;
    map.serialize_entry("actionMapVersion", &e.action_map_version)?;
    map.serialize_entry("customerId", &e.customer_id)?;
    map.serialize_entry("customerIdType", "cookie")?;
    map.serialize_entry("sessionId", &e.session_id)?;
    entry_opt(map, "errorCode", &e.error_code)?;
    entry_opt(map, "errorMessage", &e.error_message)?;
    entry_opt(map, "eventId", &e.event_id)?;
    entry_opt(map, "data", &e.data)
}

impl Serialize for Published {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match &self.body {
            Body::Lifecycle(e) => serialize_lifecycle(&mut map, e)?,
            Body::Visitor(e) => {
                map.serialize_entry("type", e.kind.as_str())?;
                map.serialize_entry("customerId", &e.customer_id)?;
                entry_opt(&mut map, "sessionId", &e.session_id)?;
                entry_opt(&mut map, "userId", &e.user_id)?;
                entry_opt(&mut map, "traits", &e.traits)?;
                entry_opt(&mut map, "channels", &e.channels)?;
                entry_opt(&mut map, "page", &e.page)?;
                entry_opt(&mut map, "name", &e.name)?;
                entry_opt(&mut map, "properties", &e.properties)?;
                entry_opt(&mut map, "eventId", &e.event_id)?;
            }
            Body::SessionStarted {
                customer_id,
                session_id,
                user_id,
                started_at,
            } => {
                map.serialize_entry("customerId", customer_id)?;
                map.serialize_entry("sessionId", session_id)?;
                entry_opt(&mut map, "userId", user_id)?;
                map.serialize_entry("startedAt", &format_millis(*started_at))?;
            }
            Body::SessionEnded {
                customer_id,
                session_id,
                user_id,
                started_at,
                ended_at,
                pages_viewed,
                reason,
            } => {
                map.serialize_entry("customerId", customer_id)?;
                map.serialize_entry("sessionId", session_id)?;
                entry_opt(&mut map, "userId", user_id)?;
                map.serialize_entry("startedAt", &format_millis(*started_at))?;
                map.serialize_entry("endedAt", &format_millis(*ended_at))?;
                map.serialize_entry("durationMs", &(ended_at - started_at).max(0))?;
                map.serialize_entry("pagesViewed", pages_viewed)?;
                map.serialize_entry("reason", reason.as_str())?;
            }
            Body::Merged {
                customer_id,
                visitor_id,
                user_id,
                merged_customer_ids,
            } => {
                map.serialize_entry("customerId", customer_id)?;
                map.serialize_entry("visitorId", visitor_id)?;
                entry_opt(&mut map, "userId", user_id)?;
                map.serialize_entry("mergedCustomerIds", merged_customer_ids)?;
            }
        }
        map.serialize_entry("seq", &self.seq)?;
        map.serialize_entry("topic", self.body.topic().as_str())?;
        map.serialize_entry("timestamp", &format_millis(self.timestamp))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
    const M: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
    const C: &str = "cccccccc-cccc-4ccc-8ccc-cccccccccccc";
    const S: &str = "dddddddd-dddd-4ddd-8ddd-dddddddddddd";

    fn lifecycle() -> Value {
        json!({
            "actionId": A, "actionState": "offered", "actionMediaType": "webchat",
            "actionMapId": M, "actionMapVersion": 3, "customerId": C, "sessionId": S
        })
    }

    fn with(mut base: Value, field: &str, value: Value) -> Value {
        base[field] = value;
        base
    }

    fn without(mut base: Value, field: &str) -> Value {
        base.as_object_mut().unwrap().remove(field);
        base
    }

    #[test]
    fn data_is_kept_as_compact_sorted_json_whatever_the_publisher_wrote() {
        let text = format!(
            r#"{{"actionId":"{A}","actionState":"offered","actionMediaType":"webchat","actionMapId":"{M}","actionMapVersion":1,"customerId":"{C}","sessionId":"{S}","data": {{ "z" : 1, "a" : {{"y": [1, 2], "b": null}} }}}}"#
        );
        let Ok(Event::Lifecycle(event)) = Event::from_text(&text) else {
            panic!("{text} refused");
        };
        let data = event.data.expect("data");
        assert_eq!(data.as_str(), r#"{"a":{"b":null,"y":[1,2]},"z":1}"#);
        assert_eq!(EventData::from_written(data.as_str()), Some(data));
        for not_an_object in ["[1]", "\"x\"", "{", ""] {
            assert_eq!(
                EventData::from_written(not_an_object),
                None,
                "{not_an_object}"
            );
        }
    }

    #[test]
    fn from_text_decides_as_from_json() {
        let errored = with(lifecycle(), "actionState", json!("errored"));
        let cases = [
            lifecycle(),
            with(lifecycle(), "data", json!({"conversationId": "c-1"})),
            with(lifecycle(), "eventId", json!("line\nbreak")),
            with(errored.clone(), "errorCode", json!(500)),
            with(errored, "errorCode", Value::Null),
            with(lifecycle(), "errorCode", json!(500)),
            with(lifecycle(), "customerIdType", json!("device")),
            with(lifecycle(), "actionMapVersion", json!(0)),
            with(lifecycle(), "unknown", json!(1)),
            without(lifecycle(), "sessionId"),
            json!({"type": "track", "customerId": C, "name": "clicked"}),
            json!([lifecycle()]),
            json!("offered"),
        ];
        for value in cases {
            assert_eq!(
                Event::from_text(&value.to_string()),
                Event::from_json(value.clone()),
                "{value}"
            );
        }
    }

    fn refused_field(value: Value) -> String {
        let err = Event::from_json(value.clone())
            .err()
            .unwrap_or_else(|| panic!("{value} accepted"));
        assert_eq!(err.code, crate::error::ErrorCode::InvalidEvent, "{value}");
        err.details.unwrap()["field"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_valid_lifecycle_event_round_trips() {
        let event =
            Event::from_json(with(lifecycle(), "data", json!({"conversationId": "x"}))).unwrap();
        let published = Published {
            seq: Seq(7),
            timestamp: 1_700_000_000_123,
            body: event.into(),
        };
        let json: Value = serde_json::to_value(&published).unwrap();
        assert_eq!(json["customerIdType"], "cookie");
        assert_eq!(json["seq"], 7);
        assert_eq!(json["topic"], "webchat:offered");
        assert_eq!(json["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["data"]["conversationId"], "x");
        let frame: Value = serde_json::from_str(&published.to_frame()).unwrap();
        assert_eq!(frame["type"], "event");
        assert_eq!(frame["event"], json);
    }

    #[test]
    fn every_body_round_trips_through_its_frame() {
        let (c, s) = (CustomerId::parse(C).unwrap(), SessionId::parse(S).unwrap());
        let other = CustomerId::new_random();
        let events = [
            json!({"actionId": A, "actionState": "errored", "actionMediaType": "webchat",
                   "actionMapId": M, "actionMapVersion": 3, "customerId": C, "sessionId": S,
                   "errorCode": -2, "errorMessage": "boom", "eventId": "e-1",
                   "data": {"nested": {"x": [1, 2.5, null, "é"]}}}),
            lifecycle(),
            with(
                with(lifecycle(), "actionMediaType", json!("contentoffer")),
                "actionState",
                json!("qualified"),
            ),
            json!({"type": "identify", "customerId": C, "userId": "u1",
                   "traits": {"name": "Ann"}, "channels": {"whatsapp": "1"}, "eventId": "x"}),
            json!({"type": "signin", "customerId": C, "sessionId": S, "userId": "u1"}),
            json!({"type": "signout", "customerId": C, "sessionId": S}),
            json!({"type": "userinfo", "customerId": C, "sessionId": S, "userId": "u1"}),
            json!({"type": "page", "customerId": C, "sessionId": S,
                   "page": {"url": "https://x.example/", "title": "X"}}),
            json!({"type": "track", "customerId": C, "name": "clicked",
                   "properties": {"n": 1}}),
        ];
        let mut bodies: Vec<Body> = events
            .into_iter()
            .map(|e| Event::from_json(e).unwrap().into())
            .collect();
        bodies.extend([
            Body::SessionStarted {
                customer_id: c,
                session_id: s,
                user_id: None,
                started_at: 1_700_000_000_001,
            },
            Body::SessionStarted {
                customer_id: c,
                session_id: s,
                user_id: Some("u1".into()),
                started_at: 1_700_000_000_001,
            },
            Body::SessionEnded {
                customer_id: c,
                session_id: s,
                user_id: Some("u1".into()),
                started_at: 1_700_000_000_001,
                ended_at: 1_700_000_009_999,
                pages_viewed: 4,
                reason: EndReason::Idle,
            },
            Body::SessionEnded {
                customer_id: c,
                session_id: s,
                user_id: None,
                started_at: 5,
                ended_at: 5,
                pages_viewed: 0,
                reason: EndReason::Replaced,
            },
            Body::Merged {
                customer_id: c,
                visitor_id: other,
                user_id: Some("u1".into()),
                merged_customer_ids: vec![other, c],
            },
        ]);
        for (i, body) in bodies.into_iter().enumerate() {
            let published = Published {
                seq: Seq(i as u64 + 1),
                timestamp: 1_700_000_000_123 + i as i64,
                body,
            };
            let back = Published::from_frame(&published.to_frame())
                .unwrap_or_else(|e| panic!("{}: {e}", published.to_frame()));
            assert_eq!(back, published);
        }
        assert!(Published::from_frame("{\"type\":\"event\"}").is_err());
    }

    #[test]
    fn lifecycle_refusals_name_the_field() {
        let big = "x".repeat(MAX_OBJECT_BYTES);
        let cases: Vec<(Value, &str)> = vec![
            (without(lifecycle(), "actionId"), "actionId"), // becomes "neither" → names actionId
            (with(lifecycle(), "actionId", json!("nope")), "actionId"),
            (
                with(lifecycle(), "actionState", json!("started2")),
                "actionState",
            ),
            (
                with(
                    with(lifecycle(), "actionMediaType", json!("contentoffer")),
                    "actionState",
                    json!("started"),
                ),
                "actionState",
            ),
            (
                with(lifecycle(), "actionMediaType", json!("video")),
                "actionMediaType",
            ),
            (
                with(lifecycle(), "actionMapVersion", json!(0)),
                "actionMapVersion",
            ),
            (
                with(lifecycle(), "actionMapVersion", json!(1.5)),
                "actionMapVersion",
            ),
            (
                with(lifecycle(), "actionMapVersion", json!("3")),
                "actionMapVersion",
            ),
            (
                with(lifecycle(), "customerIdType", json!("email")),
                "customerIdType",
            ),
            (
                with(
                    lifecycle(),
                    "customerId",
                    json!("11111111-1111-1111-8111-111111111111"),
                ),
                "customerId",
            ),
            (without(lifecycle(), "sessionId"), "sessionId"),
            (with(lifecycle(), "errorCode", json!(500)), "errorCode"),
            (
                with(lifecycle(), "errorMessage", json!("boom")),
                "errorMessage",
            ),
            (
                with(lifecycle(), "eventId", json!("e".repeat(65))),
                "eventId",
            ),
            (with(lifecycle(), "eventId", json!("")), "eventId"),
            (with(lifecycle(), "data", json!({"big": big})), "data"),
            (with(lifecycle(), "data", json!([1])), "data"),
            (
                with(lifecycle(), "conversationId", json!("x")),
                "conversationId",
            ),
            (with(lifecycle(), "type", json!("page")), "type"),
        ];
        for (value, field) in cases {
            assert_eq!(refused_field(value.clone()), field, "{value}");
        }
    }

    #[test]
    fn errored_takes_error_fields_and_type_defaults() {
        let errored = with(
            with(
                with(lifecycle(), "actionState", json!("errored")),
                "errorCode",
                json!(500),
            ),
            "errorMessage",
            json!("boom"),
        );
        let Event::Lifecycle(e) =
            Event::from_json(with(errored, "customerIdType", json!("cookie"))).unwrap()
        else {
            panic!("lifecycle expected")
        };
        assert_eq!(
            (e.error_code, e.error_message.as_deref()),
            (Some(500), Some("boom"))
        );
    }

    #[test]
    fn visitor_required_fields() {
        let base = |t: &str| json!({"type": t, "customerId": C, "sessionId": S});
        let ok = [
            json!({"type": "identify", "customerId": C, "userId": "u1"}),
            json!({"type": "track", "customerId": C, "name": "clicked"}),
            with(base("signin"), "userId", json!("u1")),
            base("signout"),
            with(base("userinfo"), "userId", json!("u1")),
            with(
                base("page"),
                "page",
                json!({"url": "https://x.example/", "title": "X"}),
            ),
            with(
                with(base("identify"), "userId", json!("u1")),
                "channels",
                json!({"whatsapp": "10435685475"}),
            ),
        ];
        for value in ok {
            Event::from_json(value.clone()).unwrap_or_else(|e| panic!("{value}: {e:?}"));
        }
        let refused: Vec<(Value, &str)> = vec![
            (base("signin"), "userId"),
            (
                without(with(base("signin"), "userId", json!("u")), "sessionId"),
                "sessionId",
            ),
            (json!({"type": "page", "customerId": C}), "sessionId"),
            (base("page"), "page.url"),
            (
                with(base("page"), "page", json!({"title": "no url"})),
                "page.url",
            ),
            (json!({"type": "track", "customerId": C}), "name"),
            (
                with(base("identify"), "userId", json!("u".repeat(257))),
                "userId",
            ),
            (base("wave"), "type"),
            (
                with(
                    with(base("identify"), "userId", json!("u")),
                    "channels",
                    json!({"whatsapp": 1}),
                ),
                "channels",
            ),
            (
                with(
                    with(base("identify"), "userId", json!("u")),
                    "traits",
                    json!("name"),
                ),
                "traits",
            ),
            (json!({"customerId": C}), "actionId"),
        ];
        for (value, field) in refused {
            assert_eq!(refused_field(value.clone()), field, "{value}");
        }
    }
}
