//! Validation: a published event, untrusted JSON, becomes a typed [`Event`] or an
//! `invalid_event` refusal that names the field at fault (PROTOCOL.md section 3).
//!
//! One set of rules decides, in one fixed order, so the field a refusal names does not
//! depend on the order a client wrote its fields in; unknown fields are refused last. The
//! rules read an [`EventInput`]: a serde-derived struct of [`Slot`]s that keep what each
//! field held, read from the text (borrowed, without a JSON tree) or filled from a JSON
//! tree when the text holds what the derive cannot (see [`crate::ingest::fields`]). A
//! valid lifecycle event, most of what clients send, takes a faster reader first,
//! [`LifecycleFields`]: typed fields borrowed from the text and checked by the same rule
//! functions; it never refuses, and whatever it does not take the general reader decides.
//! (Reading slots costs ~25% more than typed fields on a publish frame; docs/benchmarks.md.)
//!
//! Pure: no IO, no state.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::HubError;
use crate::ids::{ActionId, ActionMapId, BadId, CompanyId, CustomerId, SessionId, UserId};
use crate::ingest::event::{
    ClientContext, CompanyInfo, Event, EventData, LifecycleEvent, Software, VisitorEvent,
    VisitorKind, MAX_CLIENT_TEXT_CHARS, MAX_COMPANY_ID_CHARS, MAX_EVENT_ID_CHARS, MAX_OBJECT_BYTES,
    MAX_TEXT_CHARS, MAX_USER_ID_CHARS,
};
use crate::ingest::fields::{fill, left, Named, Nested, Refuse, Slot, Unknown};
use crate::ingest::lifecycle::{ActionState, MediaType};

impl Event {
    /// Validates one published event given as a JSON tree. Every refusal is
    /// `invalid_event` naming the field.
    pub fn from_json(value: Value) -> Result<Event, HubError> {
        let Value::Object(object) = value else {
            return Err(not_an_object());
        };
        EventInput::from_tree(object).decide()
    }

    /// Validates one published event given as JSON text (an event of an HTTP batch), read
    /// without a JSON tree where it can be; decides exactly as [`Event::from_json`] on the
    /// parsed text.
    pub fn from_text(text: &str) -> Result<Event, HubError> {
        let fast = serde_json::from_str::<LifecycleFields>(text).ok();
        if let Some(event) = fast.and_then(LifecycleFields::validate) {
            return Ok(Event::Lifecycle(event));
        }
        match serde_json::from_str::<Nested<EventInput>>(text) {
            Ok(Nested::Object(mut input)) => input.decide(),
            // Not an object, not JSON, an unknown field or a key given twice: the tree
            // decides (and keeps the last of a repeated key).
            _ => {
                let value = serde_json::from_str(text)
                    .map_err(|e| invalid("event", format!("not JSON: {e}")))?;
                Event::from_json(value)
            }
        }
    }
}

/// The refusal of an event that is not a JSON object.
pub(crate) fn not_an_object() -> HubError {
    invalid("event", "an event must be a JSON object".into())
}

/// Every field a published event may have, lifecycle and visitor alike, as it arrived.
#[derive(Debug, Default, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    rename_all = "camelCase",
    bound(deserialize = "'de: 'a")
)]
pub(crate) struct EventInput<'a> {
    // A lifecycle event's.
    action_id: Slot<'a>,
    action_state: Slot<'a>,
    action_media_type: Slot<'a>,
    action_map_id: Slot<'a>,
    action_map_version: Slot<'a>,
    customer_id_type: Slot<'a>,
    error_code: Slot<'a>,
    error_message: Slot<'a>,
    data: Slot<'a>,
    // A visitor event's.
    #[serde(rename = "type")]
    kind: Slot<'a>,
    user_id: Slot<'a>,
    name: Slot<'a>,
    page: Slot<'a>,
    channels: Slot<'a>,
    traits: Slot<'a>,
    properties: Slot<'a>,
    attributes: Slot<'a>,
    company: Slot<'a>,
    client: Slot<'a>,
    // Both kinds'.
    customer_id: Slot<'a>,
    session_id: Slot<'a>,
    event_id: Slot<'a>,
    /// The keys a tree's event has beyond these (from text, such an event is read as a tree).
    #[serde(skip)]
    unknown: Unknown,
}

impl<'a> EventInput<'a> {
    /// Each slot with the name of its field, and the unknown keys.
    fn slots(&mut self) -> ([Named<'_, 'a>; 22], &mut Unknown) {
        let slots = [
            ("actionId", &mut self.action_id),
            ("actionState", &mut self.action_state),
            ("actionMediaType", &mut self.action_media_type),
            ("actionMapId", &mut self.action_map_id),
            ("actionMapVersion", &mut self.action_map_version),
            ("customerIdType", &mut self.customer_id_type),
            ("errorCode", &mut self.error_code),
            ("errorMessage", &mut self.error_message),
            ("data", &mut self.data),
            ("type", &mut self.kind),
            ("userId", &mut self.user_id),
            ("name", &mut self.name),
            ("page", &mut self.page),
            ("channels", &mut self.channels),
            ("traits", &mut self.traits),
            ("properties", &mut self.properties),
            ("attributes", &mut self.attributes),
            ("company", &mut self.company),
            ("client", &mut self.client),
            ("customerId", &mut self.customer_id),
            ("sessionId", &mut self.session_id),
            ("eventId", &mut self.event_id),
        ];
        (slots, &mut self.unknown)
    }

    /// The fields of a JSON tree's event, as they are in the tree.
    pub(crate) fn from_tree(object: Map<String, Value>) -> EventInput<'a> {
        let mut input = EventInput::default();
        let (mut slots, unknown) = input.slots();
        fill(object, &mut slots, unknown);
        input
    }

    /// Refuses the first field, in sorted order, that the rules did not take: one no event
    /// has, or one of the other kind of event.
    fn refuse_unknown(&mut self) -> Result<(), HubError> {
        let (slots, unknown) = self.slots();
        match unknown.first(left(&slots)) {
            None => Ok(()),
            Some(field) => Err(invalid(
                field,
                format!("unknown field `{field}`; put enrichment in `data`"),
            )),
        }
    }

    /// The event, or the refusal of the first rule it breaks.
    pub(crate) fn decide(&mut self) -> Result<Event, HubError> {
        match (self.action_id.is_present(), self.kind.is_present()) {
            (true, false) => lifecycle(self).map(Event::Lifecycle),
            (false, true) => visitor(self).map(Event::Visitor),
            (true, true) => Err(invalid(
                "type",
                "an event has either `actionId` (lifecycle) or `type` (visitor), not both".into(),
            )),
            (false, false) => Err(invalid(
                "actionId",
                "an event needs `actionId` (lifecycle event) or `type` (visitor event)".into(),
            )),
        }
    }
}

fn lifecycle(f: &mut EventInput<'_>) -> Result<LifecycleEvent, HubError> {
    let media = media_type(&required_str(
        f.action_media_type.take(),
        "actionMediaType",
    )?)?;
    let state = action_state(media, &required_str(f.action_state.take(), "actionState")?)?;
    let action_map_version =
        map_version(required(f.action_map_version.take(), "actionMapVersion")?.as_u64())?;
    cookie(
        f.customer_id_type
            .take()
            .optional_str("customerIdType", INVALID)?
            .as_deref(),
    )?;
    // `errorCode: null` is not an error code: only an absent one is none.
    let error_code = match f.error_code.take() {
        Slot::Absent => None,
        code => Some(
            code.as_i64()
                .ok_or_else(|| invalid("errorCode", "errorCode must be an integer".into()))?,
        ),
    };
    let error_message = optional_text(f.error_message.take(), "errorMessage", MAX_TEXT_CHARS)?;
    errored_only(state, error_code, &error_message)?;
    let event = LifecycleEvent {
        action_id: required_id(f.action_id.take(), "actionId", ActionId::parse)?,
        state,
        media,
        action_map_id: required_id(f.action_map_id.take(), "actionMapId", ActionMapId::parse)?,
        action_map_version,
        customer_id: required_id(f.customer_id.take(), "customerId", CustomerId::parse)?,
        session_id: required_id(f.session_id.take(), "sessionId", SessionId::parse)?,
        error_code,
        error_message,
        event_id: optional_text(f.event_id.take(), "eventId", MAX_EVENT_ID_CHARS)?,
        data: data(f.data.take().optional_object("data", INVALID)?.as_ref())?,
    };
    f.refuse_unknown()?;
    Ok(event)
}

// The rules of a lifecycle event's fields, one function each, in one place for both readers:
// the general path above (which first checks each field's JSON type, naming it) and the
// fast path below (whose fields serde already read with their types).

fn media_type(text: &str) -> Result<MediaType, HubError> {
    MediaType::parse(text).ok_or_else(|| {
        invalid(
            "actionMediaType",
            format!("unknown actionMediaType {text:?}; known: webchat, contentoffer"),
        )
    })
}

fn action_state(media: MediaType, text: &str) -> Result<ActionState, HubError> {
    ActionState::parse(text)
        .filter(|s| media.has_state(*s))
        .ok_or_else(|| {
            let known: Vec<_> = media.states().iter().map(|s| s.as_str()).collect();
            invalid(
                "actionState",
                format!(
                    "{media} has no state {text:?}; its states are {}",
                    known.join(", ")
                ),
            )
        })
}

/// The version, given the field's value when it is a non-negative integer.
fn map_version(version: Option<u64>) -> Result<u32, HubError> {
    version
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            invalid(
                "actionMapVersion",
                format!("actionMapVersion must be an integer from 1 to {}", u32::MAX),
            )
        })
}

fn cookie(id_type: Option<&str>) -> Result<(), HubError> {
    match id_type {
        None | Some("cookie") => Ok(()),
        Some(other) => Err(invalid(
            "customerIdType",
            format!("customerIdType must be \"cookie\", got {other:?}"),
        )),
    }
}

/// `errorCode` and `errorMessage` go only with the `errored` state.
fn errored_only(
    state: ActionState,
    error_code: Option<i64>,
    error_message: &Option<String>,
) -> Result<(), HubError> {
    if state != ActionState::Errored {
        for (field, present) in [
            ("errorCode", error_code.is_some()),
            ("errorMessage", error_message.is_some()),
        ] {
            if present {
                return Err(invalid(
                    field,
                    format!("{field} is accepted only with actionState \"errored\""),
                ));
            }
        }
    }
    Ok(())
}

/// A non-empty string of at most `max` characters, or None.
fn text(field: &str, text: Option<&str>, max: usize) -> Result<Option<String>, HubError> {
    match text {
        None => Ok(None),
        Some(text) if text_fits(text, max) => Ok(Some(text.to_owned())),
        Some(_) => Err(invalid(
            field,
            format!("`{field}` must be 1 to {max} characters"),
        )),
    }
}

fn id<T>(field: &str, text: &str, parse: impl Fn(&str) -> Result<T, BadId>) -> Result<T, HubError> {
    parse(text).map_err(|_| invalid(field, format!("`{field}` must be a UUIDv4, got {text:?}")))
}

/// The `data` object of a lifecycle event, as the text the hub keeps.
fn data(object: Option<&Map<String, Value>>) -> Result<Option<EventData>, HubError> {
    let Some(object) = object else {
        return Ok(None);
    };
    let data = EventData::from_map(object);
    object_fits("data", data.as_str().len())?;
    Ok(Some(data))
}

/// A lifecycle event as most publish frames and batches carry it, its strings borrowed
/// from the text: the fast path. It deserializes only when every field has its JSON type
/// and none is unknown, repeated, escaped or a `null` where the general path refuses one;
/// [`LifecycleFields::validate`] then applies the rules above. It never refuses: whatever
/// it does not take, the general path reads, decides and words.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LifecycleFields<'a> {
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
    pub(crate) fn validate(self) -> Option<LifecycleEvent> {
        let media = media_type(self.action_media_type).ok()?;
        let state = action_state(media, self.action_state).ok()?;
        let error_message = text("errorMessage", self.error_message, MAX_TEXT_CHARS).ok()?;
        cookie(self.customer_id_type).ok()?;
        errored_only(state, self.error_code, &error_message).ok()?;
        Some(LifecycleEvent {
            action_id: id("actionId", self.action_id, ActionId::parse).ok()?,
            state,
            media,
            action_map_id: id("actionMapId", self.action_map_id, ActionMapId::parse).ok()?,
            action_map_version: map_version(Some(self.action_map_version)).ok()?,
            customer_id: id("customerId", self.customer_id, CustomerId::parse).ok()?,
            session_id: id("sessionId", self.session_id, SessionId::parse).ok()?,
            error_code: self.error_code,
            error_message,
            event_id: text("eventId", self.event_id, MAX_EVENT_ID_CHARS).ok()?,
            data: data(self.data.as_ref()).ok()?,
        })
    }
}

fn visitor(f: &mut EventInput<'_>) -> Result<VisitorEvent, HubError> {
    let type_text = required_str(f.kind.take(), "type")?;
    let kind = VisitorKind::parse(&type_text).ok_or_else(|| {
        invalid(
            "type",
            format!(
                "unknown visitor event type {type_text:?}; known: identify, signin, signout, \
                 userinfo, page, track, update, exit"
            ),
        )
    })?;
    let customer_id = required_id(f.customer_id.take(), "customerId", CustomerId::parse)?;
    let session_id = match f.session_id.is_present() || kind.needs_session() {
        true => Some(required_id(
            f.session_id.take(),
            "sessionId",
            SessionId::parse,
        )?),
        false => None,
    };
    let user_id = optional_text(f.user_id.take(), "userId", MAX_USER_ID_CHARS)?.map(UserId::from);
    if kind.needs_user() && user_id.is_none() {
        return Err(invalid(
            "userId",
            format!("{} {} event needs `userId`", kind.article(), kind.as_str()),
        ));
    }
    let name = optional_text(f.name.take(), "name", MAX_TEXT_CHARS)?;
    if kind == VisitorKind::Track && name.is_none() {
        return Err(invalid("name", "a track event needs `name`".into()));
    }
    let page = optional_object(f.page.take(), "page")?;
    if let Some(page) = &page {
        match page.get("url") {
            None | Some(Value::String(_)) => {}
            Some(_) => return Err(invalid("page.url", "page.url must be a string".into())),
        }
    }
    let has_url = page.as_ref().is_some_and(|p| {
        p.get("url")
            .is_some_and(|u| u.as_str().is_some_and(|s| !s.is_empty()))
    });
    if matches!(kind, VisitorKind::Page | VisitorKind::Exit) && !has_url {
        return Err(invalid(
            "page.url",
            format!(
                "{} {} event needs `page.url`",
                kind.article(),
                kind.as_str()
            ),
        ));
    }
    let channels = optional_object(f.channels.take(), "channels")?;
    if let Some((channel, _)) = channels.iter().flatten().find(|(_, v)| !v.is_string()) {
        return Err(invalid(
            "channels",
            format!("channels.{channel} must be a string (the user's id on that channel)"),
        ));
    }
    identity_fields(kind, user_id.is_some(), channels.as_ref())?;
    let client = client(f.client.take())?;
    if client.is_some() && kind != VisitorKind::Page {
        return Err(invalid(
            "client",
            "only a page event carries `client`".into(),
        ));
    }
    let (attributes, company) =
        attributes_and_company(kind, f.attributes.take(), f.company.take())?;
    let event = VisitorEvent {
        kind,
        customer_id,
        session_id,
        user_id,
        traits: optional_object(f.traits.take(), "traits")?,
        channels,
        page,
        name,
        properties: optional_object(f.properties.take(), "properties")?,
        event_id: optional_text(f.event_id.take(), "eventId", MAX_EVENT_ID_CHARS)?,
        attributes,
        company,
        client: client.map(Box::new),
    };
    f.refuse_unknown()?;
    Ok(event)
}

/// The identity rules of a visitor event, once its `userId` and `channels` are read: only
/// the events that link a visitor (identify, signin, userinfo) may carry `channels` (on
/// any other the hub would have nothing to do with them, and it never drops what it
/// accepted), and an `identify` names its visitor by `userId`, by channel ids, or both.
fn identity_fields(
    kind: VisitorKind,
    has_user: bool,
    channels: Option<&Map<String, Value>>,
) -> Result<(), HubError> {
    if channels.is_some() && !kind.links() {
        return Err(invalid(
            "channels",
            format!(
                "{} {} event may not carry `channels`; send them with identify, signin or \
                 userinfo",
                kind.article(),
                kind.as_str()
            ),
        ));
    }
    let has_channels = channels.is_some_and(|c| !c.is_empty());
    if kind == VisitorKind::Identify && !has_user && !has_channels {
        return Err(invalid(
            "userId",
            "an identify event needs `userId` or a channel id in `channels`".into(),
        ));
    }
    Ok(())
}

/// An event's `attributes` and `company`, as [`attributes_and_company`] reads them.
pub(crate) type AttributesAndCompany = (Option<Map<String, Value>>, Option<CompanyInfo>);

/// An event's `attributes` and `company`, after the rules a client breaks by sending them
/// where they do nothing: `attributes` belong to an `update` (which needs them; the
/// identity events carry theirs as `traits`), and `company` to the events that set a
/// visitor's attributes (identify, signin, userinfo, update).
pub(crate) fn attributes_and_company(
    kind: VisitorKind,
    attributes: Slot<'_>,
    company: Slot<'_>,
) -> Result<AttributesAndCompany, HubError> {
    let attributes = optional_object(attributes, "attributes")?;
    match (kind == VisitorKind::Update, attributes.is_some()) {
        (true, false) => {
            return Err(invalid(
                "attributes",
                "an update event needs `attributes`".into(),
            ))
        }
        (false, true) => {
            return Err(invalid(
                "attributes",
                format!(
                    "{} {} event may not carry `attributes`; send them with update (or as \
                     `traits` of identify, signin or userinfo)",
                    kind.article(),
                    kind.as_str()
                ),
            ))
        }
        _ => {}
    }
    let Some(object) = optional_object(company, "company")? else {
        return Ok((attributes, None));
    };
    if !kind.sets_company() {
        return Err(invalid(
            "company",
            format!(
                "{} {} event may not carry `company`; send it with identify, signin, userinfo \
                 or update",
                kind.article(),
                kind.as_str()
            ),
        ));
    }
    company_of(object)
        .map(|company| (attributes, Some(company)))
        .map_err(|(field, message)| invalid(field, message))
}

/// A `company` object (already within its size) as its id, name and other attributes;
/// refused naming `company.id` or `company.name`. The one rule for events and for
/// `PUT /v1/visitors/{id}`, which words its refusal as a bad request.
pub fn company_of(mut object: Map<String, Value>) -> Result<CompanyInfo, (&'static str, String)> {
    let id = match object.remove("id") {
        Some(Value::String(id)) if text_fits(&id, MAX_COMPANY_ID_CHARS) => {
            CompanyId::from(id.as_str())
        }
        _ => {
            return Err((
                "company.id",
                format!(
                    "`company.id` is required, a string of 1 to {MAX_COMPANY_ID_CHARS} characters"
                ),
            ))
        }
    };
    let name = match object.remove("name") {
        None => None,
        Some(Value::String(name)) if text_fits(&name, MAX_TEXT_CHARS) => Some(name),
        Some(_) => {
            return Err((
                "company.name",
                format!("`company.name` must be a string of 1 to {MAX_TEXT_CHARS} characters"),
            ))
        }
    };
    Ok(CompanyInfo {
        id,
        name,
        attributes: object,
    })
}

/// An event's refusals are `invalid_event`, naming the field.
const INVALID: Refuse = |field, message| HubError::invalid_field(field, message);

fn invalid(field: &str, message: String) -> HubError {
    INVALID(field, message)
}

/// The field's value; absent and `null` are refused alike.
fn required<'a>(slot: Slot<'a>, field: &str) -> Result<Slot<'a>, HubError> {
    match slot.is_absent_or_null() {
        true => Err(invalid(field, format!("`{field}` is required"))),
        false => Ok(slot),
    }
}

fn required_str<'a>(slot: Slot<'a>, field: &str) -> Result<Cow<'a, str>, HubError> {
    match required(slot, field)? {
        Slot::Str(text) => Ok(text),
        _ => Err(invalid(field, format!("`{field}` must be a string"))),
    }
}

/// A non-empty string of at most `max` characters, or None.
fn optional_text(slot: Slot<'_>, field: &str, max: usize) -> Result<Option<String>, HubError> {
    text(field, slot.optional_str(field, INVALID)?.as_deref(), max)
}

fn required_id<T>(
    slot: Slot<'_>,
    field: &str,
    parse: impl Fn(&str) -> Result<T, BadId>,
) -> Result<T, HubError> {
    id(field, &required_str(slot, field)?, parse)
}

/// A page event's `client`, as the hub's edge writes it (`{"browser": {"name",
/// "version"?}?, "os": {..}?, "country"?, "city"?}`), or None. Read here so the log, a
/// replay and a cluster node read it back through the one validation; the edge refuses
/// it from clients (`edge::client_info`).
pub(crate) fn client(slot: Slot<'_>) -> Result<Option<ClientContext>, HubError> {
    let Some(object) = slot.optional_object("client", INVALID)? else {
        return Ok(None);
    };
    let text = |field: &str, value: &Value| match value.as_str() {
        Some(t) if text_fits(t, MAX_CLIENT_TEXT_CHARS) => Ok(t.to_owned()),
        _ => Err(invalid(
            field,
            format!("`{field}` must be a string of 1 to {MAX_CLIENT_TEXT_CHARS} characters"),
        )),
    };
    let software = |field: &str, value: &Value| {
        let Some(object) = value.as_object() else {
            return Err(invalid(field, format!("`{field}` must be an object")));
        };
        let mut name = None;
        let mut version = None;
        for (key, value) in object {
            match key.as_str() {
                "name" => name = Some(text(&format!("{field}.name"), value)?),
                "version" => version = Some(text(&format!("{field}.version"), value)?),
                other => return Err(invalid(field, format!("unknown field `{field}.{other}`"))),
            }
        }
        let name = name.ok_or_else(|| invalid(field, format!("`{field}` needs `name`")))?;
        Ok(Software { name, version })
    };
    let mut context = ClientContext::default();
    for (key, value) in &object {
        match key.as_str() {
            "browser" => context.browser = Some(software("client.browser", value)?),
            "os" => context.os = Some(software("client.os", value)?),
            "country" => context.country = Some(text("client.country", value)?),
            "city" => context.city = Some(text("client.city", value)?),
            other => return Err(invalid("client", format!("unknown field `client.{other}`"))),
        }
    }
    Ok(Some(context))
}

/// An object of at most [`MAX_OBJECT_BYTES`] as JSON, or None.
fn optional_object(slot: Slot<'_>, field: &str) -> Result<Option<Map<String, Value>>, HubError> {
    let object = slot.optional_object(field, INVALID)?;
    if let Some(object) = &object {
        object_fits(field, json_size(object))?;
    }
    Ok(object)
}

/// Whether a text field is non-empty and at most `max` characters.
/// Whether `text` may be a `userId` (what a browser token's `uid` claim is held to too).
pub fn is_user_id(text: &str) -> bool {
    text_fits(text, MAX_USER_ID_CHARS)
}

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
        return Err(invalid(
            field,
            format!("`{field}` is {size} bytes as JSON; the limit is {MAX_OBJECT_BYTES}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) const A: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
    pub(crate) const M: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
    pub(crate) const C: &str = "cccccccc-cccc-4ccc-8ccc-cccccccccccc";
    pub(crate) const S: &str = "dddddddd-dddd-4ddd-8ddd-dddddddddddd";

    pub(crate) fn lifecycle() -> Value {
        json!({
            "actionId": A, "actionState": "offered", "actionMediaType": "webchat",
            "actionMapId": M, "actionMapVersion": 3, "customerId": C, "sessionId": S
        })
    }

    pub(crate) fn with(mut base: Value, field: &str, value: Value) -> Value {
        base[field] = value;
        base
    }

    pub(crate) fn without(mut base: Value, field: &str) -> Value {
        base.as_object_mut().unwrap().remove(field);
        base
    }

    #[test]
    fn a_refusal_names_each_visitor_kind_with_its_article() {
        let named: Vec<String> = VisitorKind::ALL
            .iter()
            .map(|k| format!("{} {}", k.article(), k.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                "an identify",
                "a signin",
                "a signout",
                "a userinfo",
                "a page",
                "a track",
                "an update",
                "an exit"
            ]
        );
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
            // A visitor who comes only through a channel has no site user id.
            json!({"type": "identify", "customerId": C, "channels": {"telegram": "67854257"}}),
            with(
                with(base("signin"), "userId", json!("u1")),
                "channels",
                json!({"viber": "5dfjdg5lfg8dGjg0DF95+h=="}),
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
            (json!({"type": "identify", "customerId": C}), "userId"),
            (
                json!({"type": "identify", "customerId": C, "channels": {}}),
                "userId",
            ),
            // Only the events that link a visitor carry channels: never accepted and dropped.
            (
                with(
                    with(base("page"), "page", json!({"url": "https://x.example/"})),
                    "channels",
                    json!({"whatsapp": "1"}),
                ),
                "channels",
            ),
            (
                json!({"type": "track", "customerId": C, "name": "n", "channels": {"a": "1"}}),
                "channels",
            ),
            (
                with(base("signout"), "channels", json!({"a": "1"})),
                "channels",
            ),
        ];
        for (value, field) in refused {
            assert_eq!(refused_field(value.clone()), field, "{value}");
        }
    }

    #[test]
    fn every_field_is_named_as_serde_reads_it() {
        let mut names = EventInput::default();
        for (name, _) in names.slots().0 {
            let text = json!({ name: 1 }).to_string();
            let from_text: EventInput = serde_json::from_str(&text).unwrap();
            let from_tree = EventInput::from_tree(json!({ name: 1 }).as_object().unwrap().clone());
            for mut input in [from_text, from_tree] {
                let (slots, unknown) = input.slots();
                assert_eq!(left(&slots).collect::<Vec<_>>(), [name]);
                assert_eq!(unknown.first([]), None, "{name}");
            }
        }
    }

    #[test]
    fn a_refusal_names_the_same_field_whatever_order_the_fields_came_in() {
        // Two faults: the rules' order decides which is named, not the text's.
        let faults = [
            ("actionId", json!("nope")),
            ("actionMediaType", json!("video")),
        ];
        for text in [
            r#"{"actionId":"nope","actionMediaType":"video"}"#,
            r#"{"actionMediaType":"video","actionId":"nope"}"#,
        ] {
            let error = Event::from_text(text).unwrap_err();
            assert_eq!(
                error.details,
                Some(json!({"field": "actionMediaType"})),
                "{text}"
            );
        }
        let mut event = lifecycle();
        for (field, value) in faults {
            event[field] = value;
        }
        assert_eq!(refused_field(event), "actionMediaType");
        // Unknown fields come last, the first in sorted order.
        let unknown = with(with(lifecycle(), "zeta", json!(1)), "alpha", json!(1));
        assert_eq!(
            refused_field(with(unknown.clone(), "eventId", json!(""))),
            "eventId"
        );
        assert_eq!(refused_field(unknown), "alpha");
    }
}
