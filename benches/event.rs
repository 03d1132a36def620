//! Micro-benchmarks of one published event's path through the pure code: validation
//! (`Event::from_json`, on a JSON tree; `Event::from_text`, for an event of an HTTP batch;
//! a whole publish frame through `parse_client_frame`, of a lifecycle event, of a visitor
//! event, and of a lifecycle event refused for an unknown field; the last four read the
//! text into typed fields, without a JSON tree), and the `event` frame every receiver gets
//! (`Published::to_frame`) and the log replays (`Published::from_frame`).
//!
//! Run with `cargo bench --bench event`; figures are in docs/benchmarks.md.

mod common;

use std::hint::black_box;

use actionhub::clock::now_millis;
use actionhub::error::HubError;
use actionhub::ids::Seq;
use actionhub::ingest::event::{Body, Event, Published};
use actionhub::ingest::protocol::{parse_client_frame, ClientFrame, Op};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::{json, Value};
use uuid::Uuid;

/// A webchat `offered` event shaped like the load generator's (~335 bytes of JSON).
fn lifecycle_event() -> Value {
    json!({
        "actionId": Uuid::new_v4(),
        "actionState": "offered",
        "actionMediaType": "webchat",
        "actionMapId": Uuid::new_v4(),
        "actionMapVersion": 3,
        "customerId": Uuid::new_v4(),
        "customerIdType": "cookie",
        "sessionId": Uuid::new_v4(),
        "data": {"sentAtMicros": 1_790_000_000_000_000u64},
    })
}

/// The event of a publish frame, as `parse_client_frame` decides it.
fn publish(frame: &str) -> Result<Event, HubError> {
    match parse_client_frame(frame) {
        Ok(ClientFrame {
            op: Op::Publish { event },
            ..
        }) => event,
        Ok(other) => panic!("parsed as {}", other.op.name()),
        Err(e) => panic!("{:?}", e.error),
    }
}

fn validation(c: &mut Criterion) {
    let value = lifecycle_event();
    let text = value.to_string();
    assert!((300..=380).contains(&text.len()), "{} bytes", text.len());
    let mut group = c.benchmark_group("event");
    group.bench_function("from_json (validate a parsed value)", |b| {
        b.iter_batched(
            || value.clone(),
            |v| Event::from_json(black_box(v)).expect("valid event"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("parse text + from_json", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_str(black_box(&text)).expect("JSON");
            Event::from_json(v).expect("valid event")
        })
    });
    group.bench_function(
        "from_text (an event of an HTTP batch, typed fast path)",
        |b| b.iter(|| Event::from_text(black_box(&text)).expect("valid event")),
    );
    let frame = json!({"op": "publish", "id": 12, "event": value}).to_string();
    group.bench_function("parse_client_frame (a whole publish frame)", |b| {
        b.iter(|| publish(black_box(&frame)).expect("valid event"))
    });
    let visitor = json!({
        "type": "page",
        "customerId": Uuid::new_v4(),
        "sessionId": Uuid::new_v4(),
        "page": {"url": "https://shop.example/cart", "title": "Cart"},
    });
    let frame = json!({"op": "publish", "id": 12, "event": visitor}).to_string();
    group.bench_function(
        "parse_client_frame (a visitor event's publish frame)",
        |b| b.iter(|| publish(black_box(&frame)).expect("valid event")),
    );
    let mut refused = value.clone();
    refused["conversationId"] = json!("c-1");
    let frame = json!({"op": "publish", "id": 12, "event": refused}).to_string();
    group.bench_function(
        "parse_client_frame (a publish frame refused: unknown field)",
        |b| b.iter(|| publish(black_box(&frame)).expect_err("an unknown field")),
    );
    group.finish();
}

fn frame(c: &mut Criterion) {
    let event = Event::from_json(lifecycle_event()).expect("valid event");
    let published = Published {
        seq: Seq(1_234_567),
        timestamp: now_millis(),
        body: Body::from(event),
    };
    assert!(published.to_frame().starts_with(r#"{"type":"event""#));
    c.bench_function("event/to_frame (serialize the delivered frame)", |b| {
        b.iter(|| black_box(&published).to_frame())
    });
    let frame = published.to_frame();
    c.bench_function("event/from_frame (read a logged frame back)", |b| {
        b.iter(|| Published::from_frame(black_box(&frame)).expect("a frame it wrote"))
    });
}

criterion_group! {
    name = benches;
    config = common::short_runs();
    targets = validation, frame
}
criterion_main!(benches);
