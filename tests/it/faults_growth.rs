//! Issue 11, items 7 and 12: what one customer or profile can hold is bounded (a browser
//! token cannot grow the hub), customers and profiles idle past their age are forgotten the
//! same way after a restart, and the long reads page instead of scanning everything.

use std::time::{SystemTime, UNIX_EPOCH};

use actionhub::Config;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::*;

const SECRET: &str = "growth-secret-0123456789abcdef0123456789";
const ADMIN: &str = "pk-admin";

/// A hub with a JWT secret and one all-scopes key, so tokens can connect.
fn with_tokens(config: &mut Config) {
    config.api_keys = format!("{ADMIN}=publish+subscribe+admin")
        .parse()
        .expect("keys");
    config.jwt_secrets = SECRET.parse().expect("secrets");
}

/// A WebSocket connected with a browser token for `customer`.
async fn token_client(hub: &Hub, customer: &str) -> Client {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": customer, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    let mut client = hub.raw_client().await;
    let reply = client.connect_with(json!({"token": token})).await;
    assert_type(&reply, "connected");
    client
}

/// The refusal must be `too_large` naming `limit` and the field that grew.
fn assert_profile_full(reply: &Value, limit: &str, field: &str) {
    assert_error(reply, "too_large", Some(field));
    assert_eq!(reply["details"]["limit"], json!(limit), "{reply}");
}

#[tokio::test]
async fn a_token_cannot_grow_its_profile_past_the_limits() {
    let hub = Hub::start_with(with_tokens).await;
    let visitor = Visitor::new();
    let mut browser = token_client(&hub, &visitor.customer_id).await;
    for n in 0..32 {
        browser
            .publish_ok(visitor.event("identify", &format!("u-{n}")))
            .await;
    }
    let refused = browser.publish(visitor.event("identify", "u-32")).await;
    assert_profile_full(&refused, "userIdsPerProfile", "userId");
    // A user id the profile already links is no growth.
    browser.publish_ok(visitor.event("identify", "u-7")).await;

    // Traits: each event's are at most 4 KiB, the profile's at most 16 KiB.
    let big = "x".repeat(3900);
    for n in 0..4 {
        browser
            .publish_ok(
                visitor
                    .event("identify", "u-0")
                    .with("traits", json!({ format!("t{n}"): big })),
            )
            .await;
    }
    let refused = browser
        .publish(
            visitor
                .event("identify", "u-0")
                .with("traits", json!({ "t4": big })),
        )
        .await;
    assert_profile_full(&refused, "profileTraitsBytes", "traits");
    // Replacing a trait's value does not grow the profile.
    browser
        .publish_ok(
            visitor
                .event("identify", "u-0")
                .with("traits", json!({ "t0": "small" })),
        )
        .await;

    let http = hub.http_with(&[("x-api-key", ADMIN)]);
    let (status, view) = http
        .get(&format!("/v1/visitors/{}", visitor.customer_id))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["userIds"].as_array().map(Vec::len), Some(32), "{view}");
    assert_eq!(view["traits"]["t0"], json!("small"));
    assert!(
        view["traits"].get("t4").is_none(),
        "refused traits are not kept"
    );
    let (_, _, metrics) = http.get_text("/metrics").await;
    assert!(
        metrics.contains("actionhub_limits_hit_total{limit=\"profile_size\"} 2"),
        "both refusals are counted"
    );
}

#[tokio::test]
async fn a_profile_holds_at_most_its_customers_and_merges_stay_inside_it() {
    let hub = Hub::start().await;
    let http = hub.http();
    let browsers: Vec<Visitor> = (0..101).map(|_| Visitor::new()).collect();
    let events: Vec<Value> = browsers
        .iter()
        .map(|b| b.event("identify", "u-shared"))
        .collect();
    let results = http.publish(&Value::Array(events)).await;
    for result in &results[..100] {
        assert!(result["seq"].is_u64(), "accepted: {result}");
    }
    let refused = &results[100]["error"];
    assert_eq!(refused["code"], json!("too_large"), "{refused}");
    assert_eq!(refused["details"]["limit"], json!("customersPerProfile"));

    // Merging another visitor in through the API is held to the same limit.
    let lone = Visitor::new();
    http.publish(&json!([lone.page()])).await;
    let answer = http
        .post(
            "/v1/visitors/merge",
            &json!({"sourceVisitorId": lone.customer_id, "targetVisitorId": "user:u-shared"}),
        )
        .await;
    assert_http_error(&answer, 413, "too_large");
    assert_eq!(
        answer.1["error"]["details"]["limit"],
        json!("customersPerProfile")
    );

    // And so are attributes set through the API.
    let big = "y".repeat(3900);
    for n in 0..4 {
        let (status, body) = http
            .put(
                &format!("/v1/visitors/{}", lone.customer_id),
                &json!({"attributes": { format!("a{n}"): big }}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let answer = http
        .put(
            &format!("/v1/visitors/{}", lone.customer_id),
            &json!({"attributes": { "a4": big }}),
        )
        .await;
    assert_http_error(&answer, 413, "too_large");
    assert_eq!(
        answer.1["error"]["details"]["limit"],
        json!("profileTraitsBytes")
    );
}
