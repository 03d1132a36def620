//! Micro-benchmarks of one published event's path through the pure code: validation
//! (`Event::from_json`; `Event::from_text`, for an event of an HTTP batch; a whole publish
//! frame through `parse_client_frame`; the last two take a valid lifecycle event through
//! the typed fast path, without a JSON tree), and the `event` frame every receiver gets
//! (`Published::to_frame`).
//!
//! Run with `cargo bench --bench event`; figures are in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use actionhub::ids::Seq;
use actionhub::ingest::event::{now_millis, Body, Event, Published};
use actionhub::ingest::protocol::{parse_client_frame, Op};
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
        b.iter(|| match parse_client_frame(black_box(&frame)) {
            Ok(parsed) => match parsed.op {
                Op::Publish { event } => event.expect("valid event"),
                other => panic!("parsed as {}", other.name()),
            },
            Err(e) => panic!("{:?}", e.error),
        })
    });
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
}

criterion_group! {
    name = benches;
    // Short runs: the whole `cargo bench` stays well under a minute on 2 cores.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = validation, frame
}
criterion_main!(benches);
