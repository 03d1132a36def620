//! Topic patterns and `where` filters (PROTOCOL.md section 4): one fixed set of events,
//! many subscriptions, each of which must receive exactly the events it names.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::support::{assert_error, seq_of, Action, Client, Hub, JsonExt, Visitor};

/// Two customers and their actions, with a label for every id so that a delivered event
/// can be named in a table row: `"a1.offered"`, `"c2.track"`, `"c1.session:started"`.
struct Fixture {
    c1: Visitor,
    c2: Visitor,
    a1: Action,
    b1: Action,
    user: String,
    labels: HashMap<String, &'static str>,
}

impl Fixture {
    fn new() -> Fixture {
        let (c1, c2) = (Visitor::new(), Visitor::new());
        let a1 = c1.action("webchat").on_map(&crate::support::uuid(), 1);
        let b1 = c2.action("contentoffer").on_map(&crate::support::uuid(), 2);
        let labels = HashMap::from([
            (c1.customer_id.clone(), "c1"),
            (c2.customer_id.clone(), "c2"),
            (a1.action_id.clone(), "a1"),
            (b1.action_id.clone(), "b1"),
        ]);
        let user = format!("user-{}", crate::support::uuid());
        Fixture {
            c1,
            c2,
            a1,
            b1,
            user,
            labels,
        }
    }

    /// The events published after the subscriptions, in order. (The hub adds a
    /// `session:started` before the first event of each customer.)
    fn events(&self) -> Vec<Value> {
        vec![
            self.a1.event("offered"),
            self.b1.event("offered"),
            self.a1.event("accepted"),
            self.c1.page(),
            self.c2.event("track", ""),
            self.b1.event("accepted"),
        ]
    }

    /// Every label, in the order the hub delivers them.
    const ALL: [&'static str; 8] = [
        "c1.session:started",
        "a1.offered",
        "c2.session:started",
        "b1.offered",
        "a1.accepted",
        "c1.page",
        "c2.track",
        "b1.accepted",
    ];

    fn label(&self, frame: &Value) -> String {
        let event = &frame["event"];
        let name = |id: &Value| self.labels[id.as_str().expect("an id")];
        let topic = frame["topic"].as_str().expect("topic");
        if let Some(action) = event.get("actionId") {
            format!(
                "{}.{}",
                name(action),
                event["actionState"].as_str().expect("state")
            )
        } else if topic.starts_with("session:") {
            format!("{}.{topic}", name(&event["customerId"]))
        } else {
            format!(
                "{}.{}",
                name(&event["customerId"]),
                event["type"].as_str().expect("type")
            )
        }
    }

    /// The `where` of a table row, with ids put in for the labels in `spec`
    /// (`{"customerId": ["c1"]}` becomes the real customerId).
    fn resolve(&self, spec: &Value) -> Value {
        let by_label: HashMap<&str, String> = [
            ("c1", self.c1.customer_id.clone()),
            ("c2", self.c2.customer_id.clone()),
            ("s1", self.c1.session_id.clone()),
            ("s2", self.c2.session_id.clone()),
            ("a1", self.a1.action_id.clone()),
            ("b1", self.b1.action_id.clone()),
            ("m1", self.a1.map_id.clone()),
            ("m2", self.b1.map_id.clone()),
            ("u1", self.user.clone()),
        ]
        .into();
        let mut resolved = spec.clone();
        for values in resolved
            .as_object_mut()
            .expect("where is an object")
            .values_mut()
        {
            for value in values.as_array_mut().expect("a list") {
                if let Some(id) = value.as_str().and_then(|label| by_label.get(label)) {
                    *value = json!(id);
                }
            }
        }
        resolved
    }
}

/// Each row: topic patterns, a `where` in labels (or null), and the labels it receives.
fn cases() -> Vec<(&'static [&'static str], Value, Vec<&'static str>)> {
    let everything = Fixture::ALL.to_vec();
    vec![
        (
            &["webchat:all"],
            Value::Null,
            vec!["a1.offered", "a1.accepted"],
        ),
        (
            &["all:offered"],
            Value::Null,
            vec!["a1.offered", "b1.offered"],
        ),
        (&["all"], Value::Null, everything.clone()),
        (&["all:all"], Value::Null, everything),
        (
            &["contentoffer:accepted", "visitor:track"],
            Value::Null,
            vec!["c2.track", "b1.accepted"],
        ),
        (
            &["session:all"],
            Value::Null,
            vec!["c1.session:started", "c2.session:started"],
        ),
        (&["visitor:all"], Value::Null, vec!["c1.page", "c2.track"]),
        (
            &["all"],
            json!({"customerId": ["c1"]}),
            vec!["c1.session:started", "a1.offered", "a1.accepted", "c1.page"],
        ),
        (
            &["all"],
            json!({"sessionId": ["s2"]}),
            vec![
                "c2.session:started",
                "b1.offered",
                "c2.track",
                "b1.accepted",
            ],
        ),
        (
            &["all"],
            json!({"actionId": ["a1"]}),
            vec!["a1.offered", "a1.accepted"],
        ),
        (
            &["all"],
            json!({"actionMapId": ["m2"]}),
            vec!["b1.offered", "b1.accepted"],
        ),
        (
            &["all"],
            json!({"actionMapVersion": [1]}),
            vec!["a1.offered", "a1.accepted"],
        ),
        (
            &["all"],
            json!({"userId": ["u1"]}),
            vec!["c1.session:started", "a1.offered", "a1.accepted", "c1.page"],
        ),
        // OR within a list.
        (
            &["all"],
            json!({"actionId": ["a1", "b1"]}),
            vec!["a1.offered", "b1.offered", "a1.accepted", "b1.accepted"],
        ),
        // AND across fields.
        (
            &["all"],
            json!({"customerId": ["c1", "c2"], "actionMapVersion": [2]}),
            vec!["b1.offered", "b1.accepted"],
        ),
        (
            &["all"],
            json!({"userId": ["u1"], "sessionId": ["s2"]}),
            vec![],
        ),
        // Patterns and `where` together.
        (
            &["all:accepted"],
            json!({"customerId": ["c2"]}),
            vec!["b1.accepted"],
        ),
        (
            &["visitor:all", "webchat:offered"],
            json!({"customerId": ["c1"]}),
            vec!["a1.offered", "c1.page"],
        ),
    ]
}

#[tokio::test]
async fn each_subscription_receives_exactly_what_its_patterns_and_where_name() {
    let hub = Hub::start().await;
    let fixture = Fixture::new();
    let mut publisher = hub.client().await;
    // c1 is linked to the user before anything is watched; identify needs no session.
    let link = fixture
        .c1
        .event("identify", &fixture.user)
        .without("sessionId");
    publisher.publish_ok(link).await;

    let mut subscribers: Vec<(Client, Vec<&'static str>, String)> = Vec::new();
    for (patterns, spec, expected) in cases() {
        let mut client = hub.client().await;
        let filter = (!spec.is_null()).then(|| fixture.resolve(&spec));
        client.subscribe_to("case", patterns, filter).await;
        subscribers.push((client, expected, format!("{patterns:?} where {spec}")));
    }
    let mut acked = Vec::new();
    for event in fixture.events() {
        acked.push(publisher.publish_ok(event).await);
    }
    for (mut client, expected, case) in subscribers {
        let mut frames = client.events(expected.len()).await;
        // Order is promised per customer only; seq order is the publish order here.
        frames.sort_by_key(seq_of);
        let labels: Vec<String> = frames.iter().map(|frame| fixture.label(frame)).collect();
        assert_eq!(labels, expected, "{case}");
        client.expect_no_frame().await;
    }
    // The published events kept their seqs in the order published.
    assert!(acked.windows(2).all(|pair| pair[0] < pair[1]), "{acked:?}");
}

#[tokio::test]
async fn bad_patterns_and_filters_are_bad_request() {
    let customer = crate::support::uuid();
    let rows: Vec<(&str, Value)> = vec![
        ("no topics", json!({})),
        ("empty topics", json!({"topics": []})),
        ("topics not a list", json!({"topics": "all"})),
        ("unknown family", json!({"topics": ["chat:all"]})),
        ("unknown state", json!({"topics": ["webchat:waiting"]})),
        ("all with unknown name", json!({"topics": ["all:waiting"]})),
        (
            "state of the other media",
            json!({"topics": ["contentoffer:started"]}),
        ),
        (
            "lifecycle state as visitor name",
            json!({"topics": ["visitor:offered"]}),
        ),
        ("bare family", json!({"topics": ["webchat"]})),
        ("three parts", json!({"topics": ["webchat:offered:x"]})),
        ("empty pattern", json!({"topics": [""]})),
        ("upper case", json!({"topics": ["WEBCHAT:offered"]})),
        (
            "one bad among good",
            json!({"topics": ["webchat:all", "webchat:bogus"]}),
        ),
        (
            "unknown where field",
            json!({"topics": ["all"], "where": {"customerID": [customer]}}),
        ),
        (
            "empty where list",
            json!({"topics": ["all"], "where": {"customerId": []}}),
        ),
        (
            "where value not a list",
            json!({"topics": ["all"], "where": {"customerId": customer}}),
        ),
        (
            "where not an object",
            json!({"topics": ["all"], "where": [customer]}),
        ),
    ];
    // More refusals than the default bad-frame limit: this test is not about the limit.
    let hub = Hub::start_with(|c| c.max_bad_frames = 100).await;
    let mut client = hub.client().await;
    for (index, (name, mut body)) in rows.into_iter().enumerate() {
        body["op"] = json!("subscribe");
        body["sub"] = json!(format!("sub-{index}"));
        let reply = client.request(body).await;
        assert_eq!(reply["code"], json!("bad_request"), "{name}: {reply}");
        assert_error(&reply, "bad_request", None);
    }
    // None of them subscribed to anything.
    client
        .publish_ok(Action::new("webchat").event("offered"))
        .await;
    client.expect_no_frame().await;
}
