//! Assertions on the frames the hub sends, and on its error shape.

use serde_json::{json, Value};

/// Asserts `frame` has `"type": kind`.
pub(crate) fn assert_type(frame: &Value, kind: &str) {
    assert_eq!(
        frame["type"],
        json!(kind),
        "expected a {kind} frame, got {frame}"
    );
}

/// Asserts `frame` is an error with `code` and, when given, `details.field == field`.
pub(crate) fn assert_error(frame: &Value, code: &str, field: Option<&str>) {
    assert_type(frame, "error");
    assert_eq!(frame["code"], json!(code), "error code: {frame}");
    assert!(
        frame["message"].is_string(),
        "an error has a message: {frame}"
    );
    if let Some(field) = field {
        assert_eq!(
            frame["details"]["field"],
            json!(field),
            "details.field: {frame}"
        );
    }
}

/// The `seq` of a reply or event frame.
pub(crate) fn seq_of(frame: &Value) -> u64 {
    frame["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("frame has a numeric seq: {frame}"))
}

/// Asserts an `event` frame carries `seq` and `topic`, outside and inside, and a timestamp
/// in RFC 3339 with milliseconds, UTC. Returns the inner event.
pub(crate) fn assert_event(frame: &Value, seq: u64, topic: &str) -> Value {
    assert_type(frame, "event");
    assert_eq!(frame["seq"], json!(seq), "event seq: {frame}");
    assert_eq!(frame["topic"], json!(topic), "event topic: {frame}");
    let event = &frame["event"];
    assert_eq!(event["seq"], json!(seq), "inner seq: {frame}");
    assert_eq!(event["topic"], json!(topic), "inner topic: {frame}");
    assert_timestamp(&event["timestamp"]);
    event.clone()
}

/// Asserts `value` looks like `2026-01-02T03:04:05.678Z`.
pub(crate) fn assert_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is a string: {value}"));
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 24
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && bytes[23] == b'Z'
        && bytes[20..23].iter().all(u8::is_ascii_digit);
    assert!(shape_ok, "RFC 3339 UTC timestamp with milliseconds: {text}");
}

/// The topics of a list of event frames.
pub(crate) fn topics(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|frame| frame["topic"].as_str().unwrap_or("<none>").to_owned())
        .collect()
}

/// A JSON list of ids (customer ids, user ids) as sorted strings.
pub(crate) fn sorted_ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list of ids: {list}"))
        .iter()
        .map(|c| c.as_str().expect("ids are strings").to_owned())
        .collect();
    ids.sort();
    ids
}

/// The `mergedCustomerIds` of a `visitor:merged` event (the event object), sorted.
pub(crate) fn merged_customers(event: &Value) -> Vec<String> {
    sorted_ids(&event["mergedCustomerIds"])
}
