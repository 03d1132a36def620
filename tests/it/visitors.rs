//! The visitor API over HTTP: views by customerId and by `user:<userId>`, search and
//! paging, channels, sessions and events across a visitor's customers, exports, and merges
//! asked for through the API (published as `visitor:merged`, refusals changing nothing).

use serde_json::{json, Value};

use crate::support::{assert_http_error, merged_customers, sorted_ids, Hub, JsonExt, Visitor};

/// Publishes over HTTP and checks every event was accepted.
async fn publish_all(hub: &Hub, events: Vec<Value>) {
    for result in hub.http().publish(&Value::Array(events)).await {
        assert!(result["seq"].is_u64(), "refused: {result}");
    }
}

fn customers_of(view: &Value) -> Vec<String> {
    sorted_ids(&view["customers"])
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn an_anonymous_customer_is_a_visitor_of_its_own() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    publish_all(&hub, vec![visitor.page()]).await;
    let (status, view) = hub
        .http()
        .get(&format!("/v1/visitors/{}", visitor.customer_id))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["visitorId"], json!(visitor.customer_id));
    assert_eq!(
        view["identity"],
        json!({"state": "anonymous", "userId": null})
    );
    assert_eq!(view["identified"], json!(false));
    assert_eq!(customers_of(&view), vec![visitor.customer_id.clone()]);
    assert_eq!(view["counts"]["pagesViewed"], json!(1));
    assert_eq!(view["sessions"], json!({"total": 1, "active": 1}));
}

#[tokio::test]
async fn a_user_on_two_browsers_is_one_visitor_from_either_id() {
    let hub = Hub::start().await;
    let (laptop, phone) = (Visitor::new(), Visitor::new());
    let traits = json!({"name": "Alice Example", "email": "alice@shop.example"});
    publish_all(
        &hub,
        vec![
            laptop
                .event("identify", "alice")
                .with("traits", traits.clone()),
            phone.event("signin", "alice"),
            phone.page(),
        ],
    )
    .await;
    let http = hub.http();
    let (status, by_user) = http.get("/v1/visitors/user:alice").await;
    assert_eq!(status, 200, "{by_user}");
    assert_eq!(
        customers_of(&by_user),
        sorted(vec![laptop.customer_id.clone(), phone.customer_id.clone()])
    );
    assert_eq!(by_user["name"], json!("Alice Example"));
    assert_eq!(by_user["email"], json!("alice@shop.example"));
    assert_eq!(by_user["attributes"], json!({}));
    assert_eq!(by_user["userIds"], json!(["alice"]));
    assert_eq!(by_user["identified"], json!(true));
    // The visitor is as identified as its best-identified customer (the signed-in phone).
    assert_eq!(
        by_user["identity"],
        json!({"state": "authenticated", "userId": "alice"})
    );
    for id in [&laptop.customer_id, &phone.customer_id] {
        let (_, view) = http.get(&format!("/v1/visitors/{id}")).await;
        assert_eq!(view["visitorId"], by_user["visitorId"], "from {id}");
    }
    let (_, sessions) = http.get("/v1/visitors/user:alice/sessions").await;
    let sessions = sessions["sessions"].as_array().expect("sessions").clone();
    assert_eq!(sessions.len(), 2, "one session per browser: {sessions:?}");
    let (_, events) = http.get("/v1/visitors/user:alice/events").await;
    let seqs: Vec<u64> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq order: {seqs:?}");
    let topics: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["topic"].as_str().expect("topic"))
        .collect();
    for topic in [
        "visitor:identify",
        "visitor:signin",
        "visitor:merged",
        "visitor:page",
    ] {
        assert!(topics.contains(&topic), "{topic} missing from {topics:?}");
    }
}

#[tokio::test]
async fn search_identified_and_paging() {
    let hub = Hub::start().await;
    let named = |name: &str, email: &str| json!({"name": name, "email": email});
    let (alice, bob, carol, anon) = (
        Visitor::new(),
        Visitor::new(),
        Visitor::new(),
        Visitor::new(),
    );
    publish_all(
        &hub,
        vec![
            alice
                .event("identify", "u-alice")
                .with("traits", named("Alice", "a@x.example")),
            bob.event("identify", "u-bob")
                .with("traits", named("Bob", "bob@y.example")),
            carol.event("identify", "u-carol"),
            anon.page(),
        ],
    )
    .await;
    let http = hub.http();
    let total = |query: &'static str| {
        let http = &http;
        async move {
            let (status, answer) = http.get(&format!("/v1/visitors{query}")).await;
            assert_eq!(status, 200, "{query}: {answer}");
            answer["total"].as_u64().expect("total")
        }
    };
    assert_eq!(total("").await, 4);
    assert_eq!(total("?identified=true").await, 3);
    assert_eq!(total("?identified=false").await, 1);
    assert_eq!(total("?search=ALI").await, 1, "case-insensitive name");
    assert_eq!(total("?search=y.example").await, 1, "email");
    assert_eq!(total("?search=u-c").await, 1, "userId");
    assert_eq!(total("?search=nobody").await, 0);
    let (_, page2) = http.get("/v1/visitors?limit=3&page=2").await;
    assert_eq!(page2["total"], json!(4));
    assert_eq!(page2["visitors"].as_array().expect("visitors").len(), 1);
    for bad in ["?identified=yes", "?limit=0", "?page=0", "?colour=red"] {
        assert_http_error(
            &http.get(&format!("/v1/visitors{bad}")).await,
            400,
            "bad_request",
        );
    }
}

#[tokio::test]
async fn channel_identities_can_be_looked_up() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    publish_all(
        &hub,
        vec![visitor
            .event("identify", "u-chan")
            .with("channels", json!({"whatsapp": "10435685475"}))],
    )
    .await;
    let http = hub.http();
    let (status, view) = http
        .get("/v1/visitors/by-channel/whatsapp/10435685475")
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["channels"], json!({"whatsapp": "10435685475"}));
    assert_eq!(customers_of(&view), vec![visitor.customer_id.clone()]);
    assert_http_error(
        &http.get("/v1/visitors/by-channel/whatsapp/999").await,
        404,
        "not_found",
    );
}

/// An `identify` that names its visitor through channels alone (no site user id).
fn channel_identify(visitor: &Visitor, channels: Value) -> Value {
    visitor
        .event("identify", "")
        .without("userId")
        .with("channels", channels)
}

#[tokio::test]
async fn a_visitor_who_comes_only_through_a_channel_is_created_and_found() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    publish_all(
        &hub,
        vec![channel_identify(&visitor, json!({"telegram": "67854257"}))],
    )
    .await;
    let http = hub.http();
    let (status, view) = http.get("/v1/visitors/by-channel/telegram/67854257").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["visitorId"], json!(visitor.customer_id));
    assert_eq!(view["channels"], json!({"telegram": "67854257"}));
    assert_eq!(view["userIds"], json!([]));
    assert_eq!(
        view["identity"],
        json!({"state": "recognized", "userId": null}),
        "identify recognizes an anonymous customer, whatever names it"
    );
    // The same view as the visitor's own.
    let (_, own) = http
        .get(&format!("/v1/visitors/{}", visitor.customer_id))
        .await;
    assert_eq!(view, own);
    for other in [
        "/v1/visitors/by-channel/telegram/1",
        "/v1/visitors/by-channel/whatsapp/67854257",
    ] {
        assert_http_error(&http.get(other).await, 404, "not_found");
    }
    // Neither a user id nor a channel id: nothing names the visitor.
    let results = http
        .publish(&json!([visitor.event("identify", "").without("userId")]))
        .await;
    assert_eq!(results[0]["error"]["code"], json!("invalid_event"));
    assert_eq!(results[0]["error"]["details"]["field"], json!("userId"));
}

#[tokio::test]
async fn channels_on_events_that_do_not_link_are_refused_naming_the_field() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let channels = json!({"whatsapp": "10435685475"});
    let events = vec![
        visitor.page().with("channels", channels.clone()),
        visitor
            .event("track", "")
            .with("channels", channels.clone()),
        visitor
            .event("signout", "")
            .with("channels", channels.clone()),
    ];
    let results = hub.http().publish(&Value::Array(events)).await;
    assert_eq!(results.len(), 3);
    for result in &results {
        assert_eq!(result["error"]["code"], json!("invalid_event"), "{result}");
        assert_eq!(
            result["error"]["details"]["field"],
            json!("channels"),
            "{result}"
        );
    }
    assert_http_error(
        &hub.http()
            .get("/v1/visitors/by-channel/whatsapp/10435685475")
            .await,
        404,
        "not_found",
    );
    // On the events that link a visitor they are applied.
    publish_all(
        &hub,
        vec![visitor
            .event("signin", "u-signin")
            .with("channels", channels)],
    )
    .await;
    let (status, view) = hub
        .http()
        .get("/v1/visitors/by-channel/whatsapp/10435685475")
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["userIds"], json!(["u-signin"]));
}

#[tokio::test]
async fn a_second_claim_of_a_channel_id_merges_the_visitors_and_survives_a_restart() {
    let hub = Hub::start().await;
    let (chat, laptop, phone) = (Visitor::new(), Visitor::new(), Visitor::new());
    let mut watcher = hub.client().await;
    watcher
        .subscribe(json!("merges"), json!({"topics": ["visitor:merged"]}))
        .await;
    // First known through WhatsApp alone, then as a signed-in site user on a laptop
    // giving the same WhatsApp id: one person.
    publish_all(
        &hub,
        vec![
            channel_identify(&chat, json!({"whatsapp": "10435685475"})),
            laptop.event("identify", "u-ann").with(
                "channels",
                json!({"whatsapp": "10435685475", "telegram": "7"}),
            ),
        ],
    )
    .await;
    let merged = watcher.next_event().await;
    let event = &merged["event"];
    // `u-ann` is new, so the first profile the identify names is the WhatsApp id's: the
    // laptop joins it, and the user id with it (docs/protocol.md, "Visitors").
    assert_eq!(event["visitorId"], json!(chat.customer_id), "{merged}");
    assert_eq!(event["customerId"], json!(laptop.customer_id));
    assert_eq!(event["userId"], json!("u-ann"));
    assert_eq!(
        merged_customers(event),
        sorted(vec![chat.customer_id.clone(), laptop.customer_id.clone()])
    );
    // A third browser through a channel id alone joins that visitor too; no user id in
    // its merge event.
    publish_all(
        &hub,
        vec![channel_identify(&phone, json!({"telegram": "7"}))],
    )
    .await;
    let merged = watcher.next_event().await;
    assert_eq!(merged["event"]["visitorId"], json!(chat.customer_id));
    assert_eq!(merged["event"].get("userId"), None, "{merged}");
    let everyone = sorted(vec![
        chat.customer_id.clone(),
        laptop.customer_id.clone(),
        phone.customer_id.clone(),
    ]);
    let check = |hub: &Hub| {
        let http = hub.http();
        let everyone = everyone.clone();
        let chat = chat.customer_id.clone();
        async move {
            for path in [
                "/v1/visitors/by-channel/whatsapp/10435685475",
                "/v1/visitors/by-channel/telegram/7",
            ] {
                let (status, view) = http.get(path).await;
                assert_eq!(status, 200, "{path}: {view}");
                assert_eq!(view["visitorId"], json!(chat), "{path}");
                assert_eq!(view["userIds"], json!(["u-ann"]), "{path}");
                assert_eq!(customers_of(&view), everyone, "{path}");
                assert_eq!(
                    view["channels"],
                    json!({"whatsapp": "10435685475", "telegram": "7"})
                );
            }
        }
    };
    check(&hub).await;
    watcher.expect_no_frame().await;
    drop(watcher);
    // The index is rebuilt from what the hub keeps: the final snapshot.
    let hub = hub.restart().await;
    check(&hub).await;
}

#[tokio::test]
async fn two_profiles_claiming_one_channel_id_become_the_user_ids_visitor() {
    let hub = Hub::start().await;
    let (ann, bob) = (Visitor::new(), Visitor::new());
    let mut watcher = hub.client().await;
    watcher
        .subscribe(json!("merges"), json!({"topics": ["visitor:merged"]}))
        .await;
    publish_all(
        &hub,
        vec![
            ann.event("identify", "u-ann")
                .with("channels", json!({"whatsapp": "1"})),
            bob.event("identify", "u-bob"),
        ],
    )
    .await;
    // Bob's profile claims Ann's id: both are one person. The profile Bob's user id
    // belongs to comes first, so Ann's folds into it.
    publish_all(
        &hub,
        vec![bob
            .event("identify", "u-bob")
            .with("channels", json!({"whatsapp": "1"}))],
    )
    .await;
    let merged = watcher.next_event().await;
    assert_eq!(
        merged["event"]["visitorId"],
        json!(bob.customer_id),
        "{merged}"
    );
    assert_eq!(merged["event"]["userId"], json!("u-bob"));
    let http = hub.http();
    let (status, view) = http.get("/v1/visitors/by-channel/whatsapp/1").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["visitorId"], json!(bob.customer_id));
    assert_eq!(
        customers_of(&view),
        sorted(vec![ann.customer_id.clone(), bob.customer_id.clone()])
    );
    let mut users: Vec<String> = serde_json::from_value(view["userIds"].clone()).unwrap();
    users.sort();
    assert_eq!(users, ["u-ann", "u-bob"]);
    let (_, by_ann) = http.get("/v1/visitors/user:u-ann").await;
    assert_eq!(by_ann["visitorId"], json!(bob.customer_id));
    watcher.expect_no_frame().await;
}

#[tokio::test]
async fn a_channel_id_names_one_visitor_until_it_is_replaced_or_erased() {
    let hub = Hub::start().await;
    let (ann, bob) = (Visitor::new(), Visitor::new());
    publish_all(
        &hub,
        vec![
            ann.event("identify", "u-ann")
                .with("channels", json!({"whatsapp": "1"})),
            // Ann's WhatsApp id changes: the old one names no one any more.
            ann.event("identify", "u-ann")
                .with("channels", json!({"whatsapp": "2"})),
            bob.event("identify", "u-bob")
                .with("channels", json!({"whatsapp": "1"})),
        ],
    )
    .await;
    let http = hub.http();
    let owner = |path: &'static str| {
        let http = &http;
        async move {
            let (status, view) = http.get(path).await;
            (status, view["visitorId"].clone())
        }
    };
    assert_eq!(
        owner("/v1/visitors/by-channel/whatsapp/2").await,
        (200, json!(ann.customer_id))
    );
    assert_eq!(
        owner("/v1/visitors/by-channel/whatsapp/1").await,
        (200, json!(bob.customer_id)),
        "a freed id is claimed without a merge"
    );
    let (_, bob_view) = http.get("/v1/visitors/user:u-bob").await;
    assert_eq!(customers_of(&bob_view), vec![bob.customer_id.clone()]);
    let (status, _) = http.delete("/v1/visitors/user:u-bob").await;
    assert_eq!(status, 200);
    assert_http_error(
        &http.get("/v1/visitors/by-channel/whatsapp/1").await,
        404,
        "not_found",
    );
    // After a restart, the log's replay agrees.
    let hub = hub.restart().await;
    let http = hub.http();
    assert_http_error(
        &http.get("/v1/visitors/by-channel/whatsapp/1").await,
        404,
        "not_found",
    );
    let (status, view) = http.get("/v1/visitors/by-channel/whatsapp/2").await;
    assert_eq!((status, &view["visitorId"]), (200, &json!(ann.customer_id)));
}

#[tokio::test]
async fn merging_through_the_api_publishes_and_links_both_ways() {
    let hub = Hub::start().await;
    let (source, target) = (Visitor::new(), Visitor::new());
    let offered = source.action("webchat").event("offered");
    publish_all(&hub, vec![source.page(), target.page(), offered]).await;
    let mut watcher = hub.client().await;
    watcher
        .subscribe(json!("merges"), json!({"topics": ["visitor:merged"]}))
        .await;
    let http = hub.http();
    let body =
        json!({"sourceVisitorId": source.customer_id, "targetVisitorId": target.customer_id});
    let (status, answer) = http.post("/v1/visitors/merge", &body).await;
    assert_eq!(status, 200, "{answer}");
    let merged = watcher.next_event().await;
    assert_eq!(merged["seq"], answer["seq"]);
    let event = &merged["event"];
    assert_eq!(event["visitorId"], json!(target.customer_id));
    assert_eq!(event["customerId"], json!(source.customer_id));
    assert_eq!(
        merged_customers(event),
        sorted(vec![source.customer_id.clone(), target.customer_id.clone()])
    );
    let (_, from_source) = http
        .get(&format!("/v1/visitors/{}", source.customer_id))
        .await;
    assert_eq!(from_source["visitorId"], json!(target.customer_id));
    assert_eq!(
        from_source["counts"]["liveActions"],
        json!(1),
        "the source's action came along"
    );
    // The same visitor again, by either id, is a merge into itself.
    let again =
        json!({"sourceVisitorId": source.customer_id, "targetVisitorId": target.customer_id});
    assert_http_error(
        &http.post("/v1/visitors/merge", &again).await,
        400,
        "bad_request",
    );
    watcher.expect_no_frame().await;
}

#[tokio::test]
async fn bad_visitor_requests_are_refused_and_change_nothing() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    publish_all(&hub, vec![visitor.page()]).await;
    let http = hub.http();
    let unknown = crate::support::uuid();
    assert_http_error(
        &http.get(&format!("/v1/visitors/{unknown}")).await,
        404,
        "not_found",
    );
    assert_http_error(
        &http.get("/v1/visitors/user:nobody").await,
        404,
        "not_found",
    );
    assert_http_error(
        &http.get("/v1/visitors/not-an-id").await,
        400,
        "bad_request",
    );
    let merge =
        |source: &str, target: &str| json!({"sourceVisitorId": source, "targetVisitorId": target});
    let cases = [
        (
            merge(&visitor.customer_id, &visitor.customer_id),
            400,
            "bad_request",
        ),
        (merge(&visitor.customer_id, &unknown), 404, "not_found"),
        (merge("not-an-id", &visitor.customer_id), 400, "bad_request"),
        (
            json!({"sourceVisitorId": visitor.customer_id}),
            400,
            "bad_request",
        ),
        (
            merge(&visitor.customer_id, &unknown).with("extra", json!(1)),
            400,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        assert_http_error(&http.post("/v1/visitors/merge", &body).await, status, code);
    }
    let (_, events) = http.get("/v1/events").await;
    let topics: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["topic"].as_str().expect("topic"))
        .collect();
    assert_eq!(
        topics,
        ["session:started", "visitor:page"],
        "refusals published nothing"
    );
}

#[tokio::test]
async fn an_export_holds_everything_about_the_visitor() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let action = visitor.action("contentoffer");
    publish_all(
        &hub,
        vec![
            visitor
                .event("identify", "u-export")
                .with("traits", json!({"email": "e@x.example"})),
            action.event("offered"),
            action.event("accepted"),
        ],
    )
    .await;
    let (status, export) = hub.http().get("/v1/visitors/user:u-export/export").await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["email"], json!("e@x.example"));
    assert_eq!(export["attributes"], json!({}));
    let actions = export["actions"]
        .as_array()
        .expect("actions, ended ones included");
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["actionState"], json!("accepted"));
    assert_eq!(
        actions[0]["transitions"]
            .as_array()
            .expect("transitions")
            .len(),
        2
    );
    let topics: Vec<&str> = export["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["topic"].as_str().expect("topic"))
        .collect();
    assert_eq!(
        topics,
        [
            "session:started",
            "visitor:identify",
            "contentoffer:offered",
            "contentoffer:accepted"
        ]
    );
    assert!(
        export["sessionHistory"]
            .as_array()
            .is_some_and(|s| s.len() == 1),
        "{export}"
    );
}

#[tokio::test]
async fn page_views_and_track_events_are_kept_per_session() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let track = visitor
        .event("track", "")
        .with("name", json!("added_to_cart"))
        .with("properties", json!({"sku": "A-1"}));
    publish_all(&hub, vec![visitor.page(), track]).await;
    let (_, sessions) = hub
        .http()
        .get(&format!("/v1/visitors/{}/sessions", visitor.customer_id))
        .await;
    let activity = &sessions["sessions"][0]["activity"];
    assert_eq!(activity[0]["type"], json!("page"));
    assert_eq!(activity[0]["page"]["url"], json!("https://shop.example/p"));
    assert_eq!(activity[1]["type"], json!("track"));
    assert_eq!(activity[1]["name"], json!("added_to_cart"));
    assert_eq!(activity[1]["properties"], json!({"sku": "A-1"}));
    assert_eq!(sessions["sessions"][0]["pagesViewed"], json!(1));
}

#[tokio::test]
async fn attributes_merge_into_traits() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    publish_all(
        &hub,
        vec![visitor
            .event("identify", "u-put")
            .with("traits", json!({"plan": "free", "name": "Pat"}))],
    )
    .await;
    let http = hub.http();
    let (status, view) = http
        .put(
            "/v1/visitors/user:u-put",
            &json!({"attributes": {"plan": "premium", "seats": 3}}),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["attributes"], json!({"plan": "premium", "seats": 3}));
    assert_eq!(view["name"], json!("Pat"));
    // An anonymous visitor can carry attributes too.
    let anon = Visitor::new();
    publish_all(&hub, vec![anon.page()]).await;
    let path = format!("/v1/visitors/{}", anon.customer_id);
    let (status, view) = http
        .put(&path, &json!({"attributes": {"segment": "b"}}))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["attributes"], json!({"segment": "b"}));
    assert_eq!(view["identified"], json!(false));
    for bad in [json!({"traits": {}}), json!({"attributes": 5}), json!([1])] {
        assert_http_error(&http.put(&path, &bad).await, 400, "bad_request");
    }
    let unknown = format!("/v1/visitors/{}", crate::support::uuid());
    assert_http_error(
        &http.put(&unknown, &json!({"attributes": {}})).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn anonymizing_removes_identity_and_keeps_the_action_history() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let action = visitor.action("webchat");
    publish_all(
        &hub,
        vec![
            visitor
                .event("signin", "u-anon")
                .with("traits", json!({"email": "a@x.example"}))
                .with("channels", json!({"whatsapp": "555"})),
            action.event("offered"),
        ],
    )
    .await;
    let http = hub.http();
    let (status, view) = http
        .post("/v1/visitors/user:u-anon/anonymize", &json!({}))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["identity"],
        json!({"state": "anonymous", "userId": null})
    );
    assert_eq!(view["identified"], json!(false));
    assert_eq!(
        (&view["attributes"], &view["email"], &view["channels"]),
        (&json!({}), &Value::Null, &json!({}))
    );
    assert_http_error(
        &http.get("/v1/visitors/user:u-anon").await,
        404,
        "not_found",
    );
    assert_http_error(
        &http.get("/v1/visitors/by-channel/whatsapp/555").await,
        404,
        "not_found",
    );
    let (_, history) = http.get("/v1/events").await;
    let text = history.to_string();
    assert!(
        !text.contains("u-anon") && !text.contains("a@x.example"),
        "{text}"
    );
    let (status, kept) = http.get(&format!("/v1/actions/{}", action.action_id)).await;
    assert_eq!((status, &kept["actionState"]), (200, &json!("offered")));
    assert!(
        text.contains(&action.action_id),
        "lifecycle events stay: {text}"
    );
}

#[tokio::test]
async fn deleting_erases_state_and_history() {
    let hub = Hub::start().await;
    let (visitor, bystander) = (Visitor::new(), Visitor::new());
    let action = visitor.action("contentoffer");
    publish_all(
        &hub,
        vec![
            visitor.event("identify", "u-del"),
            action.event("offered"),
            bystander.page(),
        ],
    )
    .await;
    let http = hub.http();
    let (status, answer) = http.delete("/v1/visitors/user:u-del").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["customers"], json!([visitor.customer_id]));
    let gone = [
        format!("/v1/visitors/{}", visitor.customer_id),
        "/v1/visitors/user:u-del".to_string(),
        format!("/v1/customers/{}", visitor.customer_id),
        format!("/v1/actions/{}", action.action_id),
        format!("/v1/customers/{}/events", visitor.customer_id),
    ];
    for path in &gone {
        assert_http_error(&http.get(path).await, 404, "not_found");
    }
    let (_, history) = http.get("/v1/events").await;
    let text = history.to_string();
    assert!(
        !text.contains(&visitor.customer_id),
        "erased from history: {text}"
    );
    assert!(text.contains(&bystander.customer_id), "others stay: {text}");
    let mut late = hub.client().await;
    let replay = late
        .subscribe(
            json!("r"),
            json!({"topics": ["all"], "since": 0, "epoch": late.epoch()}),
        )
        .await;
    assert_eq!(replay["recovered"], json!(true));
    for event in late.events(2).await {
        assert_eq!(
            event["event"]["customerId"],
            json!(bystander.customer_id),
            "{event}"
        );
    }
    late.expect_no_frame().await;
    assert_http_error(
        &http.delete("/v1/visitors/user:u-del").await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn visitor_endpoints_refuse_unknown_query_parameters_by_name() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    publish_all(&hub, vec![visitor.page()]).await;
    let http = hub.http();
    let id = &visitor.customer_id;
    let refused = |answer: &(u16, Value), what: &str| {
        assert_http_error(answer, 400, "bad_request");
        let message = answer.1["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("\"bogus\""), "{what}: {message}");
    };
    for path in [
        format!("/v1/visitors/{id}"),
        format!("/v1/visitors/{id}/sessions"),
        format!("/v1/visitors/{id}/export"),
        format!("/v1/visitors/{id}/events"),
        "/v1/visitors".to_owned(),
        "/v1/visitors/by-channel/slack/U1".to_owned(),
    ] {
        refused(&http.get(&format!("{path}?bogus=1")).await, &path);
    }
    let body = json!({"attributes": {"plan": "pro"}});
    refused(
        &http.put(&format!("/v1/visitors/{id}?bogus=1"), &body).await,
        "PUT",
    );
    refused(
        &http
            .post(&format!("/v1/visitors/{id}/anonymize?bogus=1"), &json!({}))
            .await,
        "anonymize",
    );
    refused(
        &http.delete(&format!("/v1/visitors/{id}?bogus=1")).await,
        "DELETE",
    );
    let merge = json!({"sourceVisitorId": id, "targetVisitorId": id});
    refused(
        &http.post("/v1/visitors/merge?bogus=1", &merge).await,
        "merge",
    );
    // None of the refused changes happened.
    let (status, view) = http.get(&format!("/v1/visitors/{id}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["attributes"], json!({}));
}

#[tokio::test]
async fn the_visitor_view_carries_the_reference_profile_under_its_names() {
    let hub = Hub::start().await;
    let mut visitor = Visitor::new();
    let traits = json!({
        "name": "Ada", "email": "ada@x.example", "phone": "+1 555 0100",
        "avatarUrl": "https://x.example/ada.png", "plan": "premium", "seats": 3,
    });
    let (talked, only_offered) = (visitor.action("webchat"), visitor.action("webchat"));
    let offer = visitor.action("contentoffer");
    let mut events = vec![
        visitor.event("identify", "u-ada").with("traits", traits),
        talked.event("offered"),
        talked.event("accepted"),
        talked.event("started"),
        only_offered.event("offered"),
        offer.event("offered"),
        offer.event("accepted"),
    ];
    visitor.new_session();
    events.push(visitor.page());
    publish_all(&hub, events).await;

    let (status, view) = hub.http().get("/v1/visitors/user:u-ada").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["id"], json!(visitor.customer_id));
    assert_eq!(view["id"], view["visitorId"]);
    assert_eq!(view["userId"], json!("u-ada"));
    let contact: Vec<&Value> = ["name", "email", "phone", "avatarUrl"]
        .iter()
        .map(|key| &view[*key])
        .collect();
    assert_eq!(
        contact,
        [
            &json!("Ada"),
            &json!("ada@x.example"),
            &json!("+1 555 0100"),
            &json!("https://x.example/ada.png")
        ]
    );
    assert_eq!(view["attributes"], json!({"plan": "premium", "seats": 3}));
    assert_eq!(
        view["conversationCount"],
        json!(1),
        "only the started webchat"
    );
    assert_eq!(view["sessionCount"], json!(2));
    assert!(view["firstSeenAt"].as_str() <= view["lastSeenAt"].as_str());
    assert!(view["firstSeenAt"].is_string(), "{view}");
    for old in ["traits", "firstSeen", "lastSeen"] {
        assert!(
            view.get(old).is_none(),
            "one name per field: {old} in {view}"
        );
    }

    // A visitor who never identified has the same fields, empty.
    let anon = Visitor::new();
    publish_all(&hub, vec![anon.page()]).await;
    let (_, view) = hub
        .http()
        .get(&format!("/v1/visitors/{}", anon.customer_id))
        .await;
    for key in ["userId", "name", "email", "phone", "avatarUrl"] {
        assert_eq!(view[key], Value::Null, "{key}: {view}");
        assert!(view.get(key).is_some(), "{key} is present: {view}");
    }
    assert_eq!(
        (&view["attributes"], &view["conversationCount"]),
        (&json!({}), &json!(0))
    );
}

const CHROME_ON_A_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) \
    AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const FIREFOX_ON_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0";

#[tokio::test]
async fn browser_system_and_place_come_from_the_page_views_request_and_survive_a_restart() {
    let hub = Hub::start_with(|config| {
        config.geo_country_header = "CF-IPCountry".into();
        config.geo_city_header = "X-Geo-City".into();
    })
    .await;
    let visitor = Visitor::new();
    let page = visitor.page().with(
        "page",
        json!({"url": "https://shop.example/", "timezone": "America/New_York"}),
    );
    let behind_the_cdn = hub.http_with(&[
        ("user-agent", CHROME_ON_A_MAC),
        ("cf-ipcountry", "US"),
        ("x-geo-city", "New York"),
    ]);
    for result in behind_the_cdn.publish(&page).await {
        assert!(result["seq"].is_u64(), "refused: {result}");
    }
    let path = format!("/v1/visitors/{}", visitor.customer_id);
    let expected = (
        json!({"name": "Chrome", "version": "120.0.0.0"}),
        json!({"name": "Mac OSX", "version": "10.15.7"}),
        json!({"city": "New York", "country": "US", "timezone": "America/New_York"}),
    );
    let seen = |view: &Value| {
        (
            view["browser"].clone(),
            view["os"].clone(),
            view["location"].clone(),
        )
    };
    let (status, view) = hub.http().get(&path).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(seen(&view), expected);
    assert!(
        !view.to_string().contains("127.0.0.1"),
        "no address: {view}"
    );

    // A WebSocket's page views take the upgrade request's User-Agent; a page view that
    // names no place keeps none.
    let other = Visitor::new();
    let mut ws = hub
        .client_with_headers(&[("user-agent", FIREFOX_ON_WINDOWS)])
        .await
        .expect("upgrade");
    ws.connect().await;
    ws.publish_ok(other.page()).await;
    let (_, view) = hub
        .http()
        .get(&format!("/v1/visitors/{}", other.customer_id))
        .await;
    assert_eq!(view["browser"]["name"], json!("Firefox"), "{view}");
    assert_eq!(view["os"]["name"], json!("Windows 10"), "{view}");
    assert_eq!(
        view["location"],
        json!({"city": null, "country": null, "timezone": null})
    );

    // The log and the snapshot carry it: a restart rebuilds the same profile.
    let hub = hub.restart().await;
    let (_, view) = hub.http().get(&path).await;
    assert_eq!(seen(&view), expected, "after a restart");

    // It is the person's: anonymizing takes it away.
    let (status, view) = hub
        .http()
        .post(&format!("{path}/anonymize"), &json!({}))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        (&view["browser"], &view["os"], &view["location"]),
        (
            &Value::Null,
            &Value::Null,
            &json!({"city": null, "country": null, "timezone": null})
        )
    );
}

#[tokio::test]
async fn the_hub_reads_no_geo_header_it_is_not_told_to_and_refuses_a_publishers_client() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let http = hub.http_with(&[("user-agent", "curl/8.5.0"), ("cf-ipcountry", "US")]);
    for result in http.publish(&visitor.page()).await {
        assert!(result["seq"].is_u64(), "refused: {result}");
    }
    let (_, view) = hub
        .http()
        .get(&format!("/v1/visitors/{}", visitor.customer_id))
        .await;
    assert_eq!(view["location"]["country"], Value::Null, "{view}");
    assert_eq!(
        view["browser"],
        Value::Null,
        "an HTTP library is no browser"
    );

    let forged = visitor.page().with("client", json!({"country": "FR"}));
    let results = http.publish(&forged).await;
    assert_eq!(
        results[0]["error"]["code"],
        json!("invalid_event"),
        "{results:?}"
    );
    assert_eq!(
        results[0]["error"]["details"]["field"],
        json!("client"),
        "{results:?}"
    );
    let mut ws = hub.client().await;
    ws.publish_refused(forged, "invalid_event", Some("client"))
        .await;
}

#[tokio::test]
async fn sessions_have_the_reference_shape_with_pages_and_time_on_them() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let page = |url: &str, title: &str, referrer: Option<&str>| {
        let mut page = json!({"url": url, "title": title});
        if let Some(referrer) = referrer {
            page["referrer"] = json!(referrer);
        }
        visitor.page().with("page", page)
    };
    publish_all(
        &hub,
        vec![
            page(
                "https://shop.example/",
                "Home",
                Some("https://search.example/"),
            ),
            visitor.event("track", "").with("name", json!("scrolled")),
            page("https://shop.example/pricing", "Pricing", None),
            visitor.event("signout", ""),
        ],
    )
    .await;
    let (status, answer) = hub
        .http()
        .get(&format!("/v1/visitors/{}/sessions", visitor.customer_id))
        .await;
    assert_eq!(status, 200, "{answer}");
    let session = &answer["sessions"][0];
    assert_eq!(session["id"], json!(visitor.session_id));
    assert_eq!(session["pagesViewed"], json!(2));
    assert_eq!(session["referrer"], json!("https://search.example/"));
    assert!(session["endedAt"].is_string(), "signed out: {session}");
    let pages = session["pages"].as_array().expect("pages");
    let shown: Vec<(&Value, &Value)> = pages.iter().map(|p| (&p["url"], &p["title"])).collect();
    assert_eq!(
        shown,
        [
            (&json!("https://shop.example/"), &json!("Home")),
            (&json!("https://shop.example/pricing"), &json!("Pricing")),
        ],
        "page views only, in order: {session}"
    );
    let duration = session["duration"].as_i64().expect("duration in seconds");
    let on_pages: i64 = pages
        .iter()
        .map(|p| p["timeOnPage"].as_i64().expect("timeOnPage in seconds"))
        .sum();
    assert!(
        (0..=duration).contains(&on_pages),
        "the pages' time is within the visit's: {session}"
    );
    for p in pages {
        assert!(p["viewedAt"].is_string(), "{p}");
    }
}

#[tokio::test]
async fn an_update_event_merges_attributes_into_the_current_visitor() {
    let hub = Hub::start().await;
    let (known, anon) = (Visitor::new(), Visitor::new());
    let mut watcher = hub.client().await;
    watcher
        .subscribe(json!("updates"), json!({"topics": ["visitor:update"]}))
        .await;
    publish_all(
        &hub,
        vec![
            known
                .event("identify", "u-upd")
                .with("traits", json!({"plan": "free", "name": "Uma"})),
            known
                .event("update", "")
                .with("attributes", json!({"plan": "pro", "seats": 5})),
            // A lone browser's update starts its profile, unidentified.
            anon.event("update", "")
                .without("sessionId")
                .with("attributes", json!({"ab": "b"})),
        ],
    )
    .await;
    let update = watcher.next_event().await;
    assert_eq!(update["topic"], json!("visitor:update"), "{update}");
    assert_eq!(
        update["event"]["attributes"],
        json!({"plan": "pro", "seats": 5})
    );
    let http = hub.http();
    let (_, view) = http.get("/v1/visitors/user:u-upd").await;
    assert_eq!(view["attributes"], json!({"plan": "pro", "seats": 5}));
    assert_eq!(view["name"], json!("Uma"));
    let (_, view) = http
        .get(&format!("/v1/visitors/{}", anon.customer_id))
        .await;
    assert_eq!(view["attributes"], json!({"ab": "b"}));
    assert_eq!(view["identified"], json!(false));
    let mut client = hub.client().await;
    for (event, field) in [
        (known.event("update", ""), "attributes"),
        (
            known.event("update", "").with("attributes", json!([1])),
            "attributes",
        ),
        (
            known.page().with("attributes", json!({"a": 1})),
            "attributes",
        ),
    ] {
        client
            .publish_refused(event, "invalid_event", Some(field))
            .await;
    }
    // Bounded as the profile's traits are.
    for n in 0..4 {
        let attributes = json!({ format!("k{n}"): "x".repeat(3900) });
        client
            .publish_ok(known.event("update", "").with("attributes", attributes))
            .await;
    }
    let refused = client
        .publish_refused(
            known
                .event("update", "")
                .with("attributes", json!({"k9": "x".repeat(3900)})),
            "too_large",
            Some("traits"),
        )
        .await;
    assert_eq!(refused["details"]["limit"], json!("profileTraitsBytes"));
}

#[tokio::test]
async fn a_browser_token_updates_its_own_visitor_only() {
    const SECRET: &str = "update-secret-0123456789abcdef0123456";
    let hub = Hub::start_with(|config| {
        config.jwt_secrets = SECRET.parse().expect("secret");
        config.api_keys = "pk-admin=admin+subscribe+publish".parse().expect("keys");
    })
    .await;
    let (mine, theirs) = (Visitor::new(), Visitor::new());
    let mut browser = hub
        .client_with(json!({"token": crate::support::token(SECRET, &mine.customer_id)}))
        .await;
    browser
        .publish_ok(
            mine.event("update", "")
                .with("attributes", json!({"theme": "dark"})),
        )
        .await;
    browser
        .publish_refused(
            theirs
                .event("update", "")
                .with("attributes", json!({"theme": "dark"})),
            "forbidden",
            None,
        )
        .await;
    let http = hub.http_with(&[("X-API-Key", "pk-admin")]);
    let (_, view) = http
        .get(&format!("/v1/visitors/{}", mine.customer_id))
        .await;
    assert_eq!(view["attributes"], json!({"theme": "dark"}));
    let (status, _) = http
        .get(&format!("/v1/visitors/{}", theirs.customer_id))
        .await;
    assert_eq!(status, 404, "the refused update made no visitor");
}

#[tokio::test]
async fn a_page_exit_measures_the_time_on_page() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let page = |url: &str| visitor.page().with("page", json!({"url": url}));
    let exit = |url: &str| visitor.event("exit", "").with("page", json!({"url": url}));
    let mut watcher = hub.client().await;
    watcher
        .subscribe(json!("exits"), json!({"topics": ["visitor:exit"]}))
        .await;
    publish_all(&hub, vec![page("https://shop.example/a")]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    publish_all(&hub, vec![exit("https://shop.example/a")]).await;
    let reported = watcher.next_event().await;
    assert_eq!(
        reported["event"]["page"]["url"],
        json!("https://shop.example/a")
    );
    // Away for a while: the next page view does not count as time on the page left.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    publish_all(
        &hub,
        vec![
            page("https://shop.example/b"),
            exit("https://shop.example/b"),
        ],
    )
    .await;
    let sessions_of = |hub: &Hub| {
        let http = hub.http();
        let path = format!("/v1/visitors/{}/sessions", visitor.customer_id);
        async move { http.get(&path).await.1["sessions"][0]["pages"].clone() }
    };
    let pages = sessions_of(&hub).await;
    let times: Vec<&Value> = pages
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["timeOnPage"])
        .collect();
    assert_eq!(
        times,
        [&json!(1), &json!(0)],
        "measured to the exits: {pages}"
    );
    // A page without an exit still closes at the next page view.
    let hub = hub.restart().await;
    assert_eq!(
        sessions_of(&hub).await,
        pages,
        "the exits are kept across a restart"
    );
    let mut client = hub.client().await;
    client
        .publish_refused(visitor.event("exit", ""), "invalid_event", Some("page.url"))
        .await;
    client
        .publish_refused(
            visitor
                .event("exit", "")
                .without("sessionId")
                .with("page", json!({"url": "u"})),
            "invalid_event",
            Some("sessionId"),
        )
        .await;
}
