//! Delivery rules of PROTOCOL.md section 5: at most once per connection, the same bytes for
//! every receiver, `once`, per-customer seq order under concurrent publishers, and the slow
//! consumer that is closed without holding anyone else back.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::support::{
    assert_error, assert_event, assert_type, seq_of, Action, Client, Hub, Visitor,
};

#[tokio::test]
async fn an_event_matched_by_two_subscriptions_arrives_once() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    client
        .subscribe_to("by-media", &["webchat:all"], None)
        .await;
    client
        .subscribe_to("by-state", &["all:offered"], None)
        .await;
    let action = Action::new("webchat");
    let seq = client.publish_ok(action.event("offered")).await;
    assert_event(&client.next_event().await, seq, "webchat:offered");
    client.expect_no_frame().await;
}

#[tokio::test]
async fn every_receiver_gets_the_same_bytes() {
    let hub = Hub::start().await;
    let mut first = hub.client().await;
    first.subscribe_to("one", &["webchat:all"], None).await;
    first.subscribe_to("two", &["all:offered"], None).await;
    let mut second = hub.client().await;
    let action = Action::new("webchat");
    let filter = json!({"actionId": [action.action_id]});
    second.subscribe_to("other", &["all"], Some(filter)).await;
    hub.client().await.publish_ok(action.event("offered")).await;
    assert_eq!(first.recv_text().await, second.recv_text().await);
}

#[tokio::test]
async fn once_ends_the_subscription_after_its_first_delivery() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    client
        .subscribe(
            json!("first"),
            json!({"topics": ["webchat:offered"], "once": true}),
        )
        .await;
    let first = client
        .publish_ok(Action::new("webchat").event("offered"))
        .await;
    client
        .publish_ok(Action::new("webchat").event("offered"))
        .await;
    assert_event(&client.next_event().await, first, "webchat:offered");
    client.expect_no_frame().await;
    let reply = client
        .request(json!({"op": "unsubscribe", "sub": "first"}))
        .await;
    assert_error(&reply, "not_found", None);
}

#[tokio::test]
async fn once_fires_when_an_overlapping_subscription_carries_the_event() {
    let hub = Hub::start().await;
    let mut client = hub.client().await;
    client
        .subscribe(json!("all"), json!({"topics": ["all"]}))
        .await;
    client
        .subscribe(
            json!("first"),
            json!({"topics": ["webchat:offered"], "once": true}),
        )
        .await;
    let action = Action::new("webchat");
    let offered = client.publish_ok(action.event("offered")).await;
    let accepted = client.publish_ok(action.event("accepted")).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = client.next_event().await;
        seen.push(event["seq"].as_u64().expect("seq"));
    }
    assert!(
        seen.contains(&offered) && seen.contains(&accepted),
        "{seen:?}"
    );
    client.expect_no_frame().await;
    let reply = client
        .request(json!({"op": "unsubscribe", "sub": "first"}))
        .await;
    assert_error(&reply, "not_found", None);
}

/// Publishes `count` new offered actions for `customers` (round robin from `offset`) and
/// returns (customer index, seq) for each.
async fn publish_round_robin(
    mut publisher: Client,
    customers: Vec<Visitor>,
    offset: usize,
    count: usize,
) -> Vec<(usize, u64)> {
    let mut acks = Vec::with_capacity(count);
    for i in 0..count {
        let index = (offset + i) % customers.len();
        let seq = publisher
            .publish_ok(customers[index].action("webchat").event("offered"))
            .await;
        acks.push((index, seq));
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_customer_order_holds_with_concurrent_publishers() {
    const PUBLISHERS: usize = 4;
    const EVENTS_EACH: usize = 200;
    let hub = Hub::start().await;
    let customers: Vec<Visitor> = (0..10).map(|_| Visitor::new()).collect();
    let mut subscriber = hub.client().await;
    subscriber
        .subscribe_to("all-chats", &["webchat:all"], None)
        .await;

    let mut tasks = Vec::new();
    for publisher in 0..PUBLISHERS {
        let client = hub.client().await;
        let customers = customers.clone();
        tasks.push(tokio::spawn(publish_round_robin(
            client,
            customers,
            publisher * 3,
            EVENTS_EACH,
        )));
    }
    let mut acked: HashMap<u64, usize> = HashMap::new();
    for task in tasks {
        for (customer, seq) in task.await.expect("publisher task") {
            assert!(
                acked.insert(seq, customer).is_none(),
                "seq {seq} acknowledged twice"
            );
        }
    }

    let frames = subscriber.events(PUBLISHERS * EVENTS_EACH).await;
    subscriber.expect_no_frame().await;
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut delivered = BTreeSet::new();
    for frame in &frames {
        let seq = seq_of(frame);
        let customer = frame["event"]["customerId"]
            .as_str()
            .expect("customerId")
            .to_owned();
        if let Some(previous) = last_seq.insert(customer.clone(), seq) {
            assert!(
                previous < seq,
                "customer {customer}: seq {seq} after {previous}"
            );
        }
        let expected_customer = &customers[acked[&seq]].customer_id;
        assert_eq!(
            &customer, expected_customer,
            "seq {seq} belongs to its publisher's customer"
        );
        delivered.insert(seq);
    }
    let acked_seqs: BTreeSet<u64> = acked.keys().copied().collect();
    assert_eq!(
        delivered, acked_seqs,
        "every acknowledged event is delivered exactly once"
    );
}

/// An event with about 3 KiB of enrichment, so a few thousand fill any socket buffer.
fn bulky_event(customers: &[Visitor], i: usize) -> Value {
    let mut event = customers[i % customers.len()]
        .action("webchat")
        .event("offered");
    event["data"] = json!({"pad": "x".repeat(3000), "i": i});
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_4008_and_others_get_every_event() {
    // 4000 events of ~3 KiB are ~12 MiB: far more than the queue and the socket buffers
    // of a reader that never reads, so the hub must give up on it. The publisher waits
    // for the reading subscriber to have every batch but the one just sent before it sends
    // another, so that subscriber is never more than two batches (32 frames, half its
    // queue) behind however the machine schedules it: it keeps up, and must never be
    // closed.
    const TOTAL: usize = 4000;
    const BATCH: usize = 16;
    let hub = Hub::start_with(|c| c.queue_capacity = 64).await;
    let customers: Vec<Visitor> = (0..8).map(|_| Visitor::new()).collect();

    let mut slow = Client::connected_to(hub.addr(), Some(4096)).await;
    slow.subscribe_to("slow", &["webchat:all"], None).await;
    let mut reader = hub.client().await;
    reader.subscribe_to("reader", &["webchat:all"], None).await;
    let (progress, mut read_so_far) = tokio::sync::watch::channel(0usize);
    let reading = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(TOTAL);
        while seqs.len() < TOTAL {
            seqs.push(seq_of(&reader.next_event().await));
            progress.send_replace(seqs.len());
        }
        seqs
    });

    let http = hub.http();
    let mut acked = Vec::with_capacity(TOTAL);
    for start in (0..TOTAL).step_by(BATCH) {
        // Every batch but the previous one read.
        let must_have_read = start.saturating_sub(BATCH);
        // The `Ref` that `wait_for` returns holds the channel's lock: let it go at once.
        let reader_gone = read_so_far
            .wait_for(|&read| read >= must_have_read)
            .await
            .is_err();
        if reader_gone {
            let failure = reading.await.expect_err("a reader that stops early failed");
            std::panic::resume_unwind(failure.into_panic());
        }
        let batch: Vec<Value> = (start..start + BATCH)
            .map(|i| bulky_event(&customers, i))
            .collect();
        for result in http.publish(&Value::Array(batch)).await {
            assert_eq!(result["duplicate"], json!(false), "{result}");
            acked.push(seq_of(&result));
        }
    }

    let mut received = reading.await.expect("reader task");
    received.sort_unstable();
    acked.sort_unstable();
    assert_eq!(received, acked, "the reading subscriber gets every event");
    slow.closed_with(4008).await;
}

/// Several full HTTP batches at once make the pipeline take more than one pass's worth of
/// records from its queue: every accepted event must still be delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_full_batches_are_all_delivered() {
    const BATCHES: usize = 8;
    const PER_BATCH: usize = 1000;
    let hub = Hub::start_with(|config| config.queue_capacity = 65_536).await;
    let mut watcher = hub.client().await;
    watcher
        .subscribe(json!("all"), json!({"topics": ["all"]}))
        .await;
    let posts = (0..BATCHES).map(|_| {
        let http = hub.http();
        let visitor = Visitor::new();
        async move {
            let events: Vec<Value> = (0..PER_BATCH)
                .map(|_| visitor.action("webchat").event("offered"))
                .collect();
            http.publish(&Value::Array(events)).await
        }
    });
    let mut accepted = Vec::new();
    for results in futures_util::future::join_all(posts).await {
        for result in results {
            accepted.push(result["seq"].as_u64().expect("every event accepted"));
        }
    }
    // Plus one session:started per visitor.
    let expected = BATCHES * PER_BATCH + BATCHES;
    let mut delivered = std::collections::HashSet::new();
    while delivered.len() < expected {
        let event = watcher.next_event().await;
        delivered.insert(event["seq"].as_u64().expect("seq"));
    }
    assert!(accepted.iter().all(|seq| delivered.contains(seq)));
    watcher.expect_no_frame().await;
}

/// `subscribed` comes before every event of its subscription even while events stream in:
/// the fan-out queues it as it files the subscription, under the index lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribed_precedes_the_subscriptions_events_while_events_stream_in() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let streaming = {
        let (mut publisher, stop) = (hub.client().await, stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publisher
                    .publish_ok(visitor.action("webchat").event("offered"))
                    .await;
            }
        })
    };
    for _ in 0..20 {
        let mut client = hub.client().await;
        client
            .send(json!({"op": "subscribe", "id": 1, "sub": "s", "topics": ["webchat:all"]}))
            .await;
        let first = client.recv().await;
        assert_type(&first, "subscribed");
        let start = seq_of(&first);
        let event = client.next_event().await;
        assert!(seq_of(&event) > start, "{event} after {first}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    streaming.await.expect("publisher task");
}
