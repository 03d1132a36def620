//! What live segment membership costs a profile change: `HubState::segment_moves`, which
//! the sequencer runs for every visitor a change touched (building the visitor as the
//! conditions read it, then evaluating every segment), with 1, 100 and 1,000 segments
//! (the bound) of two conditions each, on a visitor with traits and a company.
//!
//! Run with `cargo bench --bench segments`; figures are in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use actionhub::hub::segments::{Segment, SegmentSpec};
use actionhub::hub::state::{AdminOp, HubState};
use actionhub::ids::{CustomerId, SegmentId, Seq};
use actionhub::ingest::event::{Event, Published};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use uuid::Uuid;

/// Segment `n` of a mix of the kinds of condition a site writes.
fn definition(n: usize) -> Value {
    let conditions = match n % 5 {
        0 => json!([
            {"field": "attributes.plan", "operator": "equals", "value": format!("plan-{n}")},
            {"field": "sessionCount", "operator": "gte", "value": 2}]),
        1 => json!([
            {"field": "attributes.seats", "operator": "gt", "value": n},
            {"field": "identity.state", "operator": "in", "value": ["recognized", "authenticated"]}]),
        2 => json!([
            {"field": "email", "operator": "contains", "value": format!("@example-{n}")},
            {"field": "attributes.trial", "operator": "exists"}]),
        3 => json!([
            {"field": "company.tier", "operator": "equals", "value": format!("tier-{n}")},
            {"field": "lastSeenAt", "operator": "gt", "value": "2026-01-01T00:00:00Z"}]),
        _ => json!([
            {"field": "browser.name", "operator": "equals", "value": "Chrome"},
            {"field": "attributes.plan", "operator": "starts_with", "value": format!("p{n}")}]),
    };
    json!({"name": format!("segment {n}"), "conditions": conditions})
}

/// A state holding one identified visitor (with traits and a company) and `segments`
/// segments; returns it with the visitor's customer.
fn state_with(segments: usize) -> (HubState, CustomerId) {
    let state = HubState::default();
    let customer = Uuid::new_v4().to_string();
    let identify = json!({
        "type": "identify", "customerId": customer, "userId": "u-1",
        "traits": {"plan": "premium", "seats": 40, "trial": false, "email": "ada@example.test"},
        "company": {"id": "acme", "name": "Acme", "tier": "gold"},
    });
    let event = Event::from_json(identify).expect("a valid identify");
    state.apply(&Published {
        seq: Seq(1),
        timestamp: 1_767_225_600_000,
        body: event.into(),
    });
    for n in 0..segments {
        let spec = SegmentSpec::parse(&definition(n)).expect("a valid definition");
        let segment = Segment {
            id: SegmentId(n as u64 + 1),
            spec,
            created_at: 0,
            updated_at: 0,
        };
        state.apply_admin(&AdminOp::PutSegment { segment }, Seq(2 + n as u64));
    }
    (state, CustomerId::parse(&customer).expect("a uuid"))
}

fn profile_change(c: &mut Criterion) {
    let mut group = c.benchmark_group("segments");
    for segments in [1, 100, 1000] {
        let (state, customer) = state_with(segments);
        let visitor = state.visitor_of(customer);
        group.bench_function(format!("moves of one visitor, {segments} segments"), |b| {
            b.iter(|| state.segment_moves(black_box(visitor)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = profile_change
}
criterion_main!(benches);
