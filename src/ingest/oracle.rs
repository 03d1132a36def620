//! The validators as they were before issue 12 moved them to one typed path: events and
//! frames read from a `serde_json::Value` tree, field by field. Kept only as the reference
//! the typed path is compared against (`the_typed_path_decides_as_the_tree_validators_did`),
//! so that refusals stay byte-identical: the same code, the same message, the same field,
//! whichever rule a broken event breaks first.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::error::HubError;
use crate::ids::{ActionId, ActionMapId, CustomerId, Seq, SessionId, UserId};
use crate::ingest::event::{
    Event, EventData, LifecycleEvent, VisitorEvent, VisitorKind, MAX_EVENT_ID_CHARS,
    MAX_OBJECT_BYTES, MAX_TEXT_CHARS, MAX_USER_ID_CHARS,
};
use crate::ingest::lifecycle::{ActionState, MediaType};
use crate::ingest::protocol::{
    self, ClientFrame, ConnectRequest, FrameError, Op, SubId, SubscribeRequest,
};
use crate::ingest::topic::{Filter, TopicSet};

const MAX_SUB_ID_CHARS: usize = 128;

fn event_from_json(value: Value) -> Result<Event, HubError> {
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
        (true, false) => Event::Lifecycle(lifecycle_from_fields(&mut fields)?),
        (false, true) => Event::Visitor(visitor_from_fields(&mut fields)?),
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

/// The general path of the old `Event::from_text`: the tree, then the validator.
fn event_from_text(text: &str) -> Result<Event, HubError> {
    let value = serde_json::from_str(text)
        .map_err(|e| HubError::invalid_field("event", format!("not JSON: {e}")))?;
    event_from_json(value)
}

fn lifecycle_from_fields(f: &mut Fields) -> Result<LifecycleEvent, HubError> {
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
                format!("actionMapVersion must be an integer from 1 to {}", u32::MAX),
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
    let error_code =
        match f.0.remove("errorCode") {
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

fn visitor_from_fields(f: &mut Fields) -> Result<VisitorEvent, HubError> {
    let type_text = f.required_str("type")?;
    let kind = VisitorKind::parse(&type_text).ok_or_else(|| {
        HubError::invalid_field(
            "type",
            format!(
                "unknown visitor event type {type_text:?}; known: identify, signin, signout, \
                 userinfo, page, track, update, exit"
            ),
        )
    })?;
    let customer_id = f.required_id("customerId", CustomerId::parse)?;
    let session_id = match f.0.contains_key("sessionId") || kind.needs_session() {
        true => Some(f.required_id("sessionId", SessionId::parse)?),
        false => None,
    };
    let user_id = f
        .optional_text("userId", MAX_USER_ID_CHARS)?
        .map(UserId::from);
    if kind.needs_user() && user_id.is_none() {
        return Err(HubError::invalid_field(
            "userId",
            format!("{} {} event needs `userId`", kind.article(), kind.as_str()),
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
    // Issue 15's page exits need the page they leave, as a page view does.
    if matches!(kind, VisitorKind::Page | VisitorKind::Exit) && !has_url {
        return Err(HubError::invalid_field(
            "page.url",
            format!(
                "{} {} event needs `page.url`",
                kind.article(),
                kind.as_str()
            ),
        ));
    }
    let channels = f.optional_object("channels")?;
    if let Some((channel, _)) = channels.iter().flatten().find(|(_, v)| !v.is_string()) {
        return Err(HubError::invalid_field(
            "channels",
            format!("channels.{channel} must be a string (the user's id on that channel)"),
        ));
    }
    // Issue 14's channel identities changed two rules on purpose; written out again here.
    let linking = matches!(
        kind,
        VisitorKind::Identify | VisitorKind::Signin | VisitorKind::Userinfo
    );
    if channels.is_some() && !linking {
        return Err(HubError::invalid_field(
            "channels",
            format!(
                "{} {} event may not carry `channels`; send them with identify, signin or \
                 userinfo",
                kind.article(),
                kind.as_str()
            ),
        ));
    }
    if kind == VisitorKind::Identify
        && user_id.is_none()
        && channels.as_ref().is_none_or(|c| c.is_empty())
    {
        return Err(HubError::invalid_field(
            "userId",
            "an identify event needs `userId` or a channel id in `channels`",
        ));
    }
    // Issue 15 added `client`, the edge's stamp on page events, after these rules; its
    // shape is read by the typed path's own rule.
    let client = crate::ingest::validate::client(
        f.0.remove("client")
            .map_or(crate::ingest::fields::Slot::Absent, Into::into),
    )?;
    if client.is_some() && kind != VisitorKind::Page {
        return Err(HubError::invalid_field(
            "client",
            "only a page event carries `client`",
        ));
    }
    // Issue 15's `update` event and companies came after it too, read by the typed
    // path's own rule.
    let slot = |value: Option<Value>| value.map_or(crate::ingest::fields::Slot::Absent, Into::into);
    let (attributes, company) = crate::ingest::validate::attributes_and_company(
        kind,
        slot(f.0.remove("attributes")),
        slot(f.0.remove("company")),
    )?;
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
        attributes,
        company,
        client: client.map(Box::new),
    })
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

fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
        id: None,
        error: HubError::bad_request(format!("frame is not valid JSON: {e}")),
    })?;
    let Value::Object(mut fields) = value else {
        return Err(FrameError {
            id: None,
            error: HubError::bad_request("a frame must be a JSON object"),
        });
    };
    let id = match fields.remove("id") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| FrameError {
            id: None,
            error: HubError::bad_request("`id` must be an unsigned integer"),
        })?),
    };
    let fail = |error: HubError| FrameError { id, error };
    let op_name = match fields.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => return Err(fail(HubError::bad_request("`op` must be a string"))),
        None => return Err(fail(HubError::bad_request("a frame needs `op`"))),
    };
    let op = parse_op(&op_name, &mut fields).map_err(fail)?;
    if let Some(field) = fields.keys().next() {
        return Err(fail(HubError::bad_request(format!(
            "unknown field `{field}` for op {op_name:?}"
        ))));
    }
    Ok(ClientFrame { id, op })
}

fn sub_id(value: &Value) -> Result<SubId, HubError> {
    match value {
        Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_SUB_ID_CHARS => {
            Ok(SubId::Name(s.clone()))
        }
        Value::Number(n) if n.as_u64().is_some() => Ok(SubId::Number(n.as_u64().unwrap_or(0))),
        _ => Err(HubError::bad_request(format!(
            "`sub` must be a string of 1 to {MAX_SUB_ID_CHARS} characters or a non-negative integer"
        ))),
    }
}

fn parse_op(op: &str, fields: &mut Map<String, Value>) -> Result<Op, HubError> {
    match op {
        "connect" => Ok(Op::Connect(ConnectRequest {
            token: optional_string(fields, "token")?,
            api_key: optional_string(fields, "apiKey")?,
            client: fields.remove("client"),
        })),
        "subscribe" => parse_subscribe(fields).map(Op::Subscribe),
        "unsubscribe" => {
            let sub = fields
                .remove("sub")
                .ok_or_else(|| HubError::bad_request("unsubscribe needs `sub`"))?;
            Ok(Op::Unsubscribe { sub: sub_id(&sub)? })
        }
        "publish" => {
            let event = fields
                .remove("event")
                .ok_or_else(|| HubError::bad_request("publish needs `event`"))?;
            Ok(Op::Publish {
                event: event_from_json(event),
            })
        }
        "refresh" => {
            let token = optional_string(fields, "token")?
                .ok_or_else(|| HubError::bad_request("refresh needs `token`"))?;
            Ok(Op::Refresh { token })
        }
        "ping" => Ok(Op::Ping),
        other => Err(HubError::bad_request(format!(
            "unknown op {other:?}; ops are connect, subscribe, unsubscribe, publish, refresh, ping"
        ))),
    }
}

fn optional_string(
    fields: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<String>, HubError> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(HubError::bad_request(format!("`{name}` must be a string"))),
    }
}

fn optional_bool(fields: &mut Map<String, Value>, name: &str) -> Result<bool, HubError> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(HubError::bad_request(format!(
            "`{name}` must be true or false"
        ))),
    }
}

fn parse_subscribe(fields: &mut Map<String, Value>) -> Result<SubscribeRequest, HubError> {
    let sub = fields
        .remove("sub")
        .ok_or_else(|| HubError::bad_request("subscribe needs `sub`"))?;
    let sub = sub_id(&sub)?;
    let topics = match fields.remove("topics") {
        Some(Value::Array(list)) => {
            let names: Option<Vec<&str>> = list.iter().map(Value::as_str).collect();
            let names =
                names.ok_or_else(|| HubError::bad_request("`topics` must be a list of strings"))?;
            TopicSet::parse_patterns(names).map_err(HubError::bad_request)?
        }
        Some(_) => return Err(HubError::bad_request("`topics` must be a list of patterns")),
        None => return Err(HubError::bad_request("subscribe needs `topics`")),
    };
    let filter = match fields.remove("where") {
        None | Some(Value::Null) => Filter::default(),
        Some(value) => Filter::parse(&value).map_err(HubError::bad_request)?,
    };
    let once = optional_bool(fields, "once")?;
    let snapshot = optional_bool(fields, "snapshot")?;
    let since = match fields.remove("since") {
        None | Some(Value::Null) => None,
        Some(v) => Some(Seq(v.as_u64().ok_or_else(|| {
            HubError::bad_request("`since` must be a non-negative integer seq")
        })?)),
    };
    let epoch = optional_string(fields, "epoch")?;
    let since = match (since, epoch) {
        (Some(seq), Some(epoch)) => Some((seq, epoch)),
        (Some(_), None) => {
            return Err(HubError::bad_request(
                "`since` needs `epoch`, from the `connected` frame of the history it counts in",
            ))
        }
        (None, Some(_)) => return Err(HubError::bad_request("`epoch` goes with `since`")),
        (None, None) => None,
    };
    Ok(SubscribeRequest {
        sub,
        topics,
        filter,
        once,
        since,
        snapshot,
    })
}

/// Every field of an event or a frame, and a few no message has.
const KEYS: &[&str] = &[
    "actionId",
    "actionState",
    "actionMediaType",
    "actionMapId",
    "actionMapVersion",
    "customerId",
    "customerIdType",
    "sessionId",
    "errorCode",
    "errorMessage",
    "eventId",
    "data",
    "type",
    "userId",
    "traits",
    "channels",
    "page",
    "name",
    "properties",
    "op",
    "id",
    "event",
    "sub",
    "topics",
    "where",
    "once",
    "snapshot",
    "since",
    "epoch",
    "token",
    "apiKey",
    "client",
    "actionStat",
    "Zed",
    "zz",
    // A JSON tree reads an object whose first key this is as a raw value.
    "$serde_json::private::RawValue",
];

const V4: &str = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
const V1: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";

/// Values each field's rule takes or refuses, of every JSON type.
fn value() -> impl Strategy<Value = Value> {
    let texts = [
        "",
        "webchat",
        "contentoffer",
        "offered",
        "errored",
        "started",
        "qualified",
        "identify",
        "signin",
        "signout",
        "userinfo",
        "page",
        "track",
        "wave",
        "cookie",
        "device",
        "connect",
        "subscribe",
        "unsubscribe",
        "publish",
        "refresh",
        "ping",
        "all",
        "webchat:all",
        "nope",
        "line\nbreak",
        "quote\"d",
        "é",
        V4,
        V1,
    ];
    let long = [
        "x".repeat(65),
        "x".repeat(129),
        "x".repeat(257),
        "x".repeat(1025),
    ];
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop::sample::select(vec![
            json!(0),
            json!(1),
            json!(-1),
            json!(2.5),
            json!(3.0),
            json!(4_294_967_295u64),
            json!(4_294_967_296u64),
            json!(u64::MAX),
            json!(i64::MIN),
        ]),
        prop::sample::select(texts.to_vec()).prop_map(Value::from),
        prop::sample::select(long.to_vec()).prop_map(Value::from),
        any::<u128>().prop_map(|n| {
            Value::from(
                uuid::Builder::from_random_bytes(n.to_le_bytes())
                    .into_uuid()
                    .to_string(),
            )
        }),
        prop::sample::select(vec![
            json!({}),
            json!({"a": 1, "b": [null]}),
            json!({"url": "https://x.example/"}),
            json!({"url": ""}),
            json!({"url": 5}),
            json!({"whatsapp": "1"}),
            json!({"whatsapp": 1}),
            json!({"pad": "x".repeat(4100)}),
            json!({"customerId": [V4]}),
            json!({"customerId": []}),
            json!({"bogus": [V4]}),
            json!([]),
            json!(["all"]),
            json!(["webchat:all", 1]),
            json!(["nope"]),
            json!([V4]),
        ]),
    ]
}

/// A valid event of either kind, any state or visitor type.
fn event() -> impl Strategy<Value = Value> {
    let media_state = prop::sample::select(vec![
        ("webchat", "offered"),
        ("webchat", "errored"),
        ("webchat", "started"),
        ("contentoffer", "qualified"),
        ("contentoffer", "errored"),
    ]);
    let lifecycle = media_state.prop_map(|(media, state)| {
        json!({
            "actionId": V4, "actionState": state, "actionMediaType": media, "actionMapId": V4,
            "actionMapVersion": 2, "customerId": V4, "sessionId": V4, "data": {"k": 1}
        })
    });
    let visitor = prop::sample::select(vec![
        json!({"type": "identify", "customerId": V4, "userId": "u", "traits": {"n": 1}}),
        json!({"type": "signin", "customerId": V4, "sessionId": V4, "userId": "u"}),
        json!({"type": "signout", "customerId": V4, "sessionId": V4}),
        json!({"type": "userinfo", "customerId": V4, "sessionId": V4, "userId": "u",
               "channels": {"whatsapp": "1"}}),
        json!({"type": "identify", "customerId": V4, "channels": {"telegram": "67854257"}}),
        json!({"type": "page", "customerId": V4, "sessionId": V4,
               "page": {"url": "https://x.example/"}}),
        json!({"type": "track", "customerId": V4, "name": "n", "properties": {}, "eventId": "e"}),
    ]);
    prop_oneof![2 => lifecycle, 1 => visitor]
}

/// A valid frame of any op, a publish frame most often.
fn frame() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => event().prop_map(|event| json!({"op": "publish", "id": 7, "event": event})),
        1 => prop::sample::select(vec![
            json!({"op": "connect", "id": 1, "apiKey": "k", "client": {"name": "x"}}),
            json!({"op": "subscribe", "id": 2, "sub": "s", "topics": ["all"],
                   "where": {"customerId": [V4]}, "once": true}),
            json!({"op": "subscribe", "sub": 3, "topics": ["webchat:all"], "since": 4,
                   "epoch": "e", "snapshot": false}),
            json!({"op": "unsubscribe", "id": 3, "sub": "s"}),
            json!({"op": "refresh", "token": "t"}),
            json!({"op": "ping", "id": 4}),
        ]),
    ]
}

/// One change: in the frame (`true`) or its event, a field removed (`None`) or set.
fn mutation() -> impl Strategy<Value = (bool, &'static str, Option<Value>)> {
    (
        any::<bool>(),
        prop::sample::select(KEYS),
        prop::option::weighted(0.8, value()),
    )
}

/// Applies the changes, and writes the result with a key given twice when `repeated`.
fn mutated(
    mut document: Value,
    mutations: Vec<(bool, &'static str, Option<Value>)>,
    repeated: Option<(bool, &'static str, Value)>,
) -> String {
    let has_event = document.get("event").is_some();
    for (in_frame, key, value) in mutations {
        let target = match in_frame || !has_event {
            true => Some(&mut document),
            false => document.get_mut("event"),
        };
        let Some(object) = target.and_then(Value::as_object_mut) else {
            continue;
        };
        match value {
            None => object.remove(key),
            Some(value) => object.insert(key.into(), value),
        };
    }
    let text = document.to_string();
    match repeated {
        None => text,
        // A key given twice: as a tree reads it, the last one counts.
        Some((in_frame, key, value)) => {
            let (at, with) = match in_frame || !has_event {
                true => ("{", format!("{{{}:{value},", json!(key))),
                false => (
                    "\"event\":{",
                    format!("\"event\":{{{}:{value},", json!(key)),
                ),
            };
            text.replacen(at, &with, 1)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_typed_path_decides_as_the_tree_validators_did(
        document in prop_oneof![event(), frame()],
        mutations in prop::collection::vec(mutation(), 0..4),
        repeated in prop::option::weighted(0.15, (any::<bool>(), prop::sample::select(KEYS), value())),
    ) {
        let text = mutated(document, mutations, repeated);
        // As an event (of an HTTP batch, or a tree a caller holds) ...
        prop_assert_eq!(Event::from_text(&text), event_from_text(&text), "{}", text);
        if let Ok(tree) = serde_json::from_str::<Value>(&text) {
            prop_assert_eq!(Event::from_json(tree.clone()), event_from_json(tree), "{}", text);
        }
        // ... and as a frame, its event included.
        prop_assert_eq!(
            format!("{:?}", protocol::parse_client_frame(&text)),
            format!("{:?}", parse_client_frame(&text)),
            "{}", text
        );
    }

    #[test]
    fn any_text_is_refused_as_the_tree_validators_did(text in any::<String>()) {
        prop_assert_eq!(Event::from_text(&text), event_from_text(&text));
        prop_assert_eq!(
            format!("{:?}", protocol::parse_client_frame(&text)),
            format!("{:?}", parse_client_frame(&text))
        );
    }
}

#[test]
fn the_oracle_is_the_tree_validator_it_was() {
    // The reference itself refuses what the protocol refuses, so that agreeing with it
    // means something.
    let refused = event_from_json(json!({"actionId": V4})).unwrap_err();
    assert_eq!(refused.details, Some(json!({"field": "actionMediaType"})));
    let frame = parse_client_frame(r#"{"op":"ping","id":1,"sub":"s"}"#).unwrap_err();
    assert_eq!(frame.error.message, "unknown field `sub` for op \"ping\"");
    assert!(matches!(
        parse_client_frame(
            r#"{"op":"subscribe","sub":"s","topics":["all"],"since":1,"epoch":"e"}"#
        ),
        Ok(ClientFrame {
            op: Op::Subscribe(SubscribeRequest {
                since: Some((Seq(1), _)),
                ..
            }),
            ..
        })
    ));
}
