//! The wire format of events: the `event` frame every receiver gets, written once
//! ([`Published::to_frame`], as a complete WebSocket frame, [`WireFrame`]), and read back
//! from the log ([`Published::from_frame`]). The two halves of one format, side by side:
//! what `Serialize for Published` writes, `from_frame` reads; and [`anonymized`], the frame
//! as anonymizing keeps it, which `from_frame` reads back too.
//!
//! Pure: the frame's bytes are made here, and written to sockets by the edge's outboxes.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::Error as _;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

use crate::clock::{format_millis, Millis};
use crate::ids::{CustomerId, SegmentId, Seq, SessionId, UserId, VisitorId};
use crate::ingest::event::{
    Body, ClientContext, CompanyInfo, EndReason, Event, LifecycleEvent, Published, Software,
    VisitorEvent, VisitorKind,
};

/// A complete server-to-client WebSocket text frame: header and JSON payload, encoded
/// once and written as is to every connection that receives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireFrame {
    /// The frame on the wire; empty for an erased record.
    bytes: Bytes,
}

impl WireFrame {
    /// Encodes `json` as an unmasked, final text frame.
    pub fn text(json: &str) -> WireFrame {
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        let length = json.len() as u64;
        let mut bytes = Vec::with_capacity(header.len(length) + json.len());
        header
            .format(length, &mut bytes)
            .expect("writing to a Vec cannot fail");
        bytes.extend_from_slice(json.as_bytes());
        WireFrame {
            bytes: bytes.into(),
        }
    }

    /// The frame as written to the socket.
    pub fn wire(&self) -> &Bytes {
        &self.bytes
    }

    /// The JSON payload.
    pub fn as_str(&self) -> &str {
        let payload = &self.bytes[header_len(&self.bytes)..];
        std::str::from_utf8(payload).expect("a text frame holds the UTF-8 it was made from")
    }

    /// The JSON payload's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len() - header_len(&self.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The length of an unmasked frame header, read off its second byte (RFC 6455 5.2).
fn header_len(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & 0x7f) {
        None => 0,
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
    }
}

impl Published {
    /// The delivered `event` frame, serialized once and shared by every receiver.
    pub fn to_frame(&self) -> String {
        self.write_frame(false)
    }

    /// The frame of the event as anonymizing keeps it ([`Body::anonymized`]), marked
    /// `"anonymized": true` so that a reader (and the log's replay) can tell.
    pub fn to_anonymized_frame(&self) -> String {
        Published {
            body: self.body.anonymized(),
            ..self.clone()
        }
        .write_frame(true)
    }

    fn write_frame(&self, anonymized: bool) -> String {
        #[derive(Serialize)]
        struct Frame<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            seq: Seq,
            topic: &'static str,
            event: EventOf<'a>,
        }
        serde_json::to_string(&Frame {
            kind: "event",
            seq: self.seq,
            topic: self.body.topic().as_str(),
            event: EventOf {
                event: self,
                anonymized,
            },
        })
        .expect("events serialize to JSON")
    }
}

/// The event inside a frame: its fields, and the anonymized mark when it has one.
struct EventOf<'a> {
    event: &'a Published,
    anonymized: bool,
}

impl Serialize for EventOf<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        serialize_published(&mut map, self.event)?;
        if self.anonymized {
            map.serialize_entry("anonymized", &true)?;
        }
        map.end()
    }
}

/// An `event` frame as anonymizing keeps it (see [`Published::to_anonymized_frame`]), or
/// None when it is not a readable event frame. The one rule every copy of an event is
/// anonymized by: the live history, a restart's replay of it, and the log's compaction.
pub fn anonymized(frame: &str) -> Option<String> {
    let published = Published::from_frame(frame).ok()?;
    Some(published.to_anonymized_frame())
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

/// Writes the fields of a visitor event in the spec's order.
fn serialize_visitor<M: SerializeMap>(map: &mut M, e: &VisitorEvent) -> Result<(), M::Error> {
    map.serialize_entry("type", e.kind.as_str())?;
    map.serialize_entry("customerId", &e.customer_id)?;
    entry_opt(map, "sessionId", &e.session_id)?;
    entry_opt(map, "userId", &e.user_id)?;
    entry_opt(map, "traits", &e.traits)?;
    entry_opt(map, "channels", &e.channels)?;
    entry_opt(map, "page", &e.page)?;
    if let Some(client) = &e.client {
        map.serialize_entry("client", &ClientJson(client))?;
    }
    entry_opt(map, "name", &e.name)?;
    entry_opt(map, "properties", &e.properties)?;
    entry_opt(map, "attributes", &e.attributes)?;
    if let Some(company) = &e.company {
        map.serialize_entry("company", &CompanyJson(company))?;
    }
    entry_opt(map, "eventId", &e.event_id)
}

/// An event's `company`: `{"id", "name"?, ...attributes}`, what validation reads back.
struct CompanyJson<'a>(&'a CompanyInfo);

impl Serialize for CompanyJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &c.id)?;
        entry_opt(&mut map, "name", &c.name)?;
        for (key, value) in &c.attributes {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// A page event's `client`: `{"browser": {"name", "version"?}?, "os": {..}?, "country"?,
/// "city"?}`, what validation reads back.
struct ClientJson<'a>(&'a ClientContext);

impl Serialize for ClientJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut map = serializer.serialize_map(None)?;
        if let Some(browser) = &c.browser {
            map.serialize_entry("browser", &SoftwareJson(browser))?;
        }
        if let Some(os) = &c.os {
            map.serialize_entry("os", &SoftwareJson(os))?;
        }
        entry_opt(&mut map, "country", &c.country)?;
        entry_opt(&mut map, "city", &c.city)?;
        map.end()
    }
}

struct SoftwareJson<'a>(&'a Software);

impl Serialize for SoftwareJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.0.name)?;
        entry_opt(&mut map, "version", &self.0.version)?;
        map.end()
    }
}

/// A client's event as it published it (the fields validation reads back to the same
/// event): what a cluster node proposes to the shared stream.
impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self {
            Event::Lifecycle(e) => serialize_lifecycle(&mut map, e)?,
            Event::Visitor(e) => serialize_visitor(&mut map, e)?,
        }
        map.end()
    }
}

impl Serialize for Published {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        serialize_published(&mut map, self)?;
        map.end()
    }
}

/// Writes the fields of a delivered event: its body's, then `seq`, `topic`, `timestamp`.
fn serialize_published<M: SerializeMap>(map: &mut M, p: &Published) -> Result<(), M::Error> {
    match &p.body {
        Body::Lifecycle(e) => serialize_lifecycle(map, e)?,
        Body::Visitor(e) => serialize_visitor(map, e)?,
        Body::SessionStarted {
            customer_id,
            session_id,
            user_id,
            started_at,
        } => {
            map.serialize_entry("customerId", customer_id)?;
            map.serialize_entry("sessionId", session_id)?;
            entry_opt(map, "userId", user_id)?;
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
            entry_opt(map, "userId", user_id)?;
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
            entry_opt(map, "userId", user_id)?;
            map.serialize_entry("mergedCustomerIds", merged_customer_ids)?;
        }
        Body::Segment {
            segment_id,
            visitor_id,
            customer_id,
            ..
        } => {
            map.serialize_entry("segmentId", segment_id)?;
            map.serialize_entry("visitorId", visitor_id)?;
            map.serialize_entry("customerId", customer_id)?;
        }
    }
    map.serialize_entry("seq", &p.seq)?;
    map.serialize_entry("topic", p.body.topic().as_str())?;
    map.serialize_entry("timestamp", &format_millis(p.timestamp))
}

/// A `visitor:merged` frame as a browser confined to `viewer` may see it: the profile's
/// other customers are other browsers' cookie ids, so the copy names only the viewer
/// (`customerId` and `mergedCustomerIds` are the viewer, `visitorId` goes unless it is the
/// viewer's own). None when it is not an event frame.
pub fn confined_to(frame: &str, viewer: CustomerId) -> Option<String> {
    let mut frame = serde_json::from_str::<Value>(frame).ok()?;
    let event = frame.get_mut("event").and_then(Value::as_object_mut)?;
    let viewer_id = Value::from(viewer.to_string());
    if event.get("visitorId") != Some(&viewer_id) {
        event.remove("visitorId");
    }
    event.insert("customerId".into(), viewer_id.clone());
    event.insert("mergedCustomerIds".into(), Value::Array(vec![viewer_id]));
    Some(frame.to_string())
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
        let Stored { seq, event: stamp } = read::<Stored<Stamp>>(frame)?;
        let body = match stamp.topic.as_ref() {
            "session:started" => {
                let started = read::<Stored<SessionStarted>>(frame)?.event;
                Body::SessionStarted {
                    customer_id: started.customer_id,
                    session_id: started.session_id,
                    user_id: started.user_id,
                    started_at: started.started_at,
                }
            }
            "session:ended" => {
                let ended = read::<Stored<SessionEnded>>(frame)?.event;
                Body::SessionEnded {
                    customer_id: ended.customer_id,
                    session_id: ended.session_id,
                    user_id: ended.user_id,
                    started_at: ended.started_at,
                    ended_at: ended.ended_at,
                    pages_viewed: ended.pages_viewed,
                    reason: ended.reason,
                }
            }
            topic @ ("segment:entered" | "segment:left") => {
                let moved = read::<Stored<SegmentMoved>>(frame)?.event;
                Body::Segment {
                    entered: topic == "segment:entered",
                    segment_id: moved.segment_id,
                    visitor_id: moved.visitor_id,
                    customer_id: moved.customer_id,
                }
            }
            "visitor:merged" => {
                let merged = read::<Stored<Merged>>(frame)?.event;
                Body::Merged {
                    customer_id: merged.customer_id,
                    visitor_id: merged.visitor_id,
                    user_id: merged.user_id,
                    merged_customer_ids: merged.merged_customer_ids,
                }
            }
            // Lifecycle and visitor events are what a client published: validation reads
            // them back exactly (it accepted them once, and serialization only adds fields
            // it knows, such as `customerIdType`).
            // An anonymized visitor event may lack what validation asks a client for (an
            // identify's `userId`): it is read as what anonymizing keeps.
            _ if stamp.anonymized && stamp.topic.starts_with("visitor:") => {
                let kept = read::<Stored<AnonymizedVisitor>>(frame)?.event;
                let kind = VisitorKind::parse(&kept.kind)
                    .ok_or_else(|| FrameError(format!("unknown visitor event {:?}", kept.kind)))?;
                Body::Visitor(VisitorEvent {
                    kind,
                    customer_id: kept.customer_id,
                    session_id: kept.session_id,
                    user_id: None,
                    traits: None,
                    channels: None,
                    page: kept.page,
                    name: kept.name,
                    properties: None,
                    event_id: kept.event_id,
                    attributes: None,
                    company: None,
                    client: None,
                })
            }
            _ => {
                let mut event = read::<Stored<Map<String, Value>>>(frame)?.event;
                for added in ["seq", "topic", "timestamp", "anonymized"] {
                    event.remove(added);
                }
                // Releases before channel identities accepted `channels` on every visitor
                // event and applied them only on those that link; a log they wrote may hold
                // them on the others, where they changed nothing. Dropped as they were then,
                // such an event replays into the state it built.
                if event
                    .get("type")
                    .and_then(Value::as_str)
                    .and_then(VisitorKind::parse)
                    .is_some_and(|kind| !kind.links())
                {
                    event.remove("channels");
                }
                Event::from_json(Value::Object(event))
                    .map_err(|e| FrameError(e.message))?
                    .into()
            }
        };
        if body.topic().as_str() != stamp.topic {
            return Err(FrameError("`topic` does not match the event".into()));
        }
        Ok(Published {
            seq: Seq(seq),
            timestamp: stamp.timestamp,
            body,
        })
    }
}

fn read<'a, T: Deserialize<'a>>(frame: &'a str) -> Result<T, FrameError> {
    serde_json::from_str(frame).map_err(|e| FrameError(e.to_string()))
}

/// An `event` frame as stored: its seq and its event, read as `T` (the frame's `type` and
/// `topic` are skipped; the event's own `topic` says which body it holds).
#[derive(Deserialize)]
struct Stored<T> {
    seq: u64,
    event: T,
}

/// What every stored event has: its topic and receive time.
#[derive(Deserialize)]
struct Stamp<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(deserialize_with = "rfc3339")]
    timestamp: Millis,
    /// Set on an event anonymizing rewrote ([`Published::to_anonymized_frame`]).
    #[serde(default)]
    anonymized: bool,
}

/// What an anonymized visitor event keeps ([`VisitorEvent::anonymized`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnonymizedVisitor {
    #[serde(rename = "type")]
    kind: String,
    customer_id: CustomerId,
    session_id: Option<SessionId>,
    page: Option<Map<String, Value>>,
    name: Option<String>,
    event_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionStarted {
    customer_id: CustomerId,
    session_id: SessionId,
    user_id: Option<UserId>,
    #[serde(deserialize_with = "rfc3339")]
    started_at: Millis,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionEnded {
    customer_id: CustomerId,
    session_id: SessionId,
    user_id: Option<UserId>,
    #[serde(deserialize_with = "rfc3339")]
    started_at: Millis,
    #[serde(deserialize_with = "rfc3339")]
    ended_at: Millis,
    pages_viewed: u64,
    #[serde(deserialize_with = "end_reason")]
    reason: EndReason,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Merged {
    customer_id: CustomerId,
    visitor_id: VisitorId,
    user_id: Option<UserId>,
    merged_customer_ids: Vec<CustomerId>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SegmentMoved {
    segment_id: SegmentId,
    visitor_id: VisitorId,
    customer_id: CustomerId,
}

/// A timestamp as [`format_millis`] writes it.
fn rfc3339<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Millis, D::Error> {
    let text = String::deserialize(deserializer)?;
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| D::Error::custom(format!("{text:?} is not RFC 3339")))
}

fn end_reason<'de, D: Deserializer<'de>>(deserializer: D) -> Result<EndReason, D::Error> {
    let text = String::deserialize(deserializer)?;
    EndReason::parse(&text).ok_or_else(|| D::Error::custom(format!("unknown reason {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::validate::tests::{lifecycle, with, A, C, M, S};
    use serde_json::{json, Value};

    #[test]
    fn a_text_frame_reads_back_its_json_at_every_length_format() {
        for len in [0, 1, 125, 126, 65_535, 65_536, 200_000] {
            let json = "x".repeat(len);
            let frame = WireFrame::text(&json);
            assert_eq!(frame.as_str(), json);
            assert_eq!(frame.len(), len);
            assert_eq!(frame.wire()[0], 0x81, "final text frame");
            let header = match len {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            assert_eq!(frame.wire().len(), header + len);
        }
        assert_eq!(WireFrame::default().as_str(), "");
        assert!(WireFrame::default().is_empty());
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
                visitor_id: VisitorId::of_first_customer(other),
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

    /// The frames that carry a user id or a visitor id, byte for byte: naming those ids
    /// (`UserId`, `VisitorId`) must not change what subscribers and the log receive.
    #[test]
    fn identity_frames_are_written_byte_for_byte_as_pinned() {
        let (c, s) = (CustomerId::parse(C).unwrap(), SessionId::parse(S).unwrap());
        let first = CustomerId::parse("eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee").unwrap();
        let identify = json!({"type": "identify", "customerId": C, "userId": "u1"});
        let bodies = [
            Event::from_json(identify).unwrap().into(),
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
            Body::Merged {
                customer_id: c,
                visitor_id: VisitorId::of_first_customer(first),
                user_id: Some("u1".into()),
                merged_customer_ids: vec![first, c],
            },
        ];
        let pinned = [
            r#"{"type":"event","seq":1,"topic":"visitor:identify","event":{"type":"identify","customerId":"cccccccc-cccc-4ccc-8ccc-cccccccccccc","userId":"u1","seq":1,"topic":"visitor:identify","timestamp":"2023-11-14T22:13:20.123Z"}}"#,
            r#"{"type":"event","seq":2,"topic":"session:started","event":{"customerId":"cccccccc-cccc-4ccc-8ccc-cccccccccccc","sessionId":"dddddddd-dddd-4ddd-8ddd-dddddddddddd","userId":"u1","startedAt":"2023-11-14T22:13:20.001Z","seq":2,"topic":"session:started","timestamp":"2023-11-14T22:13:20.123Z"}}"#,
            r#"{"type":"event","seq":3,"topic":"session:ended","event":{"customerId":"cccccccc-cccc-4ccc-8ccc-cccccccccccc","sessionId":"dddddddd-dddd-4ddd-8ddd-dddddddddddd","userId":"u1","startedAt":"2023-11-14T22:13:20.001Z","endedAt":"2023-11-14T22:13:29.999Z","durationMs":9998,"pagesViewed":4,"reason":"idle","seq":3,"topic":"session:ended","timestamp":"2023-11-14T22:13:20.123Z"}}"#,
            r#"{"type":"event","seq":4,"topic":"visitor:merged","event":{"customerId":"cccccccc-cccc-4ccc-8ccc-cccccccccccc","visitorId":"eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee","userId":"u1","mergedCustomerIds":["eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee","cccccccc-cccc-4ccc-8ccc-cccccccccccc"],"seq":4,"topic":"visitor:merged","timestamp":"2023-11-14T22:13:20.123Z"}}"#,
        ];
        for ((seq, body), expected) in (1..).zip(bodies).zip(pinned) {
            let published = Published {
                seq: Seq(seq),
                timestamp: 1_700_000_000_123,
                body,
            };
            assert_eq!(published.to_frame(), expected);
        }
    }

    /// Anonymizing keeps ids, states, times, page paths and track names, drops every
    /// free-text field, reads back from the log, and changes nothing the second time.
    #[test]
    fn an_anonymized_frame_keeps_no_free_text_and_reads_back() {
        let secret = "ann@example.com";
        let events = [
            json!({"actionId": A, "actionState": "errored", "actionMediaType": "webchat",
                   "actionMapId": M, "actionMapVersion": 3, "customerId": C, "sessionId": S,
                   "errorCode": 7, "errorMessage": secret, "data": {"x": secret}}),
            json!({"type": "identify", "customerId": C, "userId": secret,
                   "traits": {"email": secret}, "channels": {"whatsapp": secret}}),
            json!({"type": "page", "customerId": C, "sessionId": S,
                   "page": {"url": format!("https://{secret}@x.example/a/b?e={secret}#{secret}"),
                            "title": secret, "referrer": secret, "other": secret}}),
            json!({"type": "track", "customerId": C, "name": "clicked", "eventId": "e1",
                   "properties": {"email": secret}}),
        ];
        for (i, event) in events.into_iter().enumerate() {
            let published = Published {
                seq: Seq(i as u64 + 1),
                timestamp: 1_700_000_000_000,
                body: Event::from_json(event).unwrap().into(),
            };
            let frame = anonymized(&published.to_frame()).unwrap();
            assert!(!frame.contains(secret), "{frame}");
            let json: Value = serde_json::from_str(&frame).unwrap();
            assert_eq!(json["event"]["anonymized"], true);
            assert_eq!(json["event"]["customerId"], C);
            assert_eq!(anonymized(&frame).unwrap(), frame, "idempotent");
            let back = Published::from_frame(&frame).unwrap();
            assert_eq!(back.body, published.body.anonymized());
        }
        assert_eq!(
            crate::ingest::event::url_path_only("https://a:b@x.example:8080/p/q?x#y"),
            "https://x.example:8080/p/q"
        );
        assert_eq!(crate::ingest::event::url_path_only("/p?x"), "/p");
    }

    #[test]
    fn a_damaged_frame_is_refused_saying_what_is_wrong() {
        let started = Published {
            seq: Seq(3),
            timestamp: 1_700_000_000_000,
            body: Body::SessionStarted {
                customer_id: CustomerId::parse(C).unwrap(),
                session_id: SessionId::parse(S).unwrap(),
                user_id: None,
                started_at: 1_700_000_000_000,
            },
        }
        .to_frame();
        let offered = Published {
            seq: Seq(4),
            timestamp: 1_700_000_000_000,
            body: Event::from_json(lifecycle()).unwrap().into(),
        }
        .to_frame();
        let cases = [
            (
                started.replacen(r#""seq":3,"#, "", 1),
                "missing field `seq`",
            ),
            (
                started.replace("customerId", "customerID"),
                "missing field `customerId`",
            ),
            (
                started.replace("session:started", "session:ended"),
                "missing field `endedAt`",
            ),
            (started.replace(".000Z", "Z!"), "is not RFC 3339"),
            (
                offered.replace("webchat:offered", "webchat:accepted"),
                "`topic` does not match the event",
            ),
            (
                offered.replace(r#""actionState""#, r#""bogus":1,"actionState""#),
                "unknown field `bogus`",
            ),
            ("null".into(), "invalid type"),
        ];
        for (frame, says) in cases {
            let error = Published::from_frame(&frame)
                .err()
                .unwrap_or_else(|| panic!("{frame} read"));
            assert!(error.to_string().contains(says), "{frame}: {error}");
        }
    }

    /// A log written before channel identities may hold `channels` on a page, track or
    /// signout event, which publishing now refuses: it still replays, without them, as it
    /// applied then.
    #[test]
    fn an_older_frame_with_channels_where_they_were_dropped_reads_back_without_them() {
        let page = json!({"type": "page", "customerId": C, "sessionId": S,
                          "page": {"url": "https://x.example/"}});
        let frame = Published {
            seq: Seq(5),
            timestamp: 1_700_000_000_000,
            body: Event::from_json(page.clone()).unwrap().into(),
        }
        .to_frame();
        let older = frame.replacen(
            r#""type":"page""#,
            r#""channels":{"whatsapp":"1"},"type":"page""#,
            1,
        );
        assert_ne!(older, frame);
        let read = Published::from_frame(&older).expect("an older frame reads back");
        assert_eq!(read.to_frame(), frame);
        let refused = Event::from_json(with(page, "channels", json!({"whatsapp": "1"})));
        assert!(refused.is_err(), "published now, it is refused");
    }
}
