//! The HTTP API of PROTOCOL.md section 7: publishing, the read endpoints, paging, stats,
//! probes, error shapes, and read-your-writes after a WebSocket publish.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::support::{
    assert_error, assert_event, assert_http_error, assert_timestamp, seq_of, topics, uuid, Action,
    Hub, JsonExt, Visitor,
};

/// Asserts one result item of `POST /v1/events` is accepted (`duplicate` as given) and
/// returns its seq.
fn accepted(result: &Value, duplicate: bool) -> u64 {
    assert_eq!(result["duplicate"], json!(duplicate), "{result}");
    seq_of(result)
}

/// Asserts one result item is refused with `code`.
fn refused(result: &Value, code: &str) {
    let error = result["error"].clone().with("type", json!("error"));
    assert_error(&error, code, None);
}

#[tokio::test]
async fn post_events_takes_one_event_or_an_array_and_answers_per_item_in_order() {
    let hub = Hub::start().await;
    let http = hub.http();
    let action = Action::new("webchat");

    let single = http
        .publish(&action.event("offered").with("eventId", json!("e-1")))
        .await;
    assert_eq!(single.len(), 1);
    let offered = accepted(&single[0], false);

    let batch = json!([
        action.event("accepted"),
        action.event("accepted").with("actionState", json!("bogus")),
        action.event("ended"),
        action.event("offered").with("eventId", json!("e-1")),
        action.event("started"),
        action.event("accepted"),
    ]);
    let results = http.publish(&batch).await;
    assert_eq!(results.len(), 6, "{results:?}");
    let accepted_seq = accepted(&results[0], false);
    refused(&results[1], "invalid_event");
    assert_eq!(
        results[1]["error"]["details"]["field"],
        json!("actionState")
    );
    refused(&results[2], "invalid_transition");
    assert_eq!(accepted(&results[3], true), offered);
    let started = accepted(&results[4], false);
    refused(&results[5], "invalid_transition");
    assert!(offered < accepted_seq && accepted_seq < started);

    // A single refused event is still a 200 with one result.
    let unknown_field = Action::new("webchat")
        .event("qualified")
        .with("colour", json!("red"));
    let only = http.publish(&unknown_field).await;
    refused(&only[0], "invalid_event");
}

#[tokio::test]
async fn a_body_that_is_not_an_event_or_an_array_is_400() {
    let hub = Hub::start().await;
    let http = hub.http();
    for body in [
        "42",
        "\"an event\"",
        "null",
        "true",
        "{\"actionId\": ",
        "",
        "not json",
    ] {
        let answer = http.post_raw("/v1/events", body).await;
        assert_http_error(&answer, 400, "bad_request");
    }
}

#[tokio::test]
async fn batch_and_body_limits_are_refused_413() {
    let hub = Hub::start_with(|c| {
        c.max_batch_events = 5;
        c.max_body_bytes = 8 * 1024;
    })
    .await;
    let http = hub.http();
    let offers = |count: usize| {
        let events = (0..count).map(|_| Action::new("webchat").event("offered"));
        Value::Array(events.collect())
    };
    assert_eq!(http.publish(&offers(5)).await.len(), 5);
    assert_http_error(&http.post("/v1/events", &offers(6)).await, 413, "too_large");
    let big = Action::new("webchat")
        .event("offered")
        .with("data", json!({"pad": "x".repeat(9000)}));
    assert_http_error(&http.post("/v1/events", &big).await, 413, "too_large");
}

#[tokio::test]
async fn get_action_shows_its_state_and_transitions() {
    let hub = Hub::start().await;
    let http = hub.http();
    let action = Action::new("webchat");
    let mut seqs = Vec::new();
    for state in ["qualified", "offered", "accepted"] {
        seqs.push(accepted(
            &http.publish(&action.event(state)).await[0],
            false,
        ));
    }
    let (status, view) = http.get(&format!("/v1/actions/{}", action.action_id)).await;
    assert_eq!(status, 200, "{view}");
    for (key, value) in action.event("accepted").as_object().expect("object") {
        assert_eq!(&view[key], value, "{key}: {view}");
    }
    assert_eq!(view["customerIdType"], json!("cookie"));
    assert_eq!(view["seq"], json!(seqs[2]));
    assert_timestamp(&view["timestamp"]);
    let transitions = view["transitions"].as_array().expect("transitions");
    let states: Vec<(Value, Value)> = transitions
        .iter()
        .map(|t| {
            assert_timestamp(&t["timestamp"]);
            (t["actionState"].clone(), t["seq"].clone())
        })
        .collect();
    let expected: Vec<(Value, Value)> = ["qualified", "offered", "accepted"]
        .iter()
        .zip(&seqs)
        .map(|(state, seq)| (json!(state), json!(seq)))
        .collect();
    assert_eq!(states, expected);
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404_and_400() {
    let hub = Hub::start().await;
    let http = hub.http();
    let rows = [
        (format!("/v1/actions/{}", uuid()), 404, "not_found"),
        ("/v1/actions/not-a-uuid".to_owned(), 400, "bad_request"),
        (format!("/v1/customers/{}", uuid()), 404, "not_found"),
        ("/v1/customers/not-a-uuid".to_owned(), 400, "bad_request"),
        (
            "/v1/customers/not-a-uuid/events".to_owned(),
            400,
            "bad_request",
        ),
        ("/v1/no-such-thing".to_owned(), 404, "not_found"),
        ("/v1/events?bogus=1".to_owned(), 400, "bad_request"),
        (
            "/v1/events?topics=webchat:bogus".to_owned(),
            400,
            "bad_request",
        ),
        (
            "/v1/events?where=%7Bnot%20json".to_owned(),
            400,
            "bad_request",
        ),
        (
            "/v1/events?where=%7B%22customerID%22%3A%5B%5D%7D".to_owned(),
            400,
            "bad_request",
        ),
        ("/v1/events?since=soon".to_owned(), 400, "bad_request"),
    ];
    for (path, status, code) in rows {
        assert_http_error(&http.get(&path).await, status, code);
    }
    // A known path with the wrong method.
    let answer = http
        .post(&format!("/v1/actions/{}", uuid()), &json!({}))
        .await;
    assert_http_error(&answer, 405, "bad_request");
}

#[tokio::test]
async fn get_customer_shows_identity_sessions_and_live_actions() {
    let hub = Hub::start().await;
    let http = hub.http();
    let visitor = Visitor::new();
    let live = visitor.action("webchat");
    let ended = visitor.action("contentoffer");
    let events = [
        visitor.page(),
        visitor.page(),
        live.event("offered"),
        ended.event("offered"),
        ended.event("rejected"),
        visitor.event("userinfo", "user-9"),
    ];
    http.publish(&Value::Array(events.to_vec())).await;

    let (status, customer) = http
        .get(&format!("/v1/customers/{}", visitor.customer_id))
        .await;
    assert_eq!(status, 200, "{customer}");
    assert_eq!(customer["customerId"], json!(visitor.customer_id));
    assert_eq!(
        customer["identity"],
        json!({"state": "recognized", "userId": "user-9"})
    );
    assert_eq!(customer["currentSessionId"], json!(visitor.session_id));
    let sessions = customer["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "{customer}");
    assert_eq!(sessions[0]["sessionId"], json!(visitor.session_id));
    assert_eq!(sessions[0]["pagesViewed"], json!(2));
    assert!(sessions[0].get("endedAt").is_none(), "{customer}");
    let live_ids: Vec<&Value> = customer["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|action| &action["actionId"])
        .collect();
    assert_eq!(live_ids, [&json!(live.action_id)], "only the live action");
    assert!(customer["firstSeen"].is_string() && customer["lastSeen"].is_string());
}

#[tokio::test]
async fn customer_events_are_that_customers_events_in_seq_order() {
    let hub = Hub::start().await;
    let http = hub.http();
    let (visitor, other) = (Visitor::new(), Visitor::new());
    let action = visitor.action("webchat");
    let events = [
        action.event("offered"),
        other.page(),
        visitor.page(),
        action.event("accepted"),
    ];
    let results = http.publish(&Value::Array(events.to_vec())).await;
    let (status, body) = http
        .get(&format!("/v1/customers/{}/events", visitor.customer_id))
        .await;
    assert_eq!(status, 200, "{body}");
    let frames = body["events"].as_array().expect("events");
    assert_eq!(
        topics(frames),
        [
            "session:started",
            "webchat:offered",
            "visitor:page",
            "webchat:accepted"
        ]
    );
    let seqs: Vec<u64> = frames.iter().map(seq_of).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    let own: Vec<u64> = [0, 2, 3].iter().map(|&i| seq_of(&results[i])).collect();
    assert_eq!(seqs[1..], own[..]);
    for frame in frames {
        assert_eq!(
            frame["event"]["customerId"],
            json!(visitor.customer_id),
            "{frame}"
        );
    }
}

/// Follows `next` from `since=0` through every page of the list at `path` (`/v1/events`
/// or a customer's events) with `query`.
async fn read_all_pages(
    hub: &Hub,
    path: &str,
    query: &[(&str, String)],
    limit: usize,
) -> Vec<Value> {
    let http = hub.http();
    let mut since = 0;
    let mut all = Vec::new();
    for _ in 0..1000 {
        let mut params = query.to_vec();
        params.push(("since", since.to_string()));
        params.push(("limit", limit.to_string()));
        let (status, page) = http.get_query(path, &params).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().expect("events").clone();
        assert!(events.len() <= limit, "a page holds at most limit events");
        let next = page["next"].as_u64().expect("next");
        assert!(next >= since, "next moves forward: {since} -> {next}");
        let done = events.len() < limit;
        all.extend(events);
        if done {
            return all;
        }
        since = next;
    }
    panic!("paging did not end");
}

#[tokio::test]
async fn get_events_pages_through_everything_exactly_once() {
    let hub = Hub::start().await;
    let http = hub.http();
    let visitors: Vec<Visitor> = (0..3).map(|_| Visitor::new()).collect();
    let events: Vec<Value> = (0..25)
        .map(|i| visitors[i % 3].action("webchat").event("offered"))
        .chain(visitors.iter().map(Visitor::page))
        .collect();
    let results = http.publish(&Value::Array(events)).await;
    let offered: Vec<u64> = results[..25].iter().map(seq_of).collect();

    let chats = read_all_pages(
        &hub,
        "/v1/events",
        &[("topics", "webchat:all".to_owned())],
        7,
    )
    .await;
    let seqs: Vec<u64> = chats.iter().map(seq_of).collect();
    assert_eq!(seqs, offered, "each webchat event once, in seq order");
    for frame in &chats {
        assert_event(frame, seq_of(frame), "webchat:offered");
    }

    // Everything: 25 offers, 3 session starts, 3 pages.
    let everything = read_all_pages(&hub, "/v1/events", &[], 4).await;
    let unique: BTreeSet<u64> = everything.iter().map(seq_of).collect();
    assert_eq!((everything.len(), unique.len()), (31, 31));

    let filter = json!({"customerId": [visitors[1].customer_id]}).to_string();
    let query = [
        ("topics", "webchat:offered,visitor:all".to_owned()),
        ("where", filter),
    ];
    let own = read_all_pages(&hub, "/v1/events", &query, 3).await;
    let expected: Vec<u64> = results
        .iter()
        .enumerate()
        .filter(|(i, _)| (*i < 25 && i % 3 == 1) || *i == 26)
        .map(|(_, result)| seq_of(result))
        .collect();
    assert_eq!(own.iter().map(seq_of).collect::<Vec<u64>>(), expected);
}

#[tokio::test]
async fn get_events_reports_the_epoch_of_the_websocket() {
    let hub = Hub::start().await;
    let client = hub.client().await;
    let (status, page) = hub.http().get("/v1/events").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["epoch"], json!(client.epoch()));
    assert_eq!(page["events"], json!([]));
}

#[tokio::test]
async fn action_map_stats_count_states_reached_and_the_accept_rate() {
    let hub = Hub::start().await;
    let http = hub.http();
    let (chat_map, offer_map) = (uuid(), uuid());
    let chat = || Action::new("webchat").on_map(&chat_map, 3);
    let (taken, declined, waiting) = (chat(), chat(), chat());
    let offer = Action::new("contentoffer").on_map(&offer_map, 1);
    let events = [
        taken.event("offered"),
        taken.event("accepted"),
        taken.event("started"),
        declined.event("offered"),
        declined.event("rejected"),
        waiting.event("qualified"),
        offer.event("qualified"),
    ];
    http.publish(&Value::Array(events.to_vec())).await;

    let (status, stats) = http.get("/v1/stats/action-maps").await;
    assert_eq!(status, 200, "{stats}");
    let map = |id: &str, version: u64| {
        stats["actionMaps"]
            .as_array()
            .expect("actionMaps")
            .iter()
            .find(|m| m["actionMapId"] == json!(id) && m["actionMapVersion"] == json!(version))
            .unwrap_or_else(|| panic!("{id} v{version} in {stats}"))
            .clone()
    };
    let count = |map: &Value, state: &str| map["counts"][state].as_u64().unwrap_or(0);

    let chats = map(&chat_map, 3);
    assert_eq!(chats["actionMediaType"], json!("webchat"));
    let reached: Vec<u64> = [
        "qualified",
        "offered",
        "accepted",
        "started",
        "rejected",
        "ended",
    ]
    .iter()
    .map(|state| count(&chats, state))
    .collect();
    assert_eq!(reached, [1, 2, 1, 1, 1, 0], "{chats}");
    assert_eq!(chats["acceptRate"], json!(0.5));

    let offers = map(&offer_map, 1);
    assert_eq!(offers["actionMediaType"], json!("contentoffer"));
    assert_eq!(count(&offers, "qualified"), 1);
    assert_eq!(
        offers["acceptRate"],
        Value::Null,
        "null when none was offered"
    );
    assert!(
        offers.get("acceptRate").is_some(),
        "acceptRate is present: {offers}"
    );
}

#[tokio::test]
async fn action_map_stats_keep_the_media_types_of_one_map_apart() {
    let hub = Hub::start().await;
    let http = hub.http();
    let map_id = uuid();
    let chat = Action::new("webchat").on_map(&map_id, 2);
    let offer = Action::new("contentoffer").on_map(&map_id, 2);
    let events = [
        chat.event("offered"),
        chat.event("timedout"),
        offer.event("offered"),
        offer.event("accepted"),
    ];
    for result in http.publish(&Value::Array(events.to_vec())).await {
        seq_of(&result);
    }

    let (status, stats) = http.get("/v1/stats/action-maps").await;
    assert_eq!(status, 200, "{stats}");
    let rows: Vec<(Value, Value)> = stats["actionMaps"]
        .as_array()
        .expect("actionMaps")
        .iter()
        .filter(|m| m["actionMapId"] == json!(map_id))
        .map(|m| (m["actionMediaType"].clone(), m["counts"].clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (json!("webchat"), json!({"offered": 1, "timedout": 1})),
            (json!("contentoffer"), json!({"offered": 1, "accepted": 1})),
        ],
        "one row per media type, each with only its own states: {stats}"
    );
}

/// The event the README's short tour publishes, as its shell snippet would send it on one
/// run: the here-document's text with each `name=$(new_id)` variable a fresh UUID.
fn readme_tour_event() -> Value {
    let readme = include_str!("../../README.md");
    let tour = &readme[readme.find("## A short tour").expect("the tour")..];
    let fresh: Vec<&str> = tour
        .lines()
        .find(|line| line.contains("=$(new_id)"))
        .expect("the line that makes up the ids")
        .split_whitespace()
        .filter_map(|word| word.strip_suffix("=$(new_id)"))
        .collect();
    let body = tour.split("<<JSON\n").nth(1).expect("the here-document");
    let mut body = body[..body.find("\nJSON\n").expect("its end")].to_owned();
    for name in fresh {
        body = body.replace(&format!("${name}"), &uuid());
    }
    assert!(
        !body.contains('$'),
        "every variable is made up by the tour: {body}"
    );
    serde_json::from_str(&body).expect("the tour's event is JSON")
}

#[tokio::test]
async fn the_readme_tour_can_be_run_twice_on_the_same_hub() {
    let hub = Hub::start().await;
    let mut subscriber = hub.client().await;
    subscriber
        .subscribe_to("chats", &["webchat:all"], None)
        .await;
    for run in 0..2 {
        let event = readme_tour_event();
        let results = hub.http().publish(&event).await;
        assert_eq!(results.len(), 1);
        accepted(&results[0], false);
        let heard = subscriber.next_event().await;
        assert_eq!(heard["topic"], json!("webchat:offered"), "run {run}");
        assert_eq!(heard["event"]["actionId"], event["actionId"], "run {run}");
    }
}

#[tokio::test]
async fn refusals_give_the_real_bound_of_action_map_version() {
    let hub = Hub::start().await;
    let http = hub.http();
    let too_big = Action::new("webchat")
        .event("offered")
        .with("actionMapVersion", json!(u64::from(u32::MAX) + 1));
    let results = http.publish(&too_big).await;
    refused(&results[0], "invalid_event");
    assert_eq!(
        results[0]["error"]["message"],
        json!("actionMapVersion must be an integer from 1 to 4294967295"),
        "{results:?}"
    );
    let answer = http
        .get_query(
            "/v1/events",
            &[("where", json!({"actionMapVersion": [0]}).to_string())],
        )
        .await;
    assert_http_error(&answer, 400, "bad_request");
    let message = answer.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("from 1 to 4294967295"), "{message}");
}

#[tokio::test]
async fn refusals_name_an_identify_event_with_its_article() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let results = hub
        .http()
        .publish(&visitor.event("identify", "alice").without("userId"))
        .await;
    refused(&results[0], "invalid_event");
    let message = results[0]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("an identify event "), "{message}");
}

#[tokio::test]
async fn endpoints_without_query_parameters_refuse_any_by_name() {
    let hub = Hub::start().await;
    let http = hub.http();
    let action = Action::new("webchat");
    let results = http.publish(&action.event("offered")).await;
    accepted(&results[0], false);
    let reads = [
        format!("/v1/actions/{}", action.action_id),
        format!("/v1/customers/{}", action.customer_id),
        "/v1/stats/action-maps".to_owned(),
    ];
    for path in reads {
        let answer = http.get(&format!("{path}?bogus=1")).await;
        assert_http_error(&answer, 400, "bad_request");
        let message = answer.1["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("\"bogus\""), "{path}: {message}");
        assert_eq!(http.get(&path).await.0, 200, "{path} without it");
    }
    let writes = [
        ("/v1/events?bogus=1", action.event("accepted")),
        (
            "/v1/tokens?bogus=1",
            json!({"customerId": action.customer_id}),
        ),
    ];
    for (path, body) in writes {
        let answer = http.post(path, &body).await;
        assert_http_error(&answer, 400, "bad_request");
        let message = answer.1["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("\"bogus\""), "{path}: {message}");
    }
    let (_, state) = http.get(&format!("/v1/actions/{}", action.action_id)).await;
    assert_eq!(
        state["actionState"],
        json!("offered"),
        "the refused publish did nothing"
    );
}

#[tokio::test]
async fn probes_and_metrics_answer() {
    let hub = Hub::start().await;
    let http = hub.http();
    for path in ["/healthz", "/readyz"] {
        let (status, _, _) = http.get_text(path).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, content_type, body) = http.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain")
            || content_type.starts_with("application/openmetrics-text"),
        "Prometheus text: {content_type}"
    );
    assert!(body.contains("# TYPE"), "{body}");
}

#[tokio::test]
async fn a_publish_acknowledged_over_websocket_is_visible_to_every_later_read() {
    let hub = Hub::start().await;
    let http = hub.http();
    let mut publisher = hub.client().await;
    let mut watcher = hub.client().await;
    let path = ["offered", "accepted", "started", "engaged", "ended"];
    for reached in 1..=path.len() {
        let action = Action::new("webchat");
        let mut seq = None;
        for step in &path[..reached] {
            seq = Some(publisher.publish_ok(action.event(step)).await);
        }
        let (state, seq) = (path[reached - 1], seq.expect("at least one step"));
        let (status, view) = http.get(&format!("/v1/actions/{}", action.action_id)).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(
            (view["actionState"].clone(), view["seq"].clone()),
            (json!(state), json!(seq))
        );
        let (_, page) = http
            .get(&format!("/v1/customers/{}/events", action.customer_id))
            .await;
        let last = page["events"]
            .as_array()
            .and_then(|events| events.last())
            .cloned();
        assert_eq!(last.as_ref().map(seq_of), Some(seq), "{page}");
        let body =
            json!({"topics": ["all"], "where": {"actionId": [action.action_id]}, "snapshot": true});
        watcher.subscribe(json!(reached), body).await;
        let snapshot = watcher.expect_type("snapshot").await;
        let shown = &snapshot["actions"][0];
        assert_eq!(
            (shown["actionState"].clone(), shown["seq"].clone()),
            (json!(state), json!(seq))
        );
    }
}

#[tokio::test]
async fn http_duplicates_carry_the_original_seq() {
    let hub = Hub::start().await;
    let http = hub.http();
    let event = Action::new("contentoffer")
        .event("offered")
        .with("eventId", json!("retry-me"));
    let first = accepted(&http.publish(&event).await[0], false);
    let again = http.publish(&json!([event, event])).await;
    assert_eq!(
        [accepted(&again[0], true), accepted(&again[1], true)],
        [first, first]
    );
}

#[tokio::test]
async fn lists_default_to_100_and_a_customers_events_page_too() {
    let hub = Hub::start().await;
    let http = hub.http();
    let visitor = Visitor::new();
    let events: Vec<Value> = (0..150)
        .map(|_| visitor.action("webchat").event("offered"))
        .collect();
    let results = http.publish(&Value::Array(events)).await;
    let mut expected: Vec<u64> = results.iter().map(seq_of).collect();

    let (status, first_page) = http.get("/v1/events?topics=webchat:all").await;
    assert_eq!(status, 200, "{first_page}");
    let first: Vec<u64> = first_page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(seq_of)
        .collect();
    assert_eq!(first, expected[..100], "the default limit is 100");

    // The customer's own list: its session start, then the 150 offers, page by page.
    let path = format!("/v1/customers/{}/events", visitor.customer_id);
    let all = read_all_pages(&hub, &path, &[], 40).await;
    assert_eq!(topics(&all[..1]), ["session:started"]);
    let seqs: Vec<u64> = all[1..].iter().map(seq_of).collect();
    expected.sort_unstable();
    assert_eq!(seqs, expected);
}
