//! Micro-benchmarks of the per-event decisions: the lifecycle check
//! (`MediaType::check`) and subscription matching (`TopicSet` and `Filter::matches`, the
//! two halves of `fanout::selects`) against a filter parsed once.
//!
//! Run with `cargo bench --bench matching`; figures are in docs/benchmarks.md.

mod common;

use std::hint::black_box;

use actionhub::ingest::event::Event;
use actionhub::ingest::lifecycle::{ActionState, MediaType};
use actionhub::ingest::topic::{EventKeys, Filter, TopicSet};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use uuid::Uuid;

fn lifecycle_checks(c: &mut Criterion) {
    let mut group = c.benchmark_group("lifecycle");
    group.bench_function("check allowed (offered -> accepted)", |b| {
        b.iter(|| {
            MediaType::Webchat
                .check(
                    black_box(Some(ActionState::Offered)),
                    black_box(ActionState::Accepted),
                )
                .is_ok()
        })
    });
    group.bench_function("check refused (ended -> engaged)", |b| {
        b.iter(|| {
            MediaType::Webchat
                .check(
                    black_box(Some(ActionState::Ended)),
                    black_box(ActionState::Engaged),
                )
                .is_err()
        })
    });
    group.finish();
}

/// The keys of a webchat `engaged` event of `customer`.
fn keys_of(customer: Uuid) -> EventKeys {
    let event = Event::from_json(json!({
        "actionId": Uuid::new_v4(),
        "actionState": "engaged",
        "actionMediaType": "webchat",
        "actionMapId": Uuid::new_v4(),
        "actionMapVersion": 3,
        "customerId": customer,
        "sessionId": Uuid::new_v4(),
    }))
    .expect("valid event");
    match event {
        Event::Lifecycle(e) => e.keys(),
        Event::Visitor(_) => unreachable!("a lifecycle event"),
    }
}

fn filter_matching(c: &mut Criterion) {
    let customer = Uuid::new_v4();
    let hit = keys_of(customer);
    let miss = keys_of(Uuid::new_v4());
    // What the load generator's customer subscribers ask for.
    let topics = TopicSet::parse_patterns(["all"]).expect("pattern");
    let by_customer = Filter::parse(&json!({"customerId": [customer]})).expect("filter");
    let three_fields = Filter::parse(&json!({
        "customerId": [Uuid::new_v4(), customer],
        "actionMapVersion": [2, 3],
        "sessionId": [hit.session.expect("session").to_string()],
    }))
    .expect("filter");
    assert!(by_customer.matches(&hit, || None) && !by_customer.matches(&miss, || None));
    assert!(three_fields.matches(&hit, || None));

    let selects = |filter: &Filter, keys: &EventKeys| {
        topics.contains(keys.topic) && filter.matches(keys, || None)
    };
    let mut group = c.benchmark_group("filter");
    group.bench_function("customerId filter, match", |b| {
        b.iter(|| selects(black_box(&by_customer), black_box(&hit)))
    });
    group.bench_function("customerId filter, no match", |b| {
        b.iter(|| selects(black_box(&by_customer), black_box(&miss)))
    });
    group.bench_function("three-field filter, match", |b| {
        b.iter(|| selects(black_box(&three_fields), black_box(&hit)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::short_runs();
    targets = lifecycle_checks, filter_matching
}
criterion_main!(benches);
