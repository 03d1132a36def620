//! Issue 11, items 7 and 12: what one customer or profile can hold is bounded (a browser
//! token cannot grow the hub), customers and profiles idle past their age are forgotten the
//! same way after a restart, and the long reads page instead of scanning everything.

use actionhub::Config;
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

/// The refusal must be `too_large` naming `limit` and the field that grew.
fn assert_profile_full(reply: &Value, limit: &str, field: &str) {
    assert_error(reply, "too_large", Some(field));
    assert_eq!(reply["details"]["limit"], json!(limit), "{reply}");
}

#[tokio::test]
async fn a_profile_cannot_grow_past_its_limits_from_a_server_or_a_browser() {
    let hub = Hub::start_with(with_tokens).await;
    let visitor = Visitor::new();
    // User ids: a browser token links only the one it carries, so only a server can try
    // to link more.
    let mut server = hub.client_with(json!({"apiKey": ADMIN})).await;
    for n in 0..32 {
        server
            .publish_ok(visitor.event("identify", &format!("u-{n}")))
            .await;
    }
    let refused = server.publish(visitor.event("identify", "u-32")).await;
    assert_profile_full(&refused, "userIdsPerProfile", "userId");
    // A user id the profile already links is no growth.
    server.publish_ok(visitor.event("identify", "u-7")).await;

    let token = sign(
        SECRET,
        json!({"sub": visitor.customer_id, "uid": "u-0", "exp": unix_now() + 600}),
    );
    let mut browser = hub.client_with(json!({"token": token})).await;
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
    assert_eq!(view["attributes"]["t0"], json!("small"));
    assert!(
        view["attributes"].get("t4").is_none(),
        "refused traits are not kept"
    );
    let (_, _, metrics) = http.get_text("/metrics").await;
    assert!(
        metrics.contains("actionhub_limits_hit_total{limit=\"profile_size\"} 2"),
        "both refusals are counted"
    );
}

#[tokio::test]
async fn a_channel_claim_that_would_pass_a_profile_limit_is_refused_whole() {
    let hub = Hub::start().await;
    let http = hub.http();
    let through = |browser: &Visitor, channels: Value| {
        browser
            .event("identify", "")
            .without("userId")
            .with("channels", channels)
    };
    // A hundred browsers, each claiming the same WhatsApp id: one visitor, full.
    let browsers: Vec<Visitor> = (0..100).map(|_| Visitor::new()).collect();
    let events: Vec<Value> = browsers
        .iter()
        .map(|b| through(b, json!({"whatsapp": "w-full"})))
        .collect();
    for result in http.publish(&Value::Array(events)).await {
        assert!(result["seq"].is_u64(), "accepted: {result}");
    }
    let extra = Visitor::new();
    let results = http
        .publish(&json!([through(
            &extra,
            json!({"telegram": "t-extra", "whatsapp": "w-full"})
        )]))
        .await;
    let refused = &results[0]["error"];
    assert_eq!(refused["code"], json!("too_large"), "{refused}");
    assert_eq!(refused["details"]["limit"], json!("customersPerProfile"));
    // Refused whole: its other channel id names no one.
    assert_http_error(
        &http.get("/v1/visitors/by-channel/telegram/t-extra").await,
        404,
        "not_found",
    );
    let (_, view) = http.get("/v1/visitors/by-channel/whatsapp/w-full").await;
    assert_eq!(view["customers"].as_array().map(Vec::len), Some(100));
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

#[tokio::test]
async fn idle_visitors_are_forgotten_and_stay_forgotten_after_a_restart() {
    let hub = Hub::start_with(|c| {
        c.visitor_idle_age = std::time::Duration::from_millis(1500);
        // A sweep every 100 ms; snapshots after every event, so a restart after the
        // eviction (which is no event) starts from a snapshot taken before it and must
        // replay it from the log.
        c.session_idle_timeout = std::time::Duration::from_millis(400);
        c.snapshot_every_events = 1;
    })
    .await;
    let http = hub.http();
    let (idle, lone, active) = (Visitor::new(), Visitor::new(), Visitor::new());
    let action = idle.action("webchat");
    http.publish(&json!([
        idle.event("identify", "u-idle"),
        action.event("offered"),
        lone.page(),
        active.page(),
    ]))
    .await;
    let gone = |path: String| {
        let http = &http;
        async move { http.get(&path).await.0 == 404 }
    };
    // The active visitor keeps publishing while the others go idle.
    let forgotten = bounded(WAIT, "idle visitors to be forgotten", async {
        loop {
            http.publish(&json!([active.page()])).await;
            if gone(format!("/v1/visitors/{}", idle.customer_id)).await
                && gone(format!("/v1/visitors/{}", lone.customer_id)).await
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    forgotten.await;
    let forgotten_paths = [
        format!("/v1/visitors/{}", idle.customer_id),
        "/v1/visitors/user:u-idle".to_string(),
        format!("/v1/customers/{}", idle.customer_id),
        format!("/v1/actions/{}", action.action_id),
        format!("/v1/visitors/{}", lone.customer_id),
    ];
    let check = |http: Http| {
        let paths = forgotten_paths.clone();
        let events = format!("/v1/customers/{}/events", idle.customer_id);
        async move {
            for path in paths {
                assert_eq!(http.get(&path).await.0, 404, "{path} is forgotten");
            }
            // The history keeps the idle visitor's events as long as retention says.
            let (status, page) = http.get(&events).await;
            assert_eq!(status, 200, "{page}");
            assert!(
                page["events"].as_array().is_some_and(|e| !e.is_empty()),
                "{page}"
            );
        }
    };
    check(hub.http()).await;
    let (status, view) = http
        .get(&format!("/v1/visitors/{}", active.customer_id))
        .await;
    assert_eq!(status, 200, "the active visitor stays: {view}");
    let hub = hub.restart().await;
    check(hub.http()).await;
    hub.shutdown().await;
}
