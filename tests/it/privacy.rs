//! Anonymizing and erasing a visitor (issue 14, docs/protocol.md "Visitors"): one marker
//! planted in every free-text field the protocol accepts is, afterwards, in no HTTP
//! answer, no `since` replay and no snapshot frame, and, once the next snapshot is
//! written (a short interval here), in no file of the data directory, before and after a
//! restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{Action, Hub, Visitor};

const MARKER: &str = "zq7-ann.marker@example.com";

/// A hub that writes a snapshot (and so compacts its log) every 200 ms.
async fn hub() -> Hub {
    Hub::start_with(|c| c.snapshot_interval = Duration::from_millis(200)).await
}

/// Every event kind, with the marker in every field a site may fill with text: user ids,
/// traits, channels, page URL query and fragment, title, referrer and other page keys,
/// track properties, action data and error messages. With `in_event_ids`, in eventIds too
/// (anonymizing keeps those, as it keeps track names; erasing does not).
fn planted(visitor: &Visitor, in_event_ids: bool) -> (Vec<Value>, Vec<Action>) {
    let user = format!("{MARKER}-user");
    let person = json!({"email": MARKER, "name": MARKER});
    let mut events = Vec::new();
    for kind in ["identify", "signin", "userinfo"] {
        let mut e = visitor.event(kind, &user);
        e["traits"] = person.clone();
        e["channels"] = json!({"whatsapp": MARKER});
        events.push(e);
    }
    let mut page = visitor.page();
    page["page"] = json!({
        "url": format!("https://shop.example/account/orders?email={MARKER}#{MARKER}"),
        "title": MARKER, "referrer": MARKER, "search": MARKER,
    });
    events.push(page);
    let mut track = visitor.event("track", "");
    track["name"] = json!("checkout");
    track["properties"] = json!({"email": MARKER, "nested": {"who": MARKER}});
    events.push(track);
    let (chat, offer) = (visitor.action("webchat"), visitor.action("contentoffer"));
    let mut offered = chat.event("offered");
    offered["data"] = json!({"note": MARKER});
    events.push(offered);
    let mut errored = chat.event("errored");
    errored["errorCode"] = json!(3);
    errored["errorMessage"] = json!(format!("failed for {MARKER}"));
    events.push(errored);
    let mut offer_event = offer.event("offered");
    offer_event["data"] = json!({"email": MARKER});
    events.push(offer_event);
    if in_event_ids {
        for (i, e) in events.iter_mut().enumerate() {
            e["eventId"] = json!(format!("{MARKER}-{i}"));
        }
    }
    (events, vec![chat, offer])
}

/// Publishes the planted events and an attribute update, and checks the marker is there
/// to be found (so its absence later means something).
async fn plant(hub: &Hub, visitor: &Visitor, in_event_ids: bool) -> Vec<Action> {
    let (events, actions) = planted(visitor, in_event_ids);
    for result in hub.http().publish(&Value::Array(events)).await {
        assert!(result["seq"].is_u64(), "refused: {result}");
    }
    let (status, view) = hub
        .http()
        .put(
            &format!("/v1/visitors/{}", visitor.customer_id),
            &json!({"attributes": {"phone": MARKER}}),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    let (_, export) = hub
        .http()
        .get(&format!("/v1/visitors/{}/export", visitor.customer_id))
        .await;
    assert!(export.to_string().contains(MARKER), "planted: {export}");
    actions
}

/// Every HTTP answer about the visitor, its customer, its actions and the history.
async fn answers(hub: &Hub, visitor: &Visitor, actions: &[Action]) -> Vec<(String, Value)> {
    let c = &visitor.customer_id;
    let mut paths = vec![
        format!("/v1/visitors/{c}"),
        format!("/v1/visitors/{c}/export"),
        format!("/v1/visitors/{c}/sessions"),
        format!("/v1/visitors/{c}/events"),
        "/v1/visitors".to_string(),
        format!("/v1/customers/{c}"),
        format!("/v1/customers/{c}/events"),
        "/v1/events".to_string(),
        "/v1/stats/action-maps".to_string(),
    ];
    paths.extend(
        actions
            .iter()
            .map(|a| format!("/v1/actions/{}", a.action_id)),
    );
    // The user id links to nobody any more (the refusal names what was asked for).
    let (status, _) = hub
        .http()
        .get(&format!("/v1/visitors/user:{MARKER}-user"))
        .await;
    assert_eq!(status, 404);
    let mut out = Vec::new();
    for path in paths {
        let (_, body) = hub.http().get(&path).await;
        out.push((path, body));
    }
    out
}

fn assert_no_marker_in_answers(answers: &[(String, Value)]) {
    for (path, body) in answers {
        assert!(!body.to_string().contains(MARKER), "{path} answers {body}");
    }
}

/// What a `since` replay of everything and a snapshot subscription send.
async fn replay_and_snapshot(hub: &Hub) -> Vec<Value> {
    let (_, history) = hub.http().get("/v1/events").await;
    let count = history["events"].as_array().expect("events").len();
    let mut client = hub.client().await;
    let epoch = client.epoch();
    let subscribed = client
        .subscribe(
            json!("r"),
            json!({"topics": ["all"], "since": 0, "epoch": epoch}),
        )
        .await;
    assert_eq!(subscribed["recovered"], json!(true), "{subscribed}");
    let mut frames = client.events(count).await;
    client
        .subscribe(json!("s"), json!({"topics": ["all"], "snapshot": true}))
        .await;
    frames.push(client.expect_type("snapshot").await);
    frames
}

/// Every file under `dir` whose bytes hold the marker.
fn files_with_marker(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("readable dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
                    found.push(path);
                }
            }
        }
    }
    found
}

/// Waits (bounded) until no file in the data directory holds the marker.
async fn wait_files_clean(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = files_with_marker(dir);
        if found.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the marker is still on disk in {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn anonymizing_leaves_the_marker_in_no_answer_replay_or_file() {
    let hub = hub().await;
    let visitor = Visitor::new();
    let actions = plant(&hub, &visitor, false).await;
    assert!(!files_with_marker(hub.data_dir()).is_empty(), "logged");

    let (status, view) = hub
        .http()
        .post(
            &format!("/v1/visitors/{}/anonymize", visitor.customer_id),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_no_marker_in_answers(&answers(&hub, &visitor, &actions).await);
    let frames = replay_and_snapshot(&hub).await;
    for frame in &frames {
        assert!(!frame.to_string().contains(MARKER), "sent {frame}");
    }
    // What anonymizing keeps: page paths, track names, states, the attribute update's
    // place, and the history itself.
    let (_, export) = hub
        .http()
        .get(&format!("/v1/visitors/{}/export", visitor.customer_id))
        .await;
    let text = export.to_string();
    assert!(
        text.contains("https://shop.example/account/orders"),
        "{export}"
    );
    assert!(
        text.contains("checkout") && text.contains("errored"),
        "{export}"
    );
    assert!(frames.len() > 8, "the history is kept: {frames:?}");
    wait_files_clean(hub.data_dir()).await;

    let hub = hub.restart().await;
    assert!(files_with_marker(hub.data_dir()).is_empty());
    let after = answers(&hub, &visitor, &actions).await;
    assert_no_marker_in_answers(&after);
    assert_eq!(
        after[1].1["events"].as_array().map(Vec::len),
        export["events"].as_array().map(Vec::len)
    );
    for frame in replay_and_snapshot(&hub).await {
        assert!(
            !frame.to_string().contains(MARKER),
            "sent after a restart {frame}"
        );
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn erasing_leaves_the_marker_in_no_answer_replay_or_file() {
    let hub = hub().await;
    let visitor = Visitor::new();
    let actions = plant(&hub, &visitor, true).await;
    // Someone else's event, which must survive the rewrite of the log around it.
    let other = Visitor::new();
    let kept = hub.http().publish(&other.page()).await;
    let kept_seq = kept[0]["seq"].as_u64().expect("accepted");

    let (status, body) = hub
        .http()
        .delete(&format!("/v1/visitors/{}", visitor.customer_id))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_no_marker_in_answers(&answers(&hub, &visitor, &actions).await);
    for frame in replay_and_snapshot(&hub).await {
        assert!(!frame.to_string().contains(MARKER), "sent {frame}");
    }
    wait_files_clean(hub.data_dir()).await;

    let hub = hub.restart().await;
    assert!(files_with_marker(hub.data_dir()).is_empty());
    assert_no_marker_in_answers(&answers(&hub, &visitor, &actions).await);
    let (status, _) = hub
        .http()
        .get(&format!("/v1/visitors/{}", visitor.customer_id))
        .await;
    assert_eq!(status, 404, "an erased visitor does not come back");
    let (_, events) = hub
        .http()
        .get(&format!("/v1/customers/{}/events", other.customer_id))
        .await;
    let seqs: Vec<&Value> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["seq"])
        .collect();
    assert!(seqs.contains(&&json!(kept_seq)), "{events}");
    hub.shutdown().await;
}

/// A rewrite cut short leaves its temp file beside the segment it was to replace; the
/// segment itself is whole, so a restart removes the temp file and keeps every event.
#[tokio::test]
async fn a_temp_file_left_by_an_interrupted_rewrite_is_removed_at_start() {
    let hub = hub().await;
    let visitor = Visitor::new();
    let seq = hub.http().publish(&visitor.page()).await[0]["seq"]
        .as_u64()
        .expect("accepted");
    let hub_dir = hub.data_dir().to_path_buf();
    let segment = crate::support::wal_segments(&hub_dir)
        .pop()
        .expect("a segment");
    let leftover = segment.with_extension("tmp");
    std::fs::write(&leftover, format!("half a rewrite {MARKER}")).expect("written");
    let hub = hub.restart().await;
    assert!(!leftover.exists(), "the temp file is removed");
    assert!(files_with_marker(hub.data_dir()).is_empty());
    let (_, events) = hub
        .http()
        .get(&format!("/v1/customers/{}/events", visitor.customer_id))
        .await;
    assert!(
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["seq"] == json!(seq)),
        "{events}"
    );
    hub.shutdown().await;
}
