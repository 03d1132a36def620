//! Segments over HTTP and WebSocket: the API's shapes and refusals, live `segment:entered`
//! and `segment:left` events through a `where.segmentId` subscription, a segment created
//! over visitors already there, the state after a restart (from a snapshot and from the
//! log alone), and the scopes.

use serde_json::{json, Value};

use crate::support::{assert_http_error, Hub, JsonExt, Visitor};

fn premium() -> Value {
    json!({
        "name": "Premium Users",
        "conditions": [{"field": "attributes.plan", "operator": "equals", "value": "premium"}]
    })
}

/// Publishes over HTTP and checks every event was accepted.
async fn publish_all(hub: &Hub, events: Vec<Value>) {
    for result in hub.http().publish(&Value::Array(events)).await {
        assert!(result["seq"].is_u64(), "refused: {result}");
    }
}

/// An identify of `visitor` as `user` with `traits`.
fn identify(visitor: &Visitor, user: &str, traits: Value) -> Value {
    visitor.event("identify", user).with("traits", traits)
}

/// Creates a segment and returns its view.
async fn create(hub: &Hub, body: &Value) -> Value {
    let (status, created) = hub.http().post("/v1/segments", body).await;
    assert_eq!(status, 201, "{created}");
    created
}

#[tokio::test]
async fn segments_are_created_read_replaced_and_deleted() {
    let hub = Hub::start().await;
    let http = hub.http();
    let created = create(&hub, &premium()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("seg_"), "{created}");
    assert_eq!(created["name"], json!("Premium Users"));
    assert_eq!(created["match"], json!("all"));
    assert_eq!(created["conditions"], premium()["conditions"]);
    assert_eq!(created["visitorCount"], json!(0));
    assert_eq!(created["createdAt"], created["updatedAt"]);

    let (status, list) = http.get("/v1/segments").await;
    assert_eq!(status, 200);
    assert_eq!(list, json!({"segments": [created.clone()]}));
    let (status, one) = http.get(&format!("/v1/segments/{id}")).await;
    assert_eq!((status, &one), (200, &created));

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let replacement = json!({"name": "Gold", "match": "any", "conditions": [
        {"field": "attributes.plan", "operator": "in", "value": ["gold", "premium"]},
        {"field": "sessionCount", "operator": "gte", "value": 10}]});
    let (status, replaced) = http.put(&format!("/v1/segments/{id}"), &replacement).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["id"], json!(id));
    assert_eq!(replaced["name"], json!("Gold"));
    assert_eq!(replaced["match"], json!("any"));
    assert_eq!(replaced["createdAt"], created["createdAt"]);
    assert_ne!(replaced["updatedAt"], created["updatedAt"]);

    let (status, deleted) = http.delete(&format!("/v1/segments/{id}")).await;
    assert_eq!((status, deleted), (200, json!({"deleted": id})));
    assert_http_error(
        &http.get(&format!("/v1/segments/{id}")).await,
        404,
        "not_found",
    );
    assert_http_error(
        &http.delete(&format!("/v1/segments/{id}")).await,
        404,
        "not_found",
    );
    assert_http_error(
        &http.put(&format!("/v1/segments/{id}"), &premium()).await,
        404,
        "not_found",
    );
    // Ids are never given again.
    let next = create(&hub, &premium()).await;
    assert_ne!(next["id"], json!(id));
}

#[tokio::test]
async fn a_bad_definition_is_refused_naming_the_part_at_fault() {
    let hub = Hub::start().await;
    let http = hub.http();
    let cases = [
        (
            json!({"name": "x", "conditions": [{"field": "plan", "operator": "equals", "value": 1}]}),
            "conditions[0].field",
        ),
        (
            json!({"name": "x", "conditions": [{"field": "userId", "operator": "near", "value": "a"}]}),
            "conditions[0].operator",
        ),
        (
            json!({"name": "x", "conditions": [{"field": "sessionCount", "operator": "gt", "value": "many"}]}),
            "conditions[0].value",
        ),
        (
            json!({"name": "x", "conditions": [{"field": "company.id", "operator": "lt", "value": 3}]}),
            "conditions[0].operator",
        ),
        (json!({"name": "", "conditions": []}), "name"),
        (
            json!({"name": "x", "conditions": [], "extra": true}),
            "extra",
        ),
    ];
    for (body, field) in cases {
        let answer = http.post("/v1/segments", &body).await;
        assert_http_error(&answer, 400, "bad_request");
        assert_eq!(
            answer.1["error"]["details"]["field"],
            json!(field),
            "{body}: {}",
            answer.1
        );
    }
    assert_http_error(&http.get("/v1/segments/7").await, 400, "bad_request");
    assert_http_error(&http.get("/v1/segments?page=1").await, 400, "bad_request");
    let (_, list) = http.get("/v1/segments").await;
    assert_eq!(list, json!({"segments": []}), "nothing refused was kept");
}

#[tokio::test]
async fn visitors_enter_and_leave_live_through_a_segment_filter() {
    let hub = Hub::start().await;
    let http = hub.http();
    let segment = create(&hub, &premium()).await;
    let id = segment["id"].as_str().unwrap().to_owned();
    let other = create(&hub, &json!({"name": "Anyone", "conditions": [
        {"field": "identity.state", "operator": "in", "value": ["anonymous", "recognized", "authenticated"]}]}))
    .await;
    let mut console = hub.client().await;
    console
        .subscribe_to(
            "premium",
            &["segment:all"],
            Some(json!({"segmentId": [id]})),
        )
        .await;

    let (ada, bob) = (Visitor::new(), Visitor::new());
    publish_all(
        &hub,
        vec![
            identify(&ada, "ada", json!({"plan": "premium"})),
            bob.page(),
        ],
    )
    .await;
    let entered = console.next_event().await;
    let event = &entered["event"];
    assert_eq!(event["topic"], json!("segment:entered"), "{entered}");
    assert_eq!(event["segmentId"], json!(id));
    assert_eq!(event["visitorId"], json!(ada.customer_id));
    assert_eq!(event["customerId"], json!(ada.customer_id));
    // Bob entered only the other segment, which this subscription does not name.
    console.expect_no_frame().await;
    let (_, all) = http
        .get(&format!("/v1/segments/{}", other["id"].as_str().unwrap()))
        .await;
    assert_eq!(all["visitorCount"], json!(2), "{all}");

    let (_, view) = http.get(&format!("/v1/segments/{id}")).await;
    assert_eq!(view["visitorCount"], json!(1));
    let (status, members) = http
        .get(&format!("/v1/segments/{id}/visitors?page=1&limit=10"))
        .await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(members["total"], json!(1));
    assert_eq!(
        (members["page"].clone(), members["limit"].clone()),
        (json!(1), json!(10))
    );
    assert_eq!(members["visitors"][0]["id"], json!(ada.customer_id));
    // Her own view names the segments she is in.
    assert_eq!(
        members["visitors"][0]["segments"],
        json!([{"id": id, "name": "Premium Users"}, {"id": other["id"], "name": "Anyone"}]),
    );

    // An attribute update through the API moves her out.
    let (status, _) = http
        .put(
            &format!("/v1/visitors/{}", ada.customer_id),
            &json!({"attributes": {"plan": "basic"}}),
        )
        .await;
    assert_eq!(status, 200);
    let left = console.next_event().await;
    assert_eq!(left["event"]["topic"], json!("segment:left"), "{left}");
    assert_eq!(left["event"]["visitorId"], json!(ada.customer_id));
    assert!(left["seq"].as_u64() > entered["seq"].as_u64());
    let (_, view) = http.get(&format!("/v1/segments/{id}")).await;
    assert_eq!(view["visitorCount"], json!(0));

    // A changed definition takes in the visitors it now matches, with an event each.
    let basic = json!({"name": "Basic", "conditions": [
        {"field": "attributes.plan", "operator": "equals", "value": "basic"}]});
    http.put(&format!("/v1/segments/{id}"), &basic).await;
    let entered = console.next_event().await;
    assert_eq!(
        entered["event"]["topic"],
        json!("segment:entered"),
        "{entered}"
    );
    assert_eq!(entered["event"]["visitorId"], json!(ada.customer_id));
    // Deleting the segment lets its members go, with an event each.
    http.delete(&format!("/v1/segments/{id}")).await;
    let left = console.next_event().await;
    assert_eq!(left["event"]["topic"], json!("segment:left"), "{left}");
    console.expect_no_frame().await;
}

/// A segment on a company attribute holds every member of the company, and a change to
/// the company's attributes reported by one member moves the others, whose own profiles
/// did not change.
#[tokio::test]
async fn a_change_to_a_company_moves_all_its_members() {
    let hub = Hub::start().await;
    let http = hub.http();
    let segment = create(
        &hub,
        &json!({"name": "Enterprise accounts", "conditions": [
            {"field": "company.plan", "operator": "equals", "value": "enterprise"},
            {"field": "company.id", "operator": "starts_with", "value": "acme"}]}),
    )
    .await;
    let id = segment["id"].as_str().unwrap().to_owned();
    let mut console = hub.client().await;
    console
        .subscribe_to("s", &["segment:all"], Some(json!({"segmentId": [id]})))
        .await;
    let (ada, bob, cy) = (Visitor::new(), Visitor::new(), Visitor::new());
    let works_at = |v: &Visitor, user: &str, company: Value| {
        v.event("identify", user).with("company", company)
    };
    publish_all(
        &hub,
        vec![
            works_at(&ada, "ada", json!({"id": "acme-1", "plan": "enterprise"})),
            // Bob names only the company's id: its plan is the company's, not his report's.
            works_at(&bob, "bob", json!({"id": "acme-1"})),
        ],
    )
    .await;
    let mut entered = Vec::new();
    for _ in 0..2 {
        let frame = console.next_event().await;
        assert_eq!(frame["event"]["topic"], json!("segment:entered"), "{frame}");
        entered.push(frame["event"]["visitorId"].as_str().unwrap().to_owned());
    }
    assert_eq!(entered, [ada.customer_id.clone(), bob.customer_id.clone()]);
    console.expect_no_frame().await;

    // Cy reports the company on another plan: Ada and Bob leave without any event of theirs.
    publish_all(
        &hub,
        vec![works_at(&cy, "cy", json!({"id": "acme-1", "plan": "free"}))],
    )
    .await;
    let mut left = Vec::new();
    for _ in 0..2 {
        let frame = console.next_event().await;
        assert_eq!(frame["event"]["topic"], json!("segment:left"), "{frame}");
        assert_eq!(frame["event"]["customerId"], json!(cy.customer_id));
        left.push(frame["event"]["visitorId"].as_str().unwrap().to_owned());
    }
    left.sort();
    let mut expected = vec![ada.customer_id.clone(), bob.customer_id.clone()];
    expected.sort();
    assert_eq!(left, expected);
    console.expect_no_frame().await;
    let (_, view) = http.get(&format!("/v1/segments/{id}")).await;
    assert_eq!(view["visitorCount"], json!(0), "{view}");

    // The same through the visitor API: a PUT naming the company on enterprise again.
    let (status, body) = http
        .put(
            &format!("/v1/visitors/{}", cy.customer_id),
            &json!({"company": {"id": "acme-1", "plan": "enterprise"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut back = Vec::new();
    for _ in 0..3 {
        let frame = console.next_event().await;
        assert_eq!(frame["event"]["topic"], json!("segment:entered"), "{frame}");
        back.push(frame["event"]["visitorId"].as_str().unwrap().to_owned());
    }
    back.sort();
    let mut all = vec![
        ada.customer_id.clone(),
        bob.customer_id.clone(),
        cy.customer_id.clone(),
    ];
    all.sort();
    assert_eq!(back, all);
    let (_, view) = http.get(&format!("/v1/segments/{id}")).await;
    assert_eq!(view["visitorCount"], json!(3), "{view}");
}

#[tokio::test]
async fn an_erased_visitor_leaves_its_segments_without_an_event() {
    let hub = Hub::start().await;
    let http = hub.http();
    let segment = create(&hub, &premium()).await;
    let id = segment["id"].as_str().unwrap().to_owned();
    let mut console = hub.client().await;
    console.subscribe_to("s", &["segment:all"], None).await;
    let ada = Visitor::new();
    publish_all(
        &hub,
        vec![identify(&ada, "ada", json!({"plan": "premium"}))],
    )
    .await;
    assert_eq!(
        console.next_event().await["event"]["topic"],
        json!("segment:entered")
    );
    let (status, _) = http
        .delete(&format!("/v1/visitors/{}", ada.customer_id))
        .await;
    assert_eq!(status, 200);
    console.expect_no_frame().await;
    let (_, view) = http.get(&format!("/v1/segments/{id}")).await;
    assert_eq!(view["visitorCount"], json!(0));
}

#[tokio::test]
async fn segments_and_members_survive_a_restart_from_a_snapshot_and_from_the_log() {
    let hub = Hub::start().await;
    let segment = create(&hub, &premium()).await;
    let id = segment["id"].as_str().unwrap().to_owned();
    let ada = Visitor::new();
    publish_all(
        &hub,
        vec![identify(&ada, "ada", json!({"plan": "premium"}))],
    )
    .await;
    let check = |hub: &Hub| {
        let (http, id, ada) = (hub.http(), id.clone(), ada.customer_id.clone());
        async move {
            let (status, view) = http.get(&format!("/v1/segments/{id}")).await;
            assert_eq!(status, 200, "{view}");
            assert_eq!(view["name"], json!("Premium Users"));
            assert_eq!(view["visitorCount"], json!(1), "{view}");
            let (_, members) = http.get(&format!("/v1/segments/{id}/visitors")).await;
            assert_eq!(members["visitors"][0]["id"], json!(ada));
            view
        }
    };
    let before = check(&hub).await;
    let hub = hub.restart().await;
    assert_eq!(check(&hub).await, before, "from the snapshot");
    let hub = hub.restart_from_log().await;
    assert_eq!(check(&hub).await, before, "from the log alone");
    // Membership goes on from there: the next change moves her out, with a new id for a
    // new segment.
    let mut console = hub.client().await;
    console
        .subscribe_to(
            "s",
            &["segment:left"],
            Some(json!({"customerId": [ada.customer_id]})),
        )
        .await;
    hub.http()
        .put(
            &format!("/v1/visitors/{}", ada.customer_id),
            &json!({"attributes": {"plan": "basic"}}),
        )
        .await;
    assert_eq!(console.next_event().await["event"]["segmentId"], json!(id));
    let next = create(&hub, &premium()).await;
    assert_ne!(next["id"], json!(id));
}

#[tokio::test]
async fn reading_segments_takes_subscribe_and_changing_them_admin() {
    let hub = Hub::start_with(|c| {
        c.api_keys = "pk-reader=subscribe,pk-publisher=publish,pk-admin=admin"
            .parse()
            .unwrap()
    })
    .await;
    let reader = hub.http_with(&[("x-api-key", "pk-reader")]);
    let publisher = hub.http_with(&[("x-api-key", "pk-publisher")]);
    let admin = hub.http_with(&[("x-api-key", "pk-admin")]);
    for http in [&reader, &publisher] {
        assert_http_error(
            &http.post("/v1/segments", &premium()).await,
            403,
            "forbidden",
        );
    }
    let (status, created) = admin.post("/v1/segments", &premium()).await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/v1/segments/{}", created["id"].as_str().unwrap());
    assert_eq!(reader.get("/v1/segments").await.0, 200);
    assert_eq!(reader.get(&path).await.0, 200);
    assert_eq!(reader.get(&format!("{path}/visitors")).await.0, 200);
    assert_http_error(&publisher.get(&path).await, 403, "forbidden");
    assert_http_error(&reader.put(&path, &premium()).await, 403, "forbidden");
    assert_http_error(&reader.delete(&path).await, 403, "forbidden");
    assert_eq!(admin.delete(&path).await.0, 200);
}
