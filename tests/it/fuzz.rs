//! Property tests of the parsers every byte from a client goes through: frames
//! (`protocol::parse_client_frame`), events (`Event::from_json`), topic patterns and
//! `where` filters, and the nesting-depth scan that runs before them. Arbitrary strings
//! and arbitrary JSON never panic; valid inputs built from random parts parse to exactly
//! those parts; the depth scan agrees with the parsed document.
//!
//! The case counts are fixed and small enough that the whole module runs in a few
//! seconds, so it runs on every CI build (the bounded-time fuzz target of issue 5).

use actionhub::edge::limits::too_deep;
use actionhub::ingest::event::Event;
use actionhub::ingest::protocol::{parse_client_frame, Op, SubId};
use actionhub::ingest::topic::{Filter, Topic, TopicSet};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use uuid::Uuid;

const CASES: u32 = 2048;

/// Field names the parsers know, so random objects reach past the first refusal.
const KNOWN_KEYS: &[&str] = &[
    "op",
    "id",
    "sub",
    "topics",
    "where",
    "once",
    "since",
    "epoch",
    "snapshot",
    "event",
    "token",
    "apiKey",
    "client",
    "customerId",
    "sessionId",
    "actionId",
    "actionMapId",
    "actionMapVersion",
    "actionMediaType",
    "actionState",
    "userId",
    "type",
    "eventId",
    "data",
    "page",
    "traits",
    "errorCode",
    "errorMessage",
];

const KNOWN_STRINGS: &[&str] = &[
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "refresh",
    "ping",
    "all",
    "webchat:all",
    "visitor:page",
    "webchat",
    "contentoffer",
    "offered",
    "accepted",
    "errored",
    "page",
    "identify",
    "signin",
    "cookie",
    "",
    "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
];

fn uuid_string() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|n| {
        uuid::Builder::from_random_bytes(n.to_le_bytes())
            .into_uuid()
            .to_string()
    })
}

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KNOWN_STRINGS).prop_map(str::to_owned),
        uuid_string(),
        any::<String>(),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KNOWN_KEYS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Arbitrary JSON, biased toward the names and values the parsers look for.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        json_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The fields of a lifecycle event, and one no event has.
const LIFECYCLE_KEYS: &[&str] = &[
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
    "unknownField",
];

/// A lifecycle event, valid more often than not: any state of either media type, optional
/// fields now and then, each value sometimes one its check refuses.
fn lifecycle_event() -> impl Strategy<Value = Value> {
    let sometimes = |valid: Vec<Value>, refused: Vec<Value>| {
        prop::option::weighted(
            0.3,
            prop_oneof![
                6 => prop::sample::select(valid),
                1 => prop::sample::select(refused),
            ],
        )
    };
    (
        (uuid_string(), uuid_string(), uuid_string(), uuid_string()),
        prop::sample::select(&["webchat", "contentoffer"][..]),
        prop_oneof![
            3 => prop::sample::select(&["offered", "errored"][..]),
            1 => prop::sample::select(&["qualified", "accepted", "ended", "timedout"][..]),
        ],
        prop_oneof![
            8 => (1u32..).prop_map(Value::from),
            1 => prop::sample::select(vec![json!(0), json!(4_294_967_296u64)]),
        ],
        sometimes(vec![json!("cookie")], vec![json!("device")]),
        sometimes(vec![json!(500), json!(-1)], vec![json!(u64::MAX)]),
        sometimes(
            vec![json!("é"), json!("x".repeat(1024))],
            vec![json!(""), json!("x".repeat(1025))],
        ),
        sometimes(
            vec![json!("k"), json!("k\"q"), json!("\u{1F600}".repeat(64))],
            vec![json!("x".repeat(65))],
        ),
        sometimes(
            vec![json!({"a": 1}), json!({})],
            vec![json!({"pad": "x".repeat(4100)})],
        ),
    )
        .prop_map(
            |(
                (customer, session, action, map),
                media,
                state,
                version,
                id_type,
                code,
                message,
                event_id,
                data,
            )| {
                let mut event = json!({
                    "actionId": action, "actionState": state, "actionMediaType": media,
                    "actionMapId": map, "actionMapVersion": version,
                    "customerId": customer, "sessionId": session,
                });
                for (field, value) in [
                    ("customerIdType", id_type),
                    ("errorCode", code),
                    ("errorMessage", message),
                    ("eventId", event_id),
                    ("data", data),
                ] {
                    if let Some(value) = value {
                        event[field] = value;
                    }
                }
                event
            },
        )
}

/// One change to a publish frame: in the frame itself (`true`) or its event, a field
/// removed (`None`) or set to a value of the right or a wrong type, `null` or escaped text.
fn mutation() -> impl Strategy<Value = (bool, String, Option<Value>)> {
    let value = prop_oneof![
        Just(Value::Null),
        Just(json!("line\nbreak")),
        Just(json!("publish")),
        Just(json!("ping")),
        Just(json!(3.0)),
        Just(json!(-3)),
        json_value(),
    ];
    prop_oneof![
        4 => (Just(false), prop::sample::select(LIFECYCLE_KEYS).prop_map(str::to_owned), prop::option::of(value.clone())),
        1 => (Just(true), prop::sample::select(&["op", "id", "event", "sub"][..]).prop_map(str::to_owned), prop::option::of(value)),
    ]
}

/// What the general path makes of a frame's event.
fn parsed_event(frame: &Value) -> Event {
    Event::from_json(frame["event"].clone()).expect("a valid event")
}

/// A set of topics and the patterns that name exactly them.
fn topics() -> impl Strategy<Value = Vec<Topic>> {
    let all: Vec<Topic> = Topic::all().collect();
    prop::sample::subsequence(all.clone(), 1..=all.len())
}

fn id_list() -> impl Strategy<Value = Option<Vec<String>>> {
    prop::option::of(prop::collection::vec(uuid_string(), 1..4))
}

/// How deep arrays and objects nest in `value`.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_parsers(text in any::<String>()) {
        let _ = parse_client_frame(&text);
        let _ = TopicSet::parse_pattern(&text);
        let _ = TopicSet::parse_patterns(text.split(','));
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            let _ = Filter::parse(&value);
            let _ = Event::from_json(value);
        }
    }

    #[test]
    fn arbitrary_json_never_panics_the_parsers(value in json_value(), op in json_string()) {
        let _ = parse_client_frame(&value.to_string());
        let _ = Filter::parse(&value);
        let _ = Event::from_json(value.clone());
        // The same value in every place a frame carries JSON.
        for field in ["event", "where", "topics", "sub", "client", "since", "token"] {
            let frame = json!({"op": op, "id": 1, "sub": "s", "topics": ["all"], field: value});
            let _ = parse_client_frame(&frame.to_string());
        }
        if let Value::Object(fields) = &value {
            let mut frame = fields.clone();
            frame.insert("op".into(), Value::from(op));
            let _ = parse_client_frame(&Value::Object(frame).to_string());
        }
    }

    #[test]
    fn the_depth_scan_agrees_with_the_document(value in json_value(), max in 0usize..8, pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&value).expect("json") } else { value.to_string() };
        prop_assert_eq!(too_deep(text.as_bytes(), max), depth(&value) > max, "{}", text);
    }

    #[test]
    fn topic_patterns_round_trip(chosen in topics()) {
        let names: Vec<&str> = chosen.iter().map(|t| t.as_str()).collect();
        let set = TopicSet::parse_patterns(names.iter().copied()).expect("valid topic names");
        prop_assert_eq!(set.iter().collect::<Vec<_>>(), chosen.clone());
        // A family's `all` covers each of its topics.
        for topic in &chosen {
            let family = topic.as_str().split(':').next().expect("family");
            let all = TopicSet::parse_pattern(&format!("{family}:all")).expect("family:all");
            prop_assert!(all.contains(*topic));
        }
    }

    #[test]
    fn filters_round_trip(
        customers in id_list(),
        sessions in id_list(),
        actions in id_list(),
        versions in prop::option::of(prop::collection::vec(1u32.., 1..4)),
        users in prop::option::of(prop::collection::vec("[a-z0-9]{1,8}".prop_map(|s: String| s), 1..4)),
    ) {
        let mut object = Map::new();
        for (field, list) in [("customerId", &customers), ("sessionId", &sessions), ("actionId", &actions)] {
            if let Some(list) = list {
                object.insert(field.into(), json!(list));
            }
        }
        if let Some(versions) = &versions {
            object.insert("actionMapVersion".into(), json!(versions));
        }
        if let Some(users) = &users {
            object.insert("userId".into(), json!(users));
        }
        let filter = Filter::parse(&Value::Object(object)).expect("a valid filter");
        let texts = |ids: &Option<Vec<actionhub::ids::CustomerId>>| {
            ids.as_ref().map(|l| l.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        let dedup = |list: &Option<Vec<String>>| {
            list.as_ref().map(|l| {
                let mut seen = Vec::new();
                for item in l {
                    if !seen.contains(item) {
                        seen.push(item.clone());
                    }
                }
                seen
            })
        };
        prop_assert_eq!(texts(&filter.customer_ids), dedup(&customers));
        prop_assert_eq!(
            filter.session_ids.as_ref().map(|l| l.iter().map(ToString::to_string).collect::<Vec<_>>()),
            dedup(&sessions)
        );
        prop_assert_eq!(
            filter.action_ids.as_ref().map(|l| l.iter().map(ToString::to_string).collect::<Vec<_>>()),
            dedup(&actions)
        );
        prop_assert_eq!(
            filter.user_ids.as_ref().map(|l| l.iter().map(ToString::to_string).collect::<Vec<_>>()),
            dedup(&users)
        );
        prop_assert_eq!(filter.action_map_versions.is_some(), versions.is_some());
    }

    #[test]
    fn valid_events_are_accepted_with_their_ids(
        customer in uuid_string(),
        session in uuid_string(),
        action in uuid_string(),
        map in uuid_string(),
        version in 1u32..,
        state in prop::sample::select(&["offered", "accepted", "rejected", "ignored"][..]),
        media in prop::sample::select(&["webchat", "contentoffer"][..]),
        data in prop::option::of(prop::collection::btree_map("[a-z]{1,6}", any::<i32>(), 0..4)),
    ) {
        let mut event = json!({
            "actionId": action,
            "actionState": state,
            "actionMediaType": media,
            "actionMapId": map,
            "actionMapVersion": version,
            "customerId": customer,
            "sessionId": session,
        });
        if let Some(data) = data {
            event["data"] = json!(data);
        }
        let parsed = Event::from_json(event.clone()).map_err(|e| TestCaseError::fail(format!("{event}: {e}")))?;
        prop_assert_eq!(parsed.customer_id().to_string(), customer);
        prop_assert_eq!(parsed.session_id().map(|s| s.to_string()), Some(session));
        // A publish frame carrying it parses to that event, untouched.
        let frame = json!({"op": "publish", "id": 7, "event": event});
        let parsed = parse_client_frame(&frame.to_string()).map_err(|e| TestCaseError::fail(format!("{:?}", e.error)))?;
        prop_assert_eq!(parsed.id, Some(7));
        match parsed.op {
            Op::Publish { event: carried } => prop_assert_eq!(carried.ok(), Some(parsed_event(&frame))),
            other => prop_assert!(false, "parsed as {}", other.name()),
        }
    }

    #[test]
    fn a_publish_frame_carries_what_the_event_validator_decides(
        base in lifecycle_event(),
        mutations in prop::collection::vec(mutation(), 0..4),
        repeated in prop::option::of((prop::sample::select(LIFECYCLE_KEYS), json_value())),
    ) {
        // Frames close to valid, with a few fields removed, nulled, retyped or added, so that
        // both the typed fast path and the general path of the frame parser are exercised.
        let mut frame = json!({"op": "publish", "id": 7, "event": base});
        for (place, field, value) in mutations {
            let target = if place { &mut frame } else { &mut frame["event"] };
            // An event already replaced by a mutation of the frame is left as it is.
            let Some(target) = target.as_object_mut() else {
                continue;
            };
            match value {
                None => target.remove(&field),
                Some(value) => target.insert(field, value),
            };
        }
        let mut text = frame.to_string();
        if let Some((field, value)) = repeated {
            if frame["event"].as_object().is_some_and(|event| !event.is_empty()) {
                // A key given twice: the general path keeps the last, as serde_json does.
                text = text.replacen("\"event\":{", &format!("\"event\":{{{}:{value},", json!(field)), 1);
            }
        }
        let document: Value = serde_json::from_str(&text).expect("still JSON");
        let fields = document.as_object().expect("a frame object");
        let id_ok = fields.get("id").is_none_or(Value::is_u64);
        let frame_ok = id_ok
            && fields.get("op") == Some(&json!("publish"))
            && fields.contains_key("event")
            && fields.keys().all(|k| ["op", "id", "event"].contains(&k.as_str()));
        match parse_client_frame(&text) {
            // A mutation of `op` may leave a valid frame of another op (a ping): not ours.
            Ok(parsed) if fields.get("op") != Some(&json!("publish")) => {
                prop_assert_eq!(Some(&json!(parsed.op.name())), fields.get("op"), "{}", text);
            }
            Ok(parsed) => {
                prop_assert!(frame_ok, "{} was taken", text);
                prop_assert_eq!(parsed.id, fields.get("id").and_then(Value::as_u64));
                let Op::Publish { event } = parsed.op else {
                    return Err(TestCaseError::fail(format!("{text}: not a publish")));
                };
                prop_assert_eq!(event, Event::from_json(document["event"].clone()), "{}", text);
            }
            Err(refused) => prop_assert!(!frame_ok, "{} refused: {:?}", text, refused.error),
        }
    }

    #[test]
    fn valid_subscribe_frames_round_trip(
        id in prop::option::of(any::<u64>()),
        sub in prop_oneof![any::<u64>().prop_map(SubId::Number), "[a-zA-Z0-9_-]{1,32}".prop_map(SubId::Name)],
        chosen in topics(),
        once in any::<bool>(),
        snapshot in any::<bool>(),
        since in prop::option::of((any::<u64>(), "[0-9a-f]{32}")),
        customers in id_list(),
    ) {
        let names: Vec<&str> = chosen.iter().map(|t| t.as_str()).collect();
        let mut frame = json!({"op": "subscribe", "sub": sub, "topics": names, "once": once, "snapshot": snapshot});
        if let Some(id) = id {
            frame["id"] = json!(id);
        }
        if let Some((seq, epoch)) = &since {
            frame["since"] = json!(seq);
            frame["epoch"] = json!(epoch);
        }
        if let Some(customers) = &customers {
            frame["where"] = json!({"customerId": customers});
        }
        let parsed = parse_client_frame(&frame.to_string()).map_err(|e| TestCaseError::fail(format!("{frame}: {:?}", e.error)))?;
        prop_assert_eq!(parsed.id, id);
        let Op::Subscribe(req) = parsed.op else {
            return Err(TestCaseError::fail("not a subscribe"));
        };
        prop_assert_eq!(req.sub, sub);
        prop_assert_eq!(req.topics.iter().collect::<Vec<_>>(), chosen);
        prop_assert_eq!(req.once, once);
        prop_assert_eq!(req.snapshot, snapshot);
        prop_assert_eq!(req.since.map(|(s, e)| (s.0, e)), since);
        prop_assert_eq!(req.filter.customer_ids.is_some(), customers.is_some());
    }
}

#[test]
fn uuids_in_the_generators_are_v4() {
    // The id parser takes only UUIDv4; the generators must produce them.
    let id = uuid::Builder::from_random_bytes([7; 16]).into_uuid();
    assert_eq!(id.get_version_num(), 4);
    assert!(Uuid::parse_str(&id.to_string()).is_ok());
}
