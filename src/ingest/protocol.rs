//! WebSocket frames of PROTOCOL.md section 5: parsing what clients send, writing what the
//! hub sends.
//!
//! Only this module knows the JSON shape of frames (events know their own shape, in
//! [`crate::ingest::event`]). Parsing is strict: unknown ops and unknown fields are `bad_request`,
//! so a typo never passes silently. No IO, no state.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::HubError;
use crate::ids::Seq;
use crate::ingest::event::{present, Event, LifecycleFields};
use crate::ingest::topic::{Filter, TopicSet};

/// A client-chosen subscription id: a string or a non-negative integer, echoed as given.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(untagged)]
pub enum SubId {
    Name(String),
    Number(u64),
}

const MAX_SUB_ID_CHARS: usize = 128;

impl SubId {
    fn parse(value: &Value) -> Result<SubId, HubError> {
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
/// straight into typed fields. None for anything else, including every frame that would
/// be refused, so that the general path alone decides and words refusals.
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
            Ok(Op::Unsubscribe {
                sub: SubId::parse(&sub)?,
            })
        }
        "publish" => {
            let event = fields
                .remove("event")
                .ok_or_else(|| HubError::bad_request("publish needs `event`"))?;
            Ok(Op::Publish {
                event: Event::from_json(event),
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
    let sub = SubId::parse(&sub)?;
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

pub fn connected(id: Option<u64>, conn_id: &str, epoch: &str, seq: Seq, scope: Value) -> String {
    reply(
        "connected",
        id,
        json!({ "connId": conn_id, "epoch": epoch, "seq": seq, "scope": scope }),
    )
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
}
