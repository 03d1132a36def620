//! WebSocket frames of PROTOCOL.md section 5: parsing what clients send, writing what the
//! hub sends.
//!
//! Only this module knows the JSON shape of frames (events know their own shape, in
//! [`crate::ingest::event`]). Parsing is strict: unknown ops and unknown fields are `bad_request`,
//! so a typo never passes silently. A frame is read into typed fields the way an event is
//! ([`crate::ingest::fields`]): a publish frame with its event, without a JSON tree, and its
//! event validated as it is read. No IO, no state.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::HubError;
use crate::ids::Seq;
use crate::ingest::event::Event;
use crate::ingest::fields::{fill, left, Named, Nested, Refuse, Slot, Unknown};
use crate::ingest::topic::{Filter, TopicSet};
use crate::ingest::validate::{not_an_object, present, EventInput, LifecycleFields};

/// A client-chosen subscription id: a string or a non-negative integer, echoed as given.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(untagged)]
pub enum SubId {
    Name(String),
    Number(u64),
}

const MAX_SUB_ID_CHARS: usize = 128;

impl SubId {
    fn parse(slot: Slot<'_>) -> Result<SubId, HubError> {
        match slot {
            Slot::Str(s) if !s.is_empty() && s.chars().count() <= MAX_SUB_ID_CHARS => {
                Ok(SubId::Name(s.into_owned()))
            }
            Slot::Number(n) if n.as_u64().is_some() => Ok(SubId::Number(n.as_u64().unwrap_or(0))),
            _ => Err(HubError::bad_request(format!(
                "`sub` must be a string of 1 to {MAX_SUB_ID_CHARS} characters or a non-negative integer"
            ))),
        }
    }
}

/// One frame from a client.
#[derive(Debug)]
pub struct ClientFrame {
    /// Echoed in the reply.
    pub id: Option<u64>,
    pub op: Op,
}

/// What a client asks for.
#[derive(Debug)]
pub enum Op {
    Connect(ConnectRequest),
    Subscribe(SubscribeRequest),
    Unsubscribe {
        sub: SubId,
    },
    /// The event already validated (its refusal is the publish's reply, not a bad frame).
    Publish {
        event: Result<Event, HubError>,
    },
    /// Replaces a token connection's token with a fresh one for the same customer.
    Refresh {
        token: String,
    },
    Ping,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Connect(_) => "connect",
            Op::Subscribe(_) => "subscribe",
            Op::Unsubscribe { .. } => "unsubscribe",
            Op::Publish { .. } => "publish",
            Op::Refresh { .. } => "refresh",
            Op::Ping => "ping",
        }
    }
}

/// The credentials and self-description a client connects with.
#[derive(Debug, Default)]
pub struct ConnectRequest {
    pub token: Option<String>,
    pub api_key: Option<String>,
    pub client: Option<Value>,
}

/// A subscription request, already parsed into topics and filter.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    pub sub: SubId,
    pub topics: TopicSet,
    pub filter: Filter,
    pub once: bool,
    /// Replay from after this seq, with `epoch`.
    pub since: Option<(Seq, String)>,
    pub snapshot: bool,
}

/// A frame that could not be understood, with the `id` to echo if it was readable.
#[derive(Debug)]
pub struct FrameError {
    pub id: Option<u64>,
    pub error: HubError,
}

/// Parses one text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    if let Some(frame) = parse_lifecycle_publish(text) {
        return Ok(frame);
    }
    let mut frame = match serde_json::from_str::<Nested<FrameInput>>(text) {
        Ok(Nested::Object(frame)) => frame,
        // Not an object, not JSON, an unknown field or a key given twice: the tree decides
        // (and keeps the last of a repeated key).
        _ => {
            let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
                id: None,
                error: HubError::bad_request(format!("frame is not valid JSON: {e}")),
            })?;
            let Value::Object(object) = value else {
                return Err(FrameError {
                    id: None,
                    error: HubError::bad_request("a frame must be a JSON object"),
                });
            };
            Box::new(FrameInput::from_tree(object))
        }
    };
    frame.decide()
}

/// A publish frame of a lifecycle event, the frame most clients send most often.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecyclePublish<'a> {
    op: &'a str,
    /// `id: null` is refused by the general path, so here it must not read as absent.
    #[serde(default, deserialize_with = "present")]
    id: Option<u64>,
    #[serde(borrow)]
    event: LifecycleFields<'a>,
}

/// The fast path of [`parse_client_frame`]: a valid publish of a lifecycle event, read
/// straight into typed fields borrowed from the text and validated by the event's rules.
/// None for anything else, including every frame that would be refused, so that the
/// general path alone decides and words refusals.
fn parse_lifecycle_publish(text: &str) -> Option<ClientFrame> {
    let frame: LifecyclePublish = serde_json::from_str(text).ok()?;
    if frame.op != "publish" {
        return None;
    }
    let event = frame.event.validate()?;
    Some(ClientFrame {
        id: frame.id,
        op: Op::Publish {
            event: Ok(Event::Lifecycle(event)),
        },
    })
}

/// Every field a client frame may have, whatever its op, as it arrived.
#[derive(Debug, Default, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    rename_all = "camelCase",
    bound(deserialize = "'de: 'a")
)]
struct FrameInput<'a> {
    id: Slot<'a>,
    op: Slot<'a>,
    // connect and refresh
    token: Slot<'a>,
    api_key: Slot<'a>,
    client: Slot<'a>,
    // subscribe and unsubscribe
    sub: Slot<'a>,
    topics: Slot<'a>,
    #[serde(rename = "where")]
    filter: Slot<'a>,
    once: Slot<'a>,
    snapshot: Slot<'a>,
    since: Slot<'a>,
    epoch: Slot<'a>,
    // publish
    event: Nested<EventInput<'a>>,
    /// The keys a tree's frame has beyond these (from text, such a frame is read as a tree).
    #[serde(skip)]
    unknown: Unknown,
}

/// A frame's refusals are `bad_request`; the message names the field.
const BAD_REQUEST: Refuse = |_, message| HubError::bad_request(message);

impl<'a> FrameInput<'a> {
    /// Each slot with the name of its field, and the unknown keys.
    fn slots(&mut self) -> ([Named<'_, 'a>; 12], &mut Unknown) {
        let slots = [
            ("id", &mut self.id),
            ("op", &mut self.op),
            ("token", &mut self.token),
            ("apiKey", &mut self.api_key),
            ("client", &mut self.client),
            ("sub", &mut self.sub),
            ("topics", &mut self.topics),
            ("where", &mut self.filter),
            ("once", &mut self.once),
            ("snapshot", &mut self.snapshot),
            ("since", &mut self.since),
            ("epoch", &mut self.epoch),
        ];
        (slots, &mut self.unknown)
    }

    /// The fields of a JSON tree's frame, as they are in the tree.
    fn from_tree(mut object: Map<String, Value>) -> FrameInput<'a> {
        let mut frame = FrameInput {
            event: match object.remove("event") {
                None => Nested::Absent,
                Some(Value::Object(event)) => {
                    Nested::Object(Box::new(EventInput::from_tree(event)))
                }
                Some(_) => Nested::Other,
            },
            ..FrameInput::default()
        };
        let (mut slots, unknown) = frame.slots();
        fill(object, &mut slots, unknown);
        frame
    }

    /// The first field, in sorted order, that the op did not take.
    fn unknown_field(&mut self) -> Option<&str> {
        let event = (!matches!(self.event, Nested::Absent)).then_some("event");
        let (slots, unknown) = self.slots();
        unknown.first(left(&slots).chain(event))
    }

    fn decide(&mut self) -> Result<ClientFrame, FrameError> {
        let id = match self.id.take() {
            Slot::Absent => None,
            id => Some(id.as_u64().ok_or_else(|| FrameError {
                id: None,
                error: HubError::bad_request("`id` must be an unsigned integer"),
            })?),
        };
        let fail = |error: HubError| FrameError { id, error };
        let op_name = match self.op.take() {
            Slot::Str(op) => op,
            Slot::Absent => return Err(fail(HubError::bad_request("a frame needs `op`"))),
            _ => return Err(fail(HubError::bad_request("`op` must be a string"))),
        };
        let op = self.op(&op_name).map_err(fail)?;
        if let Some(field) = self.unknown_field() {
            return Err(fail(HubError::bad_request(format!(
                "unknown field `{field}` for op {op_name:?}"
            ))));
        }
        Ok(ClientFrame { id, op })
    }

    /// Reads the op's fields, taking each.
    fn op(&mut self, op: &str) -> Result<Op, HubError> {
        match op {
            "connect" => Ok(Op::Connect(ConnectRequest {
                token: optional_string(self.token.take(), "token")?,
                api_key: optional_string(self.api_key.take(), "apiKey")?,
                client: self.client.take().into_value(),
            })),
            "subscribe" => self.subscribe().map(Op::Subscribe),
            "unsubscribe" => Ok(Op::Unsubscribe {
                sub: needed(self.sub.take(), "unsubscribe needs `sub`").and_then(SubId::parse)?,
            }),
            "publish" => {
                let event = match &mut self.event {
                    Nested::Absent => return Err(HubError::bad_request("publish needs `event`")),
                    Nested::Object(event) => event.decide(),
                    Nested::Other => Err(not_an_object()),
                };
                self.event = Nested::Absent;
                Ok(Op::Publish { event })
            }
            "refresh" => {
                let token = optional_string(self.token.take(), "token")?
                    .ok_or_else(|| HubError::bad_request("refresh needs `token`"))?;
                Ok(Op::Refresh { token })
            }
            "ping" => Ok(Op::Ping),
            other => Err(HubError::bad_request(format!(
                "unknown op {other:?}; ops are connect, subscribe, unsubscribe, publish, refresh, ping"
            ))),
        }
    }

    fn subscribe(&mut self) -> Result<SubscribeRequest, HubError> {
        let sub = needed(self.sub.take(), "subscribe needs `sub`").and_then(SubId::parse)?;
        let topics = match self.topics.take() {
            Slot::Array(list) => {
                let names: Option<Vec<&str>> = list.iter().map(Value::as_str).collect();
                let names = names
                    .ok_or_else(|| HubError::bad_request("`topics` must be a list of strings"))?;
                TopicSet::parse_patterns(names).map_err(HubError::bad_request)?
            }
            Slot::Absent => return Err(HubError::bad_request("subscribe needs `topics`")),
            _ => return Err(HubError::bad_request("`topics` must be a list of patterns")),
        };
        let filter = match self.filter.take() {
            Slot::Absent | Slot::Null => Filter::default(),
            filter => {
                let filter = filter.into_value().unwrap_or_default();
                Filter::parse(&filter).map_err(HubError::bad_request)?
            }
        };
        let once = self.once.take().optional_bool("once", BAD_REQUEST)?;
        let snapshot = self
            .snapshot
            .take()
            .optional_bool("snapshot", BAD_REQUEST)?;
        let since = match self.since.take() {
            Slot::Absent | Slot::Null => None,
            since => Some(Seq(since.as_u64().ok_or_else(|| {
                HubError::bad_request("`since` must be a non-negative integer seq")
            })?)),
        };
        let epoch = optional_string(self.epoch.take(), "epoch")?;
        let since =
            match (since, epoch) {
                (Some(seq), Some(epoch)) => Some((seq, epoch)),
                (Some(_), None) => return Err(HubError::bad_request(
                    "`since` needs `epoch`, from the `connected` frame of the history it counts in",
                )),
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
}

/// The field's value, present (`null` included), or the refusal `missing`.
fn needed<'a>(slot: Slot<'a>, missing: &str) -> Result<Slot<'a>, HubError> {
    match slot.is_present() {
        true => Ok(slot),
        false => Err(HubError::bad_request(missing)),
    }
}

fn optional_string(slot: Slot<'_>, name: &str) -> Result<Option<String>, HubError> {
    Ok(slot
        .optional_str(name, BAD_REQUEST)?
        .map(|s| s.into_owned()))
}

/// Writes a reply frame: `type`, the echoed `id`, then the given fields.
fn reply(kind: &str, id: Option<u64>, fields: Value) -> String {
    let mut object = Map::new();
    object.insert("type".into(), kind.into());
    if let Some(id) = id {
        object.insert("id".into(), id.into());
    }
    if let Value::Object(rest) = fields {
        object.extend(rest);
    }
    Value::Object(object).to_string()
}

/// The answer to `connect`; `node` names the cluster node that answers, in cluster mode.
pub fn connected(
    id: Option<u64>,
    conn_id: &str,
    epoch: &str,
    seq: Seq,
    scope: Value,
    node: Option<&str>,
) -> String {
    let mut fields = json!({ "connId": conn_id, "epoch": epoch, "seq": seq, "scope": scope });
    if let Some(node) = node {
        fields["node"] = node.into();
    }
    reply("connected", id, fields)
}

pub fn subscribed(id: Option<u64>, sub: &SubId, seq: Seq, recovered: Option<bool>) -> String {
    let mut fields = json!({ "sub": sub, "seq": seq });
    if let Some(recovered) = recovered {
        fields["recovered"] = recovered.into();
    }
    reply("subscribed", id, fields)
}

pub fn unsubscribed(id: Option<u64>, sub: &SubId) -> String {
    reply("unsubscribed", id, json!({ "sub": sub }))
}

/// The answer to `publish`. Written directly rather than through a JSON tree: a busy
/// publisher gets one per event (the same shape as [`reply`] gives, tested).
pub fn published(id: Option<u64>, seq: Seq, duplicate: bool) -> String {
    match id {
        Some(id) => format!(
            r#"{{"type":"published","id":{id},"seq":{},"duplicate":{duplicate}}}"#,
            seq.0
        ),
        None => format!(
            r#"{{"type":"published","seq":{},"duplicate":{duplicate}}}"#,
            seq.0
        ),
    }
}

/// The answer to `refresh`: the new token's expiry (RFC 3339).
pub fn refreshed(id: Option<u64>, expires_at: &str) -> String {
    reply("refreshed", id, json!({ "expiresAt": expires_at }))
}

pub fn pong(id: Option<u64>) -> String {
    reply("pong", id, json!({}))
}

pub fn error(id: Option<u64>, error: &HubError) -> String {
    reply("error", id, error.to_json())
}

/// One `snapshot` frame of a subscription; `more` when another frame of the same snapshot
/// follows (a big snapshot is sent in chunks that share one seq).
pub fn snapshot(
    sub: &SubId,
    seq: Seq,
    actions: Vec<Value>,
    customers: Vec<Value>,
    more: bool,
) -> String {
    let mut body = json!({ "sub": sub, "seq": seq, "actions": actions, "customers": customers });
    if more {
        body["more"] = true.into();
    }
    reply("snapshot", None, body)
}

/// Close codes of PROTOCOL.md section 5.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    /// RFC 6455's "internal error": the hub failed to do what it promised (a snapshot's
    /// build failed); the client may reconnect and subscribe again.
    pub const INTERNAL: u16 = 1011;
    pub const PROTOCOL_VIOLATION: u16 = 4000;
    pub const UNAUTHORIZED: u16 = 4001;
    pub const FORBIDDEN: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const TOO_LARGE: u16 = 4009;
    pub const RATE_LIMITED: u16 = 4029;
}

#[cfg(test)]
mod tests {

    #[test]
    fn published_is_the_reply_shape_written_by_hand() {
        for (id, seq, duplicate) in [(Some(7), 12, false), (None, 1, true), (Some(0), 0, true)] {
            let fast: Value = serde_json::from_str(&published(id, Seq(seq), duplicate)).unwrap();
            let general: Value = serde_json::from_str(&reply(
                "published",
                id,
                json!({ "seq": seq, "duplicate": duplicate }),
            ))
            .unwrap();
            assert_eq!(fast, general);
        }
    }

    use super::*;
    use crate::error::ErrorCode;

    fn refused(text: &str) -> FrameError {
        parse_client_frame(text)
            .err()
            .unwrap_or_else(|| panic!("{text} accepted"))
    }

    #[test]
    fn parses_every_op() {
        let cases = [
            (r#"{"op":"connect","id":1}"#, "connect"),
            (
                r#"{"op":"connect","apiKey":"k","client":{"name":"x"}}"#,
                "connect",
            ),
            (
                r#"{"op":"subscribe","sub":"a","topics":["webchat:all"]}"#,
                "subscribe",
            ),
            (
                r#"{"op":"subscribe","sub":7,"topics":["all"],"once":true,"snapshot":true}"#,
                "subscribe",
            ),
            (
                r#"{"op":"subscribe","sub":"a","topics":["all"],"since":5,"epoch":"e"}"#,
                "subscribe",
            ),
            (r#"{"op":"unsubscribe","sub":"a"}"#, "unsubscribe"),
            (r#"{"op":"publish","event":{}}"#, "publish"),
            (r#"{"op":"ping","id":9}"#, "ping"),
            (r#"{"op":"refresh","token":"t"}"#, "refresh"),
        ];
        for (text, op) in cases {
            assert_eq!(
                parse_client_frame(text)
                    .unwrap_or_else(|e| panic!("{text}: {e:?}"))
                    .op
                    .name(),
                op
            );
        }
    }

    #[test]
    fn refusals_keep_the_id_when_readable() {
        let cases = [
            ("not json", None),
            ("[1]", None),
            (r#"{"op":"ping","id":-1}"#, None),
            (r#"{"op":"ping","id":"1"}"#, None),
            (r#"{"id":3}"#, Some(3)),
            (r#"{"op":"dance","id":4}"#, Some(4)),
            (r#"{"op":"ping","id":5,"extra":1}"#, Some(5)),
            (
                r#"{"op":"subscribe","id":6,"sub":"a","topics":[]}"#,
                Some(6),
            ),
            (
                r#"{"op":"subscribe","id":7,"sub":"a","topics":["chat:all"]}"#,
                Some(7),
            ),
            (
                r#"{"op":"subscribe","id":8,"sub":"a","topics":["all"],"since":3}"#,
                Some(8),
            ),
            (
                r#"{"op":"subscribe","id":9,"sub":"a","topics":["all"],"where":{"x":[1]}}"#,
                Some(9),
            ),
            (
                r#"{"op":"subscribe","id":10,"sub":"","topics":["all"]}"#,
                Some(10),
            ),
            (
                r#"{"op":"subscribe","id":11,"sub":-2,"topics":["all"]}"#,
                Some(11),
            ),
            (r#"{"op":"unsubscribe","id":12}"#, Some(12)),
            (r#"{"op":"publish","id":13}"#, Some(13)),
            (r#"{"op":"connect","id":14,"token":5}"#, Some(14)),
            (r#"{"op":"refresh","id":15}"#, Some(15)),
        ];
        for (text, id) in cases {
            let err = refused(text);
            assert_eq!(err.id, id, "{text}");
            assert_eq!(err.error.code, ErrorCode::BadRequest, "{text}");
        }
    }

    /// A lifecycle publish frame as most clients send it, with `extra` fields in its event.
    fn lifecycle_publish(frame_fields: &str, extra: &str) -> String {
        let id = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
        format!(
            r#"{{"op":"publish"{frame_fields},"event":{{"actionId":"{id}","actionState":"errored","actionMediaType":"webchat","actionMapId":"{id}","actionMapVersion":2,"customerId":"{id}","sessionId":"{id}"{extra}}}}}"#
        )
    }

    fn published_event(text: &str) -> (Option<u64>, Result<Event, HubError>) {
        match parse_client_frame(text) {
            Ok(ClientFrame {
                id,
                op: Op::Publish { event },
            }) => (id, event),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_lifecycle_publish_is_validated_as_it_is_parsed() {
        let (id, event) = published_event(&lifecycle_publish(r#","id":4"#, r#","errorCode":7"#));
        assert_eq!(id, Some(4));
        match event {
            Ok(Event::Lifecycle(event)) => assert_eq!(event.error_code, Some(7)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_null_where_a_value_must_be_is_refused_however_the_frame_is_parsed() {
        let err = refused(&lifecycle_publish(r#","id":null"#, ""));
        assert_eq!((err.id, err.error.code), (None, ErrorCode::BadRequest));
        let (id, event) = published_event(&lifecycle_publish(r#","id":5"#, r#","errorCode":null"#));
        assert_eq!(id, Some(5));
        let error = event.expect_err("errorCode: null is not an error code");
        assert_eq!(error.code, ErrorCode::InvalidEvent);
        assert!(error.message.contains("errorCode"), "{}", error.message);
    }

    #[test]
    fn replies_echo_id_and_sub() {
        let frame: Value =
            serde_json::from_str(&subscribed(Some(3), &SubId::Number(7), Seq(9), Some(true)))
                .unwrap();
        assert_eq!(
            frame,
            json!({"type":"subscribed","id":3,"sub":7,"seq":9,"recovered":true})
        );
        let frame: Value = serde_json::from_str(&pong(None)).unwrap();
        assert_eq!(frame, json!({"type":"pong"}));
    }

    #[test]
    fn every_field_is_named_as_serde_reads_it() {
        let mut names = FrameInput::default();
        let names: Vec<_> = names.slots().0.map(|(name, _)| name).into();
        for name in names.into_iter().chain(["event"]) {
            let text = json!({ name: 1 }).to_string();
            let from_text: FrameInput = serde_json::from_str(&text).unwrap();
            let from_tree = FrameInput::from_tree(json!({ name: 1 }).as_object().unwrap().clone());
            for mut frame in [from_text, from_tree] {
                assert_eq!(frame.unknown.first([]), None, "{name}");
                let (slots, _) = frame.slots();
                let taken = match name {
                    "event" => !matches!(frame.event, Nested::Absent),
                    _ => left(&slots).eq([name]),
                };
                assert!(taken, "{name}");
            }
        }
        assert_eq!(FrameInput::default().unknown_field(), None);
    }

    #[test]
    fn a_key_given_twice_counts_once_the_last() {
        let (id, event) = published_event(&lifecycle_publish(r#","id":4,"id":5"#, ""));
        assert_eq!(id, Some(5));
        assert!(event.is_ok());
        let (_, event) = published_event(&lifecycle_publish("", r#","eventId":"a","eventId":"b""#));
        let Ok(Event::Lifecycle(event)) = event else {
            panic!("{event:?}")
        };
        assert_eq!(event.event_id.as_deref(), Some("b"));
    }
}
