//! Visitor events and what the hub makes of them (PROTOCOL.md section 3): required fields,
//! sessions started, replaced, signed out and idle, identity states, and profile merges.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    assert_error, assert_event, assert_type, seq_of, topics, uuid, Action, Client, Hub, JsonExt,
    Visitor, NOT_V4_UUID,
};

/// A subscriber to everything about one customer.
async fn watch_customer(hub: &Hub, visitor: &Visitor) -> Client {
    let mut subscriber = hub.client().await;
    let filter = json!({"customerId": [visitor.customer_id]});
    subscriber
        .subscribe_to("customer", &["all"], Some(filter))
        .await;
    subscriber
}

/// The identity of a customer as `GET /v1/customers/{id}` reports it.
async fn customer(hub: &Hub, visitor: &Visitor) -> Value {
    let (status, body) = hub
        .http()
        .get(&format!("/v1/customers/{}", visitor.customer_id))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Asserts a hub-made session event for `visitor`'s `session`.
fn assert_session_event(
    frame: &Value,
    visitor: &Visitor,
    session: &str,
    ended_reason: Option<&str>,
) {
    let event = &frame["event"];
    assert_eq!(event["customerId"], json!(visitor.customer_id), "{frame}");
    assert_eq!(event["sessionId"], json!(session), "{frame}");
    assert!(event["startedAt"].is_string(), "startedAt: {frame}");
    match ended_reason {
        None => assert_eq!(frame["topic"], json!("session:started"), "{frame}"),
        Some(reason) => {
            assert_eq!(frame["topic"], json!("session:ended"), "{frame}");
            assert_eq!(event["reason"], json!(reason), "{frame}");
            assert!(event["endedAt"].is_string(), "endedAt: {frame}");
            assert!(event["durationMs"].is_u64(), "durationMs: {frame}");
            assert!(event["pagesViewed"].is_u64(), "pagesViewed: {frame}");
        }
    }
}

/// Asserts `frame` is the `ignored` event the hub publishes for `action` when its session
/// ends: the action's own fields, the ignored state and `data.reason`.
fn assert_ignored_by_the_hub(frame: &Value, action: &Action) {
    assert_eq!(frame["topic"], json!(action.topic("ignored")), "{frame}");
    let event = &frame["event"];
    for (key, value) in action.event("ignored").as_object().expect("object") {
        assert_eq!(&event[key], value, "{key}: {frame}");
    }
    assert_eq!(event["customerIdType"], json!("cookie"), "{frame}");
    assert_eq!(event["data"], json!({"reason": "session_ended"}), "{frame}");
}

/// Asserts `frames` have strictly increasing seqs.
fn assert_in_seq_order(frames: &[Value]) {
    let seqs: Vec<u64> = frames.iter().map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "seq order: {seqs:?}"
    );
}

/// What the hub must do with a published event.
enum Outcome {
    /// Accept it and deliver it under this topic.
    Delivered(&'static str),
    /// Refuse it with `invalid_event`, naming this field (when the protocol names one).
    Invalid(Option<&'static str>),
}

#[tokio::test]
async fn visitor_events_need_the_fields_their_type_requires() {
    use Outcome::{Delivered, Invalid};
    // Every row is a new customer with a user of its own, so no two rows merge profiles.
    let fresh = |kind: &str| Visitor::new().event(kind, &format!("user-{}", uuid()));
    // Each row: a name, a visitor event, and what the hub must make of it.
    let cases: Vec<(&str, Value, Outcome)> = vec![
        (
            "identify without session",
            fresh("identify").without("sessionId"),
            Delivered("visitor:identify"),
        ),
        (
            "track without session",
            fresh("track").without("sessionId"),
            Delivered("visitor:track"),
        ),
        ("page", fresh("page"), Delivered("visitor:page")),
        ("userinfo", fresh("userinfo"), Delivered("visitor:userinfo")),
        ("signin", fresh("signin"), Delivered("visitor:signin")),
        ("signout", fresh("signout"), Delivered("visitor:signout")),
        (
            "identify with traits and channels",
            fresh("identify")
                .with("traits", json!({"name": "Ann"}))
                .with("channels", json!({"whatsapp": "10435685475"})),
            Delivered("visitor:identify"),
        ),
        (
            "track with properties",
            fresh("track").with("properties", json!({"sku": "A-1"})),
            Delivered("visitor:track"),
        ),
        (
            "signin without session",
            fresh("signin").without("sessionId"),
            Invalid(Some("sessionId")),
        ),
        (
            "signout without session",
            fresh("signout").without("sessionId"),
            Invalid(Some("sessionId")),
        ),
        (
            "userinfo without session",
            fresh("userinfo").without("sessionId"),
            Invalid(Some("sessionId")),
        ),
        (
            "page without session",
            fresh("page").without("sessionId"),
            Invalid(Some("sessionId")),
        ),
        (
            "identify without userId",
            fresh("identify").without("userId"),
            Invalid(Some("userId")),
        ),
        (
            "signin without userId",
            fresh("signin").without("userId"),
            Invalid(Some("userId")),
        ),
        (
            "userinfo without userId",
            fresh("userinfo").without("userId"),
            Invalid(Some("userId")),
        ),
        (
            "track without name",
            fresh("track").without("name"),
            Invalid(Some("name")),
        ),
        (
            "page without url",
            fresh("page").with("page", json!({"title": "T"})),
            Invalid(Some("page.url")),
        ),
        (
            "no customerId",
            fresh("page").without("customerId"),
            Invalid(Some("customerId")),
        ),
        (
            "customerId not v4",
            fresh("page").with("customerId", json!(NOT_V4_UUID)),
            Invalid(Some("customerId")),
        ),
        (
            "unknown type",
            fresh("page").with("type", json!("purchase")),
            Invalid(Some("type")),
        ),
        (
            "userId over 256",
            fresh("identify").with("userId", json!("u".repeat(257))),
            Invalid(Some("userId")),
        ),
        (
            "traits not an object",
            fresh("identify").with("traits", json!("Ann")),
            Invalid(Some("traits")),
        ),
        (
            "traits over 4 KiB",
            fresh("identify").with("traits", json!({"pad": "x".repeat(4200)})),
            Invalid(Some("traits")),
        ),
        (
            "properties over 4 KiB",
            fresh("track").with("properties", json!({"pad": "x".repeat(4200)})),
            Invalid(Some("properties")),
        ),
        (
            "unknown field",
            fresh("page").with("pageUrl", json!("https://x.example")),
            Invalid(Some("pageUrl")),
        ),
        (
            "both type and actionId",
            fresh("page").with("actionId", json!(uuid())),
            Invalid(None),
        ),
        (
            "neither type nor actionId",
            fresh("page").without("type"),
            Invalid(None),
        ),
    ];
    let hub = Hub::start().await;
    let mut publisher = hub.client().await;
    let mut subscriber = hub.client().await;
    subscriber
        .subscribe_to("visitors", &["visitor:all"], None)
        .await;
    for (name, event, expected) in cases {
        let reply = publisher.publish(event.clone()).await;
        match expected {
            Delivered(topic) => {
                assert_type(&reply, "published");
                let delivered = assert_event(&subscriber.next_event().await, seq_of(&reply), topic);
                assert_eq!(delivered["customerId"], event["customerId"], "{name}");
                assert_eq!(delivered["type"], event["type"], "{name}");
            }
            Invalid(field) => {
                assert_eq!(reply["code"], json!("invalid_event"), "{name}: {reply}");
                assert_error(&reply, "invalid_event", field);
            }
        }
    }
    subscriber.expect_no_frame().await;
}

#[tokio::test]
async fn the_first_event_of_a_session_starts_it_once() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let mut subscriber = watch_customer(&hub, &visitor).await;
    let mut publisher = hub.client().await;
    let first = publisher.publish_ok(visitor.page()).await;
    let second = publisher.publish_ok(visitor.page()).await;
    let frames = subscriber.events(3).await;
    assert_eq!(
        topics(&frames),
        ["session:started", "visitor:page", "visitor:page"]
    );
    assert_session_event(&frames[0], &visitor, &visitor.session_id, None);
    assert!(seq_of(&frames[0]) < first);
    assert_eq!([seq_of(&frames[1]), seq_of(&frames[2])], [first, second]);
    subscriber.expect_no_frame().await;
}

#[tokio::test]
async fn a_new_session_ends_the_old_one_and_ignores_its_offered_actions() {
    let hub = Hub::start().await;
    let mut visitor = Visitor::new();
    let old_session = visitor.session_id.clone();
    let mut subscriber = watch_customer(&hub, &visitor).await;
    let mut publisher = hub.client().await;
    publisher.publish_ok(visitor.page()).await;
    let chat = visitor.action("webchat");
    let offer = visitor.action("contentoffer");
    let accepted = visitor.action("webchat");
    for event in [
        chat.event("offered"),
        offer.event("offered"),
        accepted.event("offered"),
        accepted.event("accepted"),
    ] {
        publisher.publish_ok(event).await;
    }
    let before = subscriber.events(6).await;
    assert_eq!(topics(&before)[..2], ["session:started", "visitor:page"]);

    let new_session = visitor.new_session();
    let trigger = publisher.publish_ok(visitor.page()).await;
    let frames = subscriber.events(5).await;
    assert_in_seq_order(&frames);
    assert_session_event(&frames[0], &visitor, &old_session, Some("replaced"));
    assert_eq!(frames[0]["event"]["pagesViewed"], json!(1));
    // Exactly the still-offered actions are ignored, in either order.
    let mut ignored = Vec::new();
    for frame in &frames[1..3] {
        let action = [&chat, &offer]
            .into_iter()
            .find(|action| frame["event"]["actionId"] == json!(action.action_id))
            .unwrap_or_else(|| panic!("only still-offered actions are ignored: {frame}"));
        assert_ignored_by_the_hub(frame, action);
        ignored.push(action.action_id.clone());
    }
    assert_ne!(ignored[0], ignored[1], "each action is ignored once");
    assert_session_event(&frames[3], &visitor, &new_session, None);
    assert_eq!(frames[4]["topic"], json!("visitor:page"));
    assert_eq!(seq_of(&frames[4]), trigger);
    subscriber.expect_no_frame().await;

    // The ignored action is closed; the accepted one lives on.
    publisher
        .publish_refused(chat.event("accepted"), "action_terminal", None)
        .await;
    let (_, view) = hub
        .http()
        .get(&format!("/v1/actions/{}", accepted.action_id))
        .await;
    assert_eq!(view["actionState"], json!("accepted"), "{view}");
}

#[tokio::test]
async fn signin_authenticates_and_signout_ends_the_session() {
    let hub = Hub::start().await;
    let mut visitor = Visitor::new();
    let first_session = visitor.session_id.clone();
    let mut subscriber = watch_customer(&hub, &visitor).await;
    let mut publisher = hub.client().await;
    publisher.publish_ok(visitor.page()).await;
    subscriber.events(2).await;
    assert_eq!(
        customer(&hub, &visitor).await["identity"]["state"],
        json!("anonymous")
    );

    let signed_in_session = visitor.new_session();
    let signin = publisher
        .publish_ok(visitor.event("signin", "user-7"))
        .await;
    let frames = subscriber.events(3).await;
    assert_eq!(
        topics(&frames),
        ["session:ended", "session:started", "visitor:signin"]
    );
    assert_in_seq_order(&frames);
    assert_session_event(&frames[0], &visitor, &first_session, Some("replaced"));
    assert_session_event(&frames[1], &visitor, &signed_in_session, None);
    assert_eq!(seq_of(&frames[2]), signin);
    let identity = customer(&hub, &visitor).await;
    assert_eq!(
        identity["identity"],
        json!({"state": "authenticated", "userId": "user-7"})
    );
    assert_eq!(identity["currentSessionId"], json!(signed_in_session));

    let signout = publisher.publish_ok(visitor.event("signout", "")).await;
    let frames = subscriber.events(2).await;
    assert_eq!(topics(&frames), ["visitor:signout", "session:ended"]);
    assert_eq!(seq_of(&frames[0]), signout);
    assert_session_event(&frames[1], &visitor, &signed_in_session, Some("signout"));
    assert_eq!(
        customer(&hub, &visitor).await["identity"]["state"],
        json!("anonymous")
    );
    subscriber.expect_no_frame().await;
}

#[tokio::test]
async fn identity_state_follows_the_visitor_events() {
    // Each row: the visitor events in order (signin always in a new session), and the
    // identity state that results.
    let rows: [(&[&str], &str); 8] = [
        (&["page"], "anonymous"),
        (&["identify"], "recognized"),
        (&["page", "userinfo"], "recognized"),
        (&["signin"], "authenticated"),
        (&["signin", "identify"], "authenticated"),
        (&["signin", "userinfo"], "recognized"),
        (&["signin", "signout"], "anonymous"),
        (&["identify", "signout"], "anonymous"),
    ];
    let hub = Hub::start().await;
    let mut publisher = hub.client().await;
    for (steps, state) in rows {
        let mut visitor = Visitor::new();
        let user = format!("user-{}", uuid());
        for kind in steps {
            if *kind == "signin" {
                visitor.new_session();
            }
            publisher.publish_ok(visitor.event(kind, &user)).await;
        }
        let identity = &customer(&hub, &visitor).await["identity"];
        assert_eq!(identity["state"], json!(state), "{steps:?}: {identity}");
        if state != "anonymous" {
            assert_eq!(identity["userId"], json!(user), "{steps:?}: {identity}");
        }
    }
}

#[tokio::test]
async fn a_user_id_on_a_second_customer_merges_the_profiles() {
    let hub = Hub::start().await;
    let mut publisher = hub.client().await;
    let mut merges = hub.client().await;
    merges
        .subscribe_to("merges", &["visitor:merged"], None)
        .await;
    let (first, second, stranger) = (Visitor::new(), Visitor::new(), Visitor::new());
    let user = format!("user-{}", uuid());

    publisher.publish_ok(first.event("identify", &user)).await;
    // Linking the same customer again merges nothing.
    publisher.publish_ok(first.event("identify", &user)).await;
    merges.expect_no_frame().await;

    let identify = publisher.publish_ok(second.event("identify", &user)).await;
    let merged = merges.next_event().await;
    assert_eq!(merged["topic"], json!("visitor:merged"));
    let event = &merged["event"];
    assert_eq!(event["customerId"], json!(second.customer_id), "{merged}");
    assert_eq!(
        event["visitorId"],
        json!(first.customer_id),
        "the first customer names the profile"
    );
    assert_eq!(event["userId"], json!(user));
    let mut merged_ids: Vec<String> = serde_json::from_value(event["mergedCustomerIds"].clone())
        .expect("mergedCustomerIds is a list of strings");
    merged_ids.sort();
    let mut expected = vec![first.customer_id.clone(), second.customer_id.clone()];
    expected.sort();
    assert_eq!(merged_ids, expected);
    assert_ne!(seq_of(&merged), identify);
    assert_eq!(
        customer(&hub, &second).await["visitorId"],
        json!(first.customer_id)
    );

    // A `userId` filter now matches both customers, and only them.
    let mut by_user = hub.client().await;
    by_user
        .subscribe_to("user", &["visitor:page"], Some(json!({"userId": [user]})))
        .await;
    let mut expected_seqs = Vec::new();
    for visitor in [&first, &stranger, &second] {
        let seq = publisher.publish_ok(visitor.page()).await;
        if visitor.customer_id != stranger.customer_id {
            expected_seqs.push(seq);
        }
    }
    // Two customers: no order between them is promised.
    let mut delivered: Vec<u64> = by_user.event_seqs(2).await;
    delivered.sort_unstable();
    assert_eq!(delivered, expected_seqs);
    by_user.expect_no_frame().await;
}

#[tokio::test]
async fn an_idle_session_ends_and_its_offered_actions_are_ignored() {
    let hub = Hub::start_with(|c| c.session_idle_timeout = Duration::from_millis(300)).await;
    let visitor = Visitor::new();
    let mut subscriber = hub.client().await;
    let filter = json!({"customerId": [visitor.customer_id]});
    subscriber
        .subscribe_to("ends", &["session:ended", "webchat:ignored"], Some(filter))
        .await;
    let mut publisher = hub.client().await;
    let chat = visitor.action("webchat");
    publisher.publish_ok(chat.event("offered")).await;
    let frames = subscriber.events(2).await;
    assert_session_event(&frames[0], &visitor, &visitor.session_id, Some("idle"));
    assert_eq!(frames[0]["event"]["pagesViewed"], json!(0));
    assert_ignored_by_the_hub(&frames[1], &chat);
    assert_in_seq_order(&frames);
}

#[tokio::test]
async fn session_started_carries_the_user_id_once_known() {
    let hub = Hub::start().await;
    let mut visitor = Visitor::new();
    let mut subscriber = hub.client().await;
    let filter = json!({"customerId": [visitor.customer_id]});
    subscriber
        .subscribe_to("starts", &["session:started"], Some(filter))
        .await;
    let mut publisher = hub.client().await;
    publisher.publish_ok(visitor.page()).await;
    let anonymous = subscriber.next_event().await;
    assert!(
        anonymous["event"].get("userId").is_none_or(Value::is_null),
        "{anonymous}"
    );

    let identify = visitor.event("identify", "user-3").without("sessionId");
    publisher.publish_ok(identify).await;
    let session = visitor.new_session();
    publisher.publish_ok(visitor.page()).await;
    let known = subscriber.next_event().await;
    assert_session_event(&known, &visitor, &session, None);
    assert_eq!(known["event"]["userId"], json!("user-3"));
}
