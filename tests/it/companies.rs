//! Companies (issue 15, part 2): a visitor's `company` from identity events, updates and
//! `PUT /v1/visitors/{id}`, one company per visitor (newest wins); the company list,
//! search and view with counts kept as memberships change; the visitor list by company;
//! anonymizing and deleting take the membership and leave the company; all of it after a
//! restart.

use serde_json::{json, Value};

use crate::support::{assert_http_error, sorted_ids, Hub, JsonExt, Visitor};

async fn publish_all(hub: &Hub, events: Vec<Value>) {
    for result in hub.http().publish(&Value::Array(events)).await {
        assert!(result["seq"].is_u64(), "refused: {result}");
    }
}

fn identify_at(visitor: &Visitor, user: &str, company: Value) -> Value {
    visitor.event("identify", user).with("company", company)
}

async fn company(hub: &Hub, id: &str) -> Value {
    let (status, view) = hub.http().get(&format!("/v1/companies/{id}")).await;
    assert_eq!(status, 200, "{view}");
    view
}

async fn visitors_of(hub: &Hub, company: &str) -> Vec<String> {
    let (status, list) = hub
        .http()
        .get_query("/v1/visitors", &[("companyId", company.to_string())])
        .await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<Value> = list["visitors"]
        .as_array()
        .expect("visitors")
        .iter()
        .map(|v| v["visitorId"].clone())
        .collect();
    sorted_ids(&Value::Array(ids))
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn identify_makes_a_visitor_a_member_and_the_company_counts_its_visitors() {
    let hub = Hub::start().await;
    let (ann, bob) = (Visitor::new(), Visitor::new());
    publish_all(
        &hub,
        vec![
            identify_at(
                &ann,
                "ann",
                json!({"id": "acme", "name": "Acme Inc", "plan": "enterprise"}),
            ),
            identify_at(&bob, "bob", json!({"id": "acme", "employees": 250})),
        ],
    )
    .await;
    let acme = company(&hub, "acme").await;
    assert_eq!(acme["id"], json!("acme"));
    assert_eq!(
        acme["name"],
        json!("Acme Inc"),
        "a report without a name keeps it"
    );
    assert_eq!(
        acme["attributes"],
        json!({"plan": "enterprise", "employees": 250})
    );
    assert_eq!(acme["visitorCount"], json!(2));
    assert!(
        acme["firstSeenAt"].as_str() <= acme["lastSeenAt"].as_str(),
        "{acme}"
    );
    let (_, view) = hub.http().get("/v1/visitors/user:ann").await;
    assert_eq!(view["company"], json!({"id": "acme", "name": "Acme Inc"}));
    assert_eq!(
        visitors_of(&hub, "acme").await,
        sorted(vec![ann.customer_id.clone(), bob.customer_id.clone()])
    );
    // A member's later events are the company's last sighting too.
    let seen = acme["lastSeenAt"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    publish_all(&hub, vec![ann.page()]).await;
    let later = company(&hub, "acme").await["lastSeenAt"].clone();
    assert!(later.as_str() > seen.as_str(), "{seen} then {later}");
}

#[tokio::test]
async fn the_newest_company_wins_and_the_counts_follow() {
    let hub = Hub::start().await;
    let (ann, bob) = (Visitor::new(), Visitor::new());
    publish_all(
        &hub,
        vec![
            identify_at(&ann, "ann", json!({"id": "acme", "name": "Acme"})),
            identify_at(&bob, "bob", json!({"id": "acme"})),
            // Ann moves, through an update of her current visitor.
            ann.event("update", "")
                .with("attributes", json!({"role": "cto"}))
                .with("company", json!({"id": "globex", "name": "Globex"})),
        ],
    )
    .await;
    assert_eq!(company(&hub, "acme").await["visitorCount"], json!(1));
    assert_eq!(company(&hub, "globex").await["visitorCount"], json!(1));
    assert_eq!(
        visitors_of(&hub, "acme").await,
        vec![bob.customer_id.clone()]
    );
    assert_eq!(
        visitors_of(&hub, "globex").await,
        vec![ann.customer_id.clone()]
    );
    // And Bob through the API.
    let (status, view) = hub
        .http()
        .put(
            "/v1/visitors/user:bob",
            &json!({"company": {"id": "globex", "region": "emea"}}),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["company"], json!({"id": "globex", "name": "Globex"}));
    let globex = company(&hub, "globex").await;
    assert_eq!(globex["visitorCount"], json!(2));
    assert_eq!(globex["attributes"], json!({"region": "emea"}));
    // The company a visitor left stays, with nobody in it.
    assert_eq!(company(&hub, "acme").await["visitorCount"], json!(0));
    assert!(visitors_of(&hub, "acme").await.is_empty());
    // Two members merged into one visitor are one member.
    let (status, merged) = hub
        .http()
        .post(
            "/v1/visitors/merge",
            &json!({"sourceVisitorId": bob.customer_id, "targetVisitorId": ann.customer_id}),
        )
        .await;
    assert_eq!(status, 200, "{merged}");
    assert_eq!(company(&hub, "globex").await["visitorCount"], json!(1));
}

#[tokio::test]
async fn the_company_list_searches_id_and_name_and_pages() {
    let hub = Hub::start().await;
    let names = [
        ("acme", "Acme Inc"),
        ("globex", "Globex"),
        ("initech", "Initech"),
    ];
    let events = names
        .iter()
        .map(|(id, name)| identify_at(&Visitor::new(), id, json!({"id": id, "name": name})))
        .collect();
    publish_all(&hub, events).await;
    let http = hub.http();
    let (status, all) = http.get("/v1/companies").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        (&all["total"], &all["page"], &all["limit"]),
        (&json!(3), &json!(1), &json!(50))
    );
    let (_, found) = http
        .get_query("/v1/companies", &[("search", "INC".into())])
        .await;
    let ids: Vec<&Value> = found["companies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, [&json!("acme")], "by name, ignoring case: {found}");
    let (_, found) = http
        .get_query("/v1/companies", &[("search", "glob".into())])
        .await;
    assert_eq!(
        found["companies"][0]["id"],
        json!("globex"),
        "by id: {found}"
    );
    let (_, second) = http
        .get_query(
            "/v1/companies",
            &[("page", "2".into()), ("limit", "2".into())],
        )
        .await;
    assert_eq!(second["companies"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["total"], json!(3));
    assert_http_error(
        &http.get("/v1/companies?color=red").await,
        400,
        "bad_request",
    );
    assert_http_error(&http.get("/v1/companies?limit=0").await, 400, "bad_request");
    assert_http_error(&http.get("/v1/companies/nobody").await, 404, "not_found");
    assert_http_error(
        &http.get("/v1/companies/acme?x=1").await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn anonymizing_and_deleting_take_the_membership_and_leave_the_company() {
    let hub = Hub::start().await;
    let (ann, bob, cat) = (Visitor::new(), Visitor::new(), Visitor::new());
    publish_all(
        &hub,
        ["ann", "bob", "cat"]
            .iter()
            .zip([&ann, &bob, &cat])
            .map(|(user, v)| identify_at(v, user, json!({"id": "acme", "name": "Acme"})))
            .collect(),
    )
    .await;
    assert_eq!(company(&hub, "acme").await["visitorCount"], json!(3));
    let http = hub.http();
    let (status, view) = http
        .post(
            &format!("/v1/visitors/{}/anonymize", ann.customer_id),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["company"], Value::Null);
    let (status, _) = http.delete("/v1/visitors/user:bob").await;
    assert_eq!(status, 200);
    let acme = company(&hub, "acme").await;
    assert_eq!(acme["visitorCount"], json!(1), "{acme}");
    assert_eq!(acme["name"], json!("Acme"));
    assert_eq!(
        visitors_of(&hub, "acme").await,
        vec![cat.customer_id.clone()]
    );
    // The anonymized identify keeps no trace of where Ann works.
    let (_, events) = http
        .get(&format!("/v1/visitors/{}/events", ann.customer_id))
        .await;
    assert!(
        !events.to_string().contains("Acme"),
        "anonymized history names no company: {events}"
    );
}

#[tokio::test]
async fn companies_and_memberships_survive_a_restart() {
    let hub = Hub::start().await;
    let (ann, bob) = (Visitor::new(), Visitor::new());
    publish_all(
        &hub,
        vec![
            identify_at(
                &ann,
                "ann",
                json!({"id": "acme", "name": "Acme", "tier": 1}),
            ),
            identify_at(&bob, "bob", json!({"id": "acme"})),
        ],
    )
    .await;
    let (status, _) = hub.http().delete("/v1/visitors/user:bob").await;
    assert_eq!(status, 200);
    let before = company(&hub, "acme").await;
    assert_eq!(before["visitorCount"], json!(1));
    // The final snapshot holds them, and the log after it replays onto them.
    let hub = hub.restart().await;
    assert_eq!(company(&hub, "acme").await, before);
    publish_all(&hub, vec![identify_at(&bob, "bob2", json!({"id": "acme"}))]).await;
    assert_eq!(company(&hub, "acme").await["visitorCount"], json!(2));
    let (_, view) = hub.http().get("/v1/visitors/user:ann").await;
    assert_eq!(view["company"], json!({"id": "acme", "name": "Acme"}));
}

#[tokio::test]
async fn a_company_must_have_an_id_and_ride_an_event_that_sets_attributes() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let mut client = hub.client().await;
    let refusals = [
        (
            identify_at(&visitor, "u", json!({"name": "No id"})),
            "company.id",
        ),
        (identify_at(&visitor, "u", json!({"id": 7})), "company.id"),
        (identify_at(&visitor, "u", json!({"id": ""})), "company.id"),
        (
            identify_at(&visitor, "u", json!({"id": "a", "name": 1})),
            "company.name",
        ),
        (identify_at(&visitor, "u", json!("acme")), "company"),
        (
            identify_at(&visitor, "u", json!({"id": "a", "blob": "x".repeat(5000)})),
            "company",
        ),
        (
            visitor.page().with("company", json!({"id": "a"})),
            "company",
        ),
    ];
    for (event, field) in refusals {
        client
            .publish_refused(event, "invalid_event", Some(field))
            .await;
    }
    let (_, list) = hub.http().get("/v1/companies").await;
    assert_eq!(list["total"], json!(0), "nothing was kept: {list}");
    let http = hub.http();
    let path = format!("/v1/visitors/{}", visitor.customer_id);
    client.publish_ok(visitor.page()).await;
    for bad in [
        json!({}),
        json!({"company": {"name": "x"}}),
        json!({"company": "acme"}),
    ] {
        assert_http_error(&http.put(&path, &bad).await, 400, "bad_request");
    }
}

#[tokio::test]
async fn a_companys_attributes_are_bounded_like_a_profiles_traits() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    // Each report fits, but together they would pass the 16 KiB a company may hold.
    for n in 0..4 {
        let big = json!({"id": "acme", format!("k{n}"): "x".repeat(3900)});
        client
            .publish_ok(identify_at(&Visitor::new(), &format!("u{n}"), big))
            .await;
    }
    let big = json!({"id": "acme", "k4": "x".repeat(3900)});
    let refused = client
        .publish_refused(
            identify_at(&Visitor::new(), "u4", big),
            "too_large",
            Some("company"),
        )
        .await;
    assert_eq!(
        refused["details"]["limit"],
        json!("companyAttributesBytes"),
        "{refused}"
    );
    assert_eq!(company(&hub, "acme").await["visitorCount"], json!(4));
}
