//! History across restarts (PROTOCOL.md section 1, `epoch`; section 5, close 1001): a hub
//! restarted on the same data directory keeps its epoch, seqs, state and duplicate memory,
//! so clients reconnect and resume; a new data directory is a new history.

use serde_json::json;

use crate::support::{seq_of, Hub, JsonExt, Visitor};

#[tokio::test]
async fn a_restart_keeps_the_epoch_the_seqs_and_the_state() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    let epoch = client.epoch();
    let mut visitor = Visitor::new();
    visitor.new_session();
    client.publish_ok(visitor.event("signin", "user-1")).await;
    let action = visitor.action("webchat");
    let retryable = action.event("offered").with("eventId", json!("e-1"));
    let offered = client.publish_ok(retryable.clone()).await;
    let accepted = client.publish_ok(action.event("accepted")).await;
    drop(client);

    let hub = hub.restart().await;
    let mut client = hub.client().await;
    assert_eq!(
        client.epoch(),
        epoch,
        "the same data directory is the same history"
    );
    assert_eq!(client.connected["seq"], json!(accepted));
    let http = hub.http();
    let (_, view) = http.get(&format!("/v1/actions/{}", action.action_id)).await;
    assert_eq!(
        (view["actionState"].clone(), view["seq"].clone()),
        (json!("accepted"), json!(accepted))
    );
    let (_, customer) = http
        .get(&format!("/v1/customers/{}", visitor.customer_id))
        .await;
    assert_eq!(
        customer["identity"],
        json!({"state": "authenticated", "userId": "user-1"})
    );

    let retry = client.publish(retryable).await;
    assert_eq!(
        (retry["duplicate"].clone(), seq_of(&retry)),
        (json!(true), offered)
    );
    let started = client.publish_ok(action.event("started")).await;
    assert!(
        started > accepted,
        "seqs keep increasing: {started} after {accepted}"
    );

    let body = json!({"topics": ["webchat:all"], "since": offered, "epoch": epoch});
    let subscribed = client.subscribe(json!("resume"), body).await;
    assert_eq!(subscribed["recovered"], json!(true));
    assert_eq!(client.event_seqs(2).await, [accepted, started]);
}

#[tokio::test]
async fn a_client_closed_with_1001_resumes_on_the_restarted_hub() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let mut subscriber = hub.client().await;
    let epoch = subscriber.epoch();
    subscriber
        .subscribe_to("chats", &["webchat:all"], None)
        .await;
    let mut publisher = hub.client().await;
    let seen = publisher
        .publish_ok(visitor.action("webchat").event("offered"))
        .await;
    assert_eq!(seq_of(&subscriber.next_event().await), seen);

    // The hub may wait for the closing handshake, so the subscriber reads meanwhile and
    // the publisher leaves.
    drop(publisher);
    let restarting = tokio::spawn(hub.restart());
    subscriber.closed_with(1001).await;
    let hub = restarting.await.expect("restart task");

    let missed: Vec<u64> = hub
        .http()
        .publish(&json!([
            visitor.action("webchat").event("offered"),
            visitor.action("webchat").event("offered"),
        ]))
        .await
        .iter()
        .map(seq_of)
        .collect();
    let mut resumed = hub.client().await;
    let body = json!({"topics": ["webchat:all"], "since": seen, "epoch": epoch});
    let subscribed = resumed.subscribe(json!("chats"), body).await;
    assert_eq!(subscribed["recovered"], json!(true));
    assert_eq!(resumed.event_seqs(2).await, missed);
    resumed.expect_no_frame().await;
}

#[tokio::test]
async fn a_new_data_directory_is_a_new_epoch() {
    let (first, second) = (Hub::start().await, Hub::start().await);
    let first_epoch = first.client().await.epoch();
    let second_epoch = second.client().await.epoch();
    assert_ne!(first_epoch, second_epoch);
}
