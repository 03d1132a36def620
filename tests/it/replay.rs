//! Resuming and catching up (PROTOCOL.md section 5): `since` + `epoch` replay and its
//! refusals, and `snapshot`.

use serde_json::{json, Value};

use crate::support::{assert_error, assert_event, Action, Client, Hub, Visitor};

/// Publishes `count` new offered webchat actions of `visitor` and returns their seqs.
/// One customer throughout, so the whole stream is in seq order (PROTOCOL.md promises
/// order per customer only).
async fn publish_offers(publisher: &mut Client, visitor: &Visitor, count: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(count);
    for _ in 0..count {
        seqs.push(
            publisher
                .publish_ok(visitor.action("webchat").event("offered"))
                .await,
        );
    }
    seqs
}

/// Subscribes `client` to webchat events since `since` in `epoch`; returns the reply.
async fn resume(client: &mut Client, since: u64, epoch: &str) -> Value {
    let body = json!({"topics": ["webchat:all"], "since": since, "epoch": epoch});
    client.subscribe(json!("resume"), body).await
}

/// Receives `seqs.len()` events and asserts they are exactly `seqs`, in order.
async fn expect_seqs(client: &mut Client, seqs: &[u64]) {
    assert_eq!(client.event_seqs(seqs.len()).await, seqs);
}

#[tokio::test]
async fn since_replays_exactly_the_missed_events_then_live_ones() {
    let hub = Hub::start().await;
    let mut publisher = hub.client().await;
    let visitor = Visitor::new();
    let mut first = hub.client().await;
    first.subscribe_to("chats", &["webchat:all"], None).await;
    let seen = publish_offers(&mut publisher, &visitor, 3).await;
    expect_seqs(&mut first, &seen).await;
    let epoch = first.epoch();
    drop(first);

    let missed = publish_offers(&mut publisher, &visitor, 4).await;
    // Events the subscription does not match are not replayed.
    publisher.publish_ok(Visitor::new().page()).await;

    let mut resumed = hub.client().await;
    let subscribed = resume(&mut resumed, *seen.last().expect("seen"), &epoch).await;
    assert_eq!(subscribed["recovered"], json!(true));
    expect_seqs(&mut resumed, &missed).await;
    let live = publish_offers(&mut publisher, &visitor, 2).await;
    expect_seqs(&mut resumed, &live).await;
    resumed.expect_no_frame().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_hands_over_to_live_without_gap_or_duplicate() {
    let hub = Hub::start().await;
    let mut publisher = hub.client().await;
    let visitor = Visitor::new();
    let start = publish_offers(&mut publisher, &visitor, 1).await[0];
    let mut expected = publish_offers(&mut publisher, &visitor, 300).await;

    // Publishing goes on while the subscription replays.
    let live_publisher = hub.client().await;
    let live_visitor = visitor.clone();
    let live = tokio::spawn(async move {
        let mut live_publisher = live_publisher;
        publish_offers(&mut live_publisher, &live_visitor, 100).await
    });
    let mut resumed = hub.client().await;
    let epoch = resumed.epoch();
    let subscribed = resume(&mut resumed, start, &epoch).await;
    assert_eq!(subscribed["recovered"], json!(true));
    expected.extend(live.await.expect("live publisher"));
    expect_seqs(&mut resumed, &expected).await;
    resumed.expect_no_frame().await;
}

#[tokio::test]
async fn since_at_the_latest_seq_recovers_with_nothing_to_replay() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let latest = publish_offers(&mut client, &Visitor::new(), 2).await[1];
    let epoch = client.epoch();
    let subscribed = resume(&mut client, latest, &epoch).await;
    assert_eq!(subscribed["recovered"], json!(true));
    client.expect_no_frame().await;
}

#[tokio::test]
async fn since_without_epoch_is_bad_request() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    publish_offers(&mut client, &Visitor::new(), 1).await;
    let body = json!({"op": "subscribe", "sub": "s", "topics": ["all"], "since": 0});
    assert_error(&client.request(body).await, "bad_request", None);
}

/// Each case cannot be recovered: `recovered` is false, nothing is replayed, and live
/// delivery still works.
#[tokio::test]
async fn unrecoverable_since_replays_nothing() {
    let hub = Hub::start_with(|c| c.retention_events = 10).await;
    let mut publisher = hub.client().await;
    let visitor = Visitor::new();
    let seqs = publish_offers(&mut publisher, &visitor, 30).await;
    let latest = seqs[29];
    let epoch = publisher.epoch();
    let cases = [
        ("wrong epoch", seqs[25], "not-the-epoch".to_owned()),
        ("beyond the latest seq", latest + 1000, epoch.clone()),
        ("older than retention", seqs[2], epoch.clone()),
    ];
    for (name, since, epoch) in cases {
        let mut client = hub.client().await;
        let subscribed = resume(&mut client, since, &epoch).await;
        assert_eq!(
            subscribed["recovered"],
            json!(false),
            "{name}: {subscribed}"
        );
        client.expect_no_frame().await;
        let live = publish_offers(&mut publisher, &visitor, 1).await;
        expect_seqs(&mut client, &live).await;
    }
    // Within retention it still recovers.
    let mut client = hub.client().await;
    let recent = publish_offers(&mut publisher, &visitor, 3).await;
    let subscribed = resume(&mut client, recent[0], &epoch).await;
    assert_eq!(subscribed["recovered"], json!(true));
    expect_seqs(&mut client, &recent[1..]).await;
}

#[tokio::test]
async fn once_with_since_fires_on_the_first_replayed_match() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let seqs = publish_offers(&mut client, &Visitor::new(), 3).await;
    let epoch = client.epoch();
    let body = json!({"topics": ["webchat:all"], "since": seqs[0], "epoch": epoch, "once": true});
    client.subscribe(json!("once"), body).await;
    expect_seqs(&mut client, &seqs[1..2]).await;
    client.expect_no_frame().await;
}

/// Asserts a snapshot action is `action` in its latest state as `GET /v1/actions` shows it.
async fn assert_snapshot_action(
    hub: &Hub,
    snapshot_action: &Value,
    action: &Action,
    state: &str,
    seq: u64,
) {
    assert_eq!(snapshot_action["actionId"], json!(action.action_id));
    assert_eq!(
        snapshot_action["actionState"],
        json!(state),
        "{snapshot_action}"
    );
    assert_eq!(snapshot_action["actionMediaType"], json!(action.media));
    assert_eq!(snapshot_action["actionMapId"], json!(action.map_id));
    assert_eq!(
        snapshot_action["actionMapVersion"],
        json!(action.map_version)
    );
    assert_eq!(snapshot_action["customerId"], json!(action.customer_id));
    assert_eq!(snapshot_action["seq"], json!(seq), "{snapshot_action}");
    let (_, view) = hub
        .http()
        .get(&format!("/v1/actions/{}", action.action_id))
        .await;
    assert_eq!(
        snapshot_action["timestamp"], view["timestamp"],
        "the latest event's timestamp"
    );
}

/// The actions of a snapshot, by actionId.
fn snapshot_actions(snapshot: &Value) -> std::collections::HashMap<String, Value> {
    snapshot["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("snapshot has actions: {snapshot}"))
        .iter()
        .map(|action| {
            (
                action["actionId"].as_str().expect("actionId").to_owned(),
                action.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn snapshot_precedes_live_events_with_matching_actions_and_their_customers() {
    let hub = Hub::start().await;
    let mut publisher = hub.client().await;
    let signed_in = Visitor::new();
    publisher
        .publish_ok(signed_in.event("signin", "user-1"))
        .await;
    let chatting = signed_in.action("webchat");
    publisher.publish_ok(chatting.event("offered")).await;
    let chatting_seq = publisher.publish_ok(chatting.event("accepted")).await;
    let declined = signed_in.action("webchat");
    publisher.publish_ok(declined.event("offered")).await;
    let declined_seq = publisher.publish_ok(declined.event("rejected")).await;
    let anonymous = Visitor::new();
    let offer = anonymous.action("contentoffer");
    let offer_seq = publisher.publish_ok(offer.event("offered")).await;

    // Webchat actions, live and recently ended, and the one customer they belong to.
    let mut chats = hub.client().await;
    let subscribed = chats
        .subscribe(
            json!("chats"),
            json!({"topics": ["webchat:all"], "snapshot": true}),
        )
        .await;
    let snapshot = chats.expect_type("snapshot").await;
    assert_eq!(snapshot["sub"], json!("chats"));
    assert_eq!(snapshot["seq"], subscribed["seq"]);
    let actions = snapshot_actions(&snapshot);
    assert_eq!(actions.len(), 2, "{snapshot}");
    assert_snapshot_action(
        &hub,
        &actions[&chatting.action_id],
        &chatting,
        "accepted",
        chatting_seq,
    )
    .await;
    assert_snapshot_action(
        &hub,
        &actions[&declined.action_id],
        &declined,
        "rejected",
        declined_seq,
    )
    .await;
    assert_eq!(
        snapshot["customers"],
        json!([{"customerId": signed_in.customer_id,
                "identity": {"state": "authenticated", "userId": "user-1"}}])
    );
    let live = publisher
        .publish_ok(Action::new("webchat").event("offered"))
        .await;
    assert_event(&chats.next_event().await, live, "webchat:offered");

    // Matching is on the current state: only the still-offered content offer.
    let mut offers = hub.client().await;
    offers
        .subscribe(
            json!(7),
            json!({"topics": ["contentoffer:offered"], "snapshot": true}),
        )
        .await;
    let snapshot = offers.expect_type("snapshot").await;
    assert_eq!(snapshot["sub"], json!(7));
    let actions = snapshot_actions(&snapshot);
    assert_eq!(actions.len(), 1, "{snapshot}");
    assert_snapshot_action(
        &hub,
        &actions[&offer.action_id],
        &offer,
        "offered",
        offer_seq,
    )
    .await;
    assert_eq!(
        snapshot["customers"][0]["customerId"],
        json!(anonymous.customer_id)
    );
    assert_eq!(
        snapshot["customers"][0]["identity"]["state"],
        json!("anonymous")
    );
}

#[tokio::test]
async fn snapshot_obeys_where() {
    let hub = Hub::start().await;
    let mut publisher = hub.client().await;
    let (mine, theirs) = (Action::new("webchat"), Action::new("webchat"));
    let mine_seq = publisher.publish_ok(mine.event("offered")).await;
    publisher.publish_ok(theirs.event("offered")).await;
    let mut client = hub.client().await;
    let body =
        json!({"topics": ["all"], "where": {"customerId": [mine.customer_id]}, "snapshot": true});
    client.subscribe(json!("mine"), body).await;
    let snapshot = client.expect_type("snapshot").await;
    let actions = snapshot_actions(&snapshot);
    assert_eq!(actions.len(), 1, "{snapshot}");
    assert_snapshot_action(&hub, &actions[&mine.action_id], &mine, "offered", mine_seq).await;
}

#[tokio::test]
async fn since_with_snapshot_sends_the_snapshot_only_when_not_recovered() {
    let hub = Hub::start().await;
    let mut publisher = hub.client().await;
    let seqs = publish_offers(&mut publisher, &Visitor::new(), 2).await;
    let epoch = publisher.epoch();
    // Each row: since, epoch, and whether it recovers.
    let rows = [
        (seqs[0], epoch.clone(), true),
        (seqs[0], "stale".to_owned(), false),
    ];
    for (since, epoch, recovers) in rows {
        let mut client = hub.client().await;
        let body =
            json!({"topics": ["webchat:all"], "since": since, "epoch": epoch, "snapshot": true});
        let subscribed = client.subscribe(json!("s"), body).await;
        assert_eq!(subscribed["recovered"], json!(recovers));
        let first = client.recv().await;
        if recovers {
            assert_event(&first, seqs[1], "webchat:offered");
        } else {
            assert_eq!(first["type"], json!("snapshot"), "{first}");
            assert_eq!(snapshot_actions(&first).len(), 2, "{first}");
        }
        client.expect_no_frame().await;
    }
}
