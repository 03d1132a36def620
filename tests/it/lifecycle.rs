//! Lifecycle events over the wire (PROTOCOL.md section 2 and the lifecycle shape of
//! section 3): every transition of both tables, refusals, duplicates and validation.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};

use crate::support::{
    assert_error, assert_event, assert_type, seq_of, Action, Client, Hub, JsonExt, Visitor,
    NOT_V4_UUID,
};

/// A media type's lifecycle, copied from PROTOCOL.md section 2: (from, allowed next states).
/// `""` is the action before its first event.
struct Lifecycle {
    media: &'static str,
    edges: &'static [(&'static str, &'static [&'static str])],
    terminal: &'static [&'static str],
}

const WEBCHAT: Lifecycle = Lifecycle {
    media: "webchat",
    edges: &[
        ("", &["qualified", "offered"]),
        ("qualified", &["offered", "errored"]),
        (
            "offered",
            &["accepted", "rejected", "ignored", "timedout", "errored"],
        ),
        ("accepted", &["started", "rejected", "errored"]),
        ("started", &["engaged", "ended", "errored"]),
        ("engaged", &["ended", "errored"]),
    ],
    terminal: &["rejected", "ignored", "timedout", "errored", "ended"],
};

const CONTENTOFFER: Lifecycle = Lifecycle {
    media: "contentoffer",
    edges: &[
        ("", &["qualified", "offered"]),
        ("qualified", &["offered", "errored"]),
        ("offered", &["accepted", "rejected", "ignored", "errored"]),
    ],
    terminal: &["accepted", "rejected", "ignored", "errored"],
};

impl Lifecycle {
    fn next(&self, from: &str) -> &'static [&'static str] {
        self.edges
            .iter()
            .find(|(state, _)| *state == from)
            .map_or(&[], |(_, next)| next)
    }

    /// Every state of the table, in the order first reached.
    fn states(&self) -> Vec<&'static str> {
        let mut states: Vec<&'static str> = Vec::new();
        for (_, next) in self.edges {
            for state in *next {
                if !states.contains(state) {
                    states.push(state);
                }
            }
        }
        states
    }

    /// Every (from, to) pair of two different states, `from` first the new action (`""`)
    /// and then each state in the order of [`Lifecycle::states`].
    fn pairs(&self) -> Vec<(&'static str, &'static str)> {
        let states = self.states();
        let froms = std::iter::once("").chain(states.iter().copied());
        froms
            .flat_map(|from| {
                let tos = states.iter().copied().filter(move |&to| to != from);
                tos.map(move |to| (from, to))
            })
            .collect()
    }

    /// The shortest path of states from a new action to `target` (breadth first).
    fn path_to(&self, target: &str) -> Vec<&'static str> {
        let mut came_from: HashMap<&str, &str> = HashMap::new();
        let mut queue = VecDeque::from([""]);
        while let Some(state) = queue.pop_front() {
            for next in self.next(state) {
                if !came_from.contains_key(next) {
                    came_from.insert(next, state);
                    queue.push_back(next);
                }
            }
        }
        let mut path = Vec::new();
        let mut state = target;
        while !state.is_empty() {
            let (&known, &previous) = came_from
                .get_key_value(state)
                .unwrap_or_else(|| panic!("{target} is reachable"));
            path.push(known);
            state = previous;
        }
        path.reverse();
        path
    }

    /// What reporting `to` on an action in `from` must answer: `None` for accepted, or
    /// the error code.
    fn expected(&self, from: &str, to: &str) -> Option<&'static str> {
        if self.next(from).contains(&to) {
            None
        } else if self.terminal.contains(&from) {
            Some("action_terminal")
        } else {
            Some("invalid_transition")
        }
    }
}

/// A publisher, and a subscriber to every topic of both tables.
async fn publisher_and_subscriber(hub: &Hub) -> (Client, Client) {
    let publisher = hub.client().await;
    let mut subscriber = hub.client().await;
    subscriber
        .subscribe_to("lifecycles", &["webchat:all", "contentoffer:all"], None)
        .await;
    (publisher, subscriber)
}

/// Publishes `state` for `action` and checks both the reply and, for an accepted event,
/// its delivery to `subscriber`.
async fn report(
    publisher: &mut Client,
    subscriber: &mut Client,
    action: &Action,
    state: &str,
    expected_error: Option<&str>,
) {
    let reply = publisher.publish(action.event(state)).await;
    match expected_error {
        None => {
            assert_type(&reply, "published");
            assert_eq!(reply["duplicate"], json!(false), "{state}: {reply}");
            let frame = subscriber.next_event().await;
            let event = assert_event(&frame, seq_of(&reply), &action.topic(state));
            assert_eq!(event["actionId"], json!(action.action_id));
            assert_eq!(event["actionState"], json!(state));
            assert_eq!(
                event["customerIdType"],
                json!("cookie"),
                "filled in: {event}"
            );
        }
        Some(code) => assert_error(&reply, code, None),
    }
}

/// A new action of `lifecycle` brought to `state` by its shortest path, each step
/// [`report`]ed and checked.
async fn action_in(
    publisher: &mut Client,
    subscriber: &mut Client,
    lifecycle: &Lifecycle,
    state: &str,
) -> Action {
    let action = Action::new(lifecycle.media);
    for step in lifecycle.path_to(state) {
        report(publisher, subscriber, &action, step, None).await;
    }
    action
}

/// Every (from, to) pair of both tables, each on a fresh action: allowed transitions are
/// published and delivered under the right topic, the others refused with the right code.
#[tokio::test]
async fn every_transition_of_both_tables_is_allowed_or_refused_as_the_table_says() {
    let hub = Hub::start().await;
    let (mut publisher, mut subscriber) = publisher_and_subscriber(&hub).await;
    for lifecycle in [WEBCHAT, CONTENTOFFER] {
        for (from, to) in lifecycle.pairs() {
            let action = action_in(&mut publisher, &mut subscriber, &lifecycle, from).await;
            let expected = lifecycle.expected(from, to);
            report(&mut publisher, &mut subscriber, &action, to, expected).await;
        }
    }
    subscriber.expect_no_frame().await;
}

/// A report carrying a session new to the customer ends the open session first, and
/// ending it moves that session's `offered` actions to `ignored`. So the report is decided
/// as if after that: every report for an action offered in the replaced session is
/// `action_terminal` (and changes nothing), every other pair is decided by the table. No
/// subscriber ever sees an action move on after a terminal state.
#[tokio::test]
async fn a_report_in_a_new_session_is_decided_after_the_session_ends() {
    let hub = Hub::start().await;
    let (mut publisher, mut subscriber) = publisher_and_subscriber(&hub).await;
    for lifecycle in [WEBCHAT, CONTENTOFFER] {
        // A new action has no session to replace.
        let pairs = lifecycle
            .pairs()
            .into_iter()
            .filter(|(from, _)| !from.is_empty());
        for (from, to) in pairs {
            let action = action_in(&mut publisher, &mut subscriber, &lifecycle, from).await;
            let moved = Action {
                session_id: crate::support::uuid(),
                ..action.clone()
            };
            let expected = match from {
                "offered" => Some("action_terminal"),
                _ => lifecycle.expected(from, to),
            };
            report(&mut publisher, &mut subscriber, &moved, to, expected).await;
            let (_, view) = hub
                .http()
                .get(&format!("/v1/actions/{}", action.action_id))
                .await;
            let now = if expected.is_none() { to } else { from };
            assert_eq!(view["actionState"], json!(now), "{from} -> {to}: {view}");
        }
    }
    // Nothing else was published: no ignored event before or after a report.
    subscriber.expect_no_frame().await;
}

#[tokio::test]
async fn a_refused_transition_changes_nothing() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let action = Action::new("webchat");
    client.publish_ok(action.event("offered")).await;
    client
        .publish_refused(action.event("engaged"), "invalid_transition", None)
        .await;
    // Still offered: accepted is allowed, and the action view agrees.
    let accepted = client.publish_ok(action.event("accepted")).await;
    let (status, view) = hub
        .http()
        .get(&format!("/v1/actions/{}", action.action_id))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["actionState"], json!("accepted"));
    assert_eq!(view["seq"], json!(accepted));
}

/// The same state again with a new eventId is a transition the table does not allow.
#[tokio::test]
async fn the_current_state_again_with_a_new_event_id_is_refused() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let cases = [
        ("offered", "invalid_transition"),
        ("rejected", "action_terminal"),
    ];
    for (state, code) in cases {
        let action = Action::new("webchat");
        for step in WEBCHAT.path_to(state) {
            client.publish_ok(action.event(step)).await;
        }
        let again = action.event(state).with("eventId", json!("fresh-event-id"));
        client.publish_refused(again, code, None).await;
    }
}

#[tokio::test]
async fn duplicates_are_acknowledged_with_the_original_seq_and_not_fanned_out() {
    let hub = Hub::start().await;
    let (mut publisher, mut subscriber) = publisher_and_subscriber(&hub).await;
    let action = Action::new("webchat");
    let offered = publisher
        .publish_ok(action.event("offered").with("eventId", json!("e-1")))
        .await;
    let accepted = publisher.publish_ok(action.event("accepted")).await;
    assert_eq!(seq_of(&subscriber.next_event().await), offered);
    assert_eq!(seq_of(&subscriber.next_event().await), accepted);

    // Each row: a retry, and the seq of the event it repeats.
    let retries = [
        // The same eventId, whatever has happened since and whatever it now says.
        (
            action.event("offered").with("eventId", json!("e-1")),
            offered,
        ),
        (
            action.event("ignored").with("eventId", json!("e-1")),
            offered,
        ),
        // The state the action is already in, without an eventId.
        (action.event("accepted"), accepted),
    ];
    for (retry, original) in retries {
        let reply = publisher.publish(retry.clone()).await;
        assert_type(&reply, "published");
        assert_eq!(reply["duplicate"], json!(true), "{retry} -> {reply}");
        assert_eq!(reply["seq"], json!(original), "{retry} -> {reply}");
    }
    subscriber.expect_no_frame().await;

    // A terminal state reported again without an eventId is a duplicate too.
    let rejected = publisher.publish_ok(action.event("rejected")).await;
    assert_eq!(seq_of(&subscriber.next_event().await), rejected);
    let reply = publisher.publish(action.event("rejected")).await;
    assert_eq!(
        (reply["duplicate"].clone(), seq_of(&reply)),
        (json!(true), rejected)
    );
    subscriber.expect_no_frame().await;

    // eventIds are per customer: another customer may use the same one.
    let other = Action::new("webchat");
    let reply = publisher
        .publish(other.event("offered").with("eventId", json!("e-1")))
        .await;
    assert_eq!(reply["duplicate"], json!(false), "{reply}");
    assert_eq!(seq_of(&subscriber.next_event().await), seq_of(&reply));
}

/// One valid first event with one thing wrong: each is `invalid_event` naming the field.
#[tokio::test]
async fn invalid_lifecycle_events_are_refused_naming_the_field() {
    let valid = || Action::new("webchat").event("offered");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown state",
            valid().with("actionState", json!("waiting")),
            "actionState",
        ),
        (
            "upper-case state",
            valid().with("actionState", json!("Offered")),
            "actionState",
        ),
        (
            "unknown media",
            valid().with("actionMediaType", json!("voice")),
            "actionMediaType",
        ),
        (
            "state of the other media",
            Action::new("contentoffer").event("started"),
            "actionState",
        ),
        (
            "customerIdType",
            valid().with("customerIdType", json!("device")),
            "customerIdType",
        ),
        (
            "unknown field",
            valid().with("actionStat", json!("offered")),
            "actionStat",
        ),
        (
            "data over 4 KiB",
            valid().with("data", json!({"pad": "x".repeat(4200)})),
            "data",
        ),
        (
            "eventId over 64",
            valid().with("eventId", json!("e".repeat(65))),
            "eventId",
        ),
        (
            "v1 actionId",
            valid().with("actionId", json!(NOT_V4_UUID)),
            "actionId",
        ),
        (
            "not a UUID",
            valid().with("customerId", json!("customer-1")),
            "customerId",
        ),
        (
            "v1 actionMapId",
            valid().with("actionMapId", json!(NOT_V4_UUID)),
            "actionMapId",
        ),
        (
            "v1 sessionId",
            valid().with("sessionId", json!(NOT_V4_UUID)),
            "sessionId",
        ),
        (
            "map version 0",
            valid().with("actionMapVersion", json!(0)),
            "actionMapVersion",
        ),
        (
            "map version text",
            valid().with("actionMapVersion", json!("3")),
            "actionMapVersion",
        ),
        (
            "errorCode not errored",
            valid().with("errorCode", json!(500)),
            "errorCode",
        ),
        (
            "errorMessage not errored",
            valid().with("errorMessage", json!("x")),
            "errorMessage",
        ),
        ("no sessionId", valid().without("sessionId"), "sessionId"),
        (
            "no actionMapId",
            valid().without("actionMapId"),
            "actionMapId",
        ),
        (
            "no actionState",
            valid().without("actionState"),
            "actionState",
        ),
        ("no customerId", valid().without("customerId"), "customerId"),
    ];
    let hub = Hub::start().await;
    let mut publisher = hub.client().await;
    let mut subscriber = hub.client().await;
    subscriber.subscribe_to("everything", &["all"], None).await;
    for (name, event, field) in cases {
        let reply = publisher.publish(event).await;
        assert_eq!(reply["code"], json!("invalid_event"), "{name}: {reply}");
        assert_error(&reply, "invalid_event", Some(field));
    }
    subscriber.expect_no_frame().await;
}

#[tokio::test]
async fn valid_variations_are_accepted() {
    let hub = Hub::start().await;
    let (mut publisher, mut subscriber) = publisher_and_subscriber(&hub).await;
    let errored = Action::new("webchat");
    let upper = Action::new("contentoffer");
    let cases: Vec<(Value, &str)> = vec![
        (
            Action::new("webchat")
                .event("offered")
                .with("customerIdType", json!("cookie")),
            "webchat:offered",
        ),
        (
            Action::new("webchat")
                .event("qualified")
                .with("eventId", json!("e".repeat(64))),
            "webchat:qualified",
        ),
        (
            Action::new("webchat")
                .event("offered")
                .with("data", json!({"conversationId": "c-1"})),
            "webchat:offered",
        ),
        (errored.event("offered"), "webchat:offered"),
        (
            errored
                .event("errored")
                .with("errorCode", json!(500))
                .with("errorMessage", json!("boom")),
            "webchat:errored",
        ),
        (
            upper
                .event("offered")
                .with("actionId", json!(upper.action_id.to_uppercase())),
            "contentoffer:offered",
        ),
    ];
    for (event, topic) in cases {
        let seq = publisher.publish_ok(event.clone()).await;
        let delivered = assert_event(&subscriber.next_event().await, seq, topic);
        for key in ["errorCode", "errorMessage", "data", "eventId"] {
            assert_eq!(
                delivered[key], event[key],
                "{key} is delivered as published"
            );
        }
        let sent_id = event["actionId"].as_str().expect("actionId");
        assert_eq!(
            delivered["actionId"],
            json!(sent_id.to_lowercase()),
            "ids are normalized"
        );
    }
    // Ids are normalized to lower case: the upper-case report is the same action.
    let (status, view) = hub
        .http()
        .get(&format!("/v1/actions/{}", upper.action_id))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["actionId"], json!(upper.action_id));
}

#[tokio::test]
async fn the_fields_that_identify_an_action_may_not_change() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let action = Action::new("webchat");
    client.publish_ok(action.event("offered")).await;
    let accepted = || action.event("accepted");
    let cases = [
        (
            accepted().with("actionMapId", json!(crate::support::uuid())),
            "actionMapId",
        ),
        (
            accepted().with("actionMapVersion", json!(2)),
            "actionMapVersion",
        ),
        (
            accepted().with("customerId", json!(Visitor::new().customer_id)),
            "customerId",
        ),
        (
            accepted().with("actionMediaType", json!("contentoffer")),
            "actionMediaType",
        ),
    ];
    for (event, field) in cases {
        client
            .publish_refused(event, "invalid_event", Some(field))
            .await;
    }
    client.publish_ok(accepted()).await;
}

#[tokio::test]
async fn after_a_terminal_state_every_report_is_action_terminal() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let action = Action::new("contentoffer");
    client.publish_ok(action.event("offered")).await;
    client.publish_ok(action.event("accepted")).await;
    for state in ["offered", "rejected", "errored", "qualified"] {
        client
            .publish_refused(action.event(state), "action_terminal", None)
            .await;
    }
}

/// decisions.md: the session may change between an action's events; the action keeps the
/// latest one. (An accepted action is not ignored when its session is replaced.)
#[tokio::test]
async fn an_action_follows_its_customer_into_a_new_session() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let mut visitor = Visitor::new();
    let action = visitor.action("webchat");
    client.publish_ok(action.event("offered")).await;
    client.publish_ok(action.event("accepted")).await;
    let new_session = visitor.new_session();
    client.publish_ok(visitor.page()).await;
    let started = action
        .event("started")
        .with("sessionId", json!(new_session));
    let seq = client.publish_ok(started).await;
    let (_, view) = hub
        .http()
        .get(&format!("/v1/actions/{}", action.action_id))
        .await;
    assert_eq!(view["sessionId"], json!(new_session), "{view}");
    assert_eq!(view["seq"], json!(seq), "{view}");
}
