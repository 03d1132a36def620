//! Webhook sinks in cluster mode, over a real `nats-server` and a real receiver: one sink
//! on two nodes is delivered once, by the lease holder, in seq order; a SIGKILLed
//! deliverer is taken over from the shared cursor with nothing lost; the admin API works
//! from any node and every node shows the same sinks.

use std::collections::BTreeSet;
use std::time::Duration;

use actionhub::edge::sinks::spec::{Secret, SinkConfig};
use actionhub::Config;
use serde_json::{json, Value};

use crate::sinks::{
    assert_whole_batches_in_order, create_sink, publish_mix, quick_retries, until_delivered,
};
use crate::support::nats::NatsServer;
use crate::support::{bounded, uuid, Http, Hub, HubProcess, Mode, Receiver, WAIT};

/// The lease's TTL (10 s) and a renewal period after it: how long a takeover may take.
const TAKEOVER_WAIT: Duration = Duration::from_secs(25);

/// A node named `name` on `nats`, once it has caught up.
async fn node(nats: &NatsServer, name: &str, tweak: impl FnOnce(&mut Config)) -> Hub {
    let url = nats.url();
    let hub = Hub::start_with(|config| {
        config.nats = vec![url];
        config.node_name = name.to_owned();
        quick_retries(config);
        tweak(config);
    })
    .await;
    until_ready(&hub.http()).await;
    hub
}

async fn until_ready(http: &Http) {
    bounded(WAIT, "the node to catch up", async {
        while http.get("/readyz").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The sinks a node lists.
async fn sinks_of(http: &Http) -> Vec<Value> {
    let (status, body) = http.get("/v1/sinks").await;
    assert_eq!(status, 200, "GET /v1/sinks: {body}");
    body["sinks"].as_array().cloned().unwrap_or_default()
}

/// Waits until `http` lists a sink named `name` for which `check` holds; answers it.
async fn until_sink(http: &Http, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    bounded(TAKEOVER_WAIT, what, async {
        loop {
            let found = sinks_of(http)
                .await
                .into_iter()
                .find(|s| s["name"] == json!(name) && check(s));
            if let Some(sink) = found {
                return sink;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn config_sink(name: &str, url: &str, secret: &Secret) -> SinkConfig {
    SinkConfig {
        name: name.into(),
        url: url.into(),
        topics: vec!["webchat:all".into()],
        filter: None,
        batch_size: Some(20),
        linger_ms: Some(10),
        secret: secret.clone(),
    }
}

/// What the receiver accepted, as the set of seqs.
fn accepted_seqs(receiver: &Receiver) -> BTreeSet<u64> {
    receiver
        .accepted_items()
        .iter()
        .filter_map(|i| i["seq"].as_u64())
        .collect()
}

#[tokio::test]
async fn a_sink_on_two_nodes_is_delivered_once_in_order_and_shown_alike() {
    let nats = NatsServer::start();
    let receiver = Receiver::start(Mode::Accept, 3).await;
    let (url, secret) = (receiver.url(), Secret::generate());
    let sink = config_sink("shared", &url, &secret);
    let a = node(&nats, "a", |c| c.sinks.push(sink.clone())).await;
    let b = node(&nats, "b", |c| c.sinks.push(sink.clone())).await;
    let (on_a, on_b) = (a.http(), b.http());
    let map = uuid();
    let mut want = publish_mix(&on_a, &map, 200).await;
    want.extend(publish_mix(&on_b, &map, 200).await);
    want.extend(publish_mix(&on_a, &map, 200).await);
    // Every webchat event is selected (the sink has no `where`), so wait for those; the
    // node that took the last publishes has applied all of them.
    let (_, events) = on_a.get("/v1/events?topics=webchat:all&limit=1000").await;
    let all: Vec<u64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(all.len() >= want.len(), "{} < {}", all.len(), want.len());
    until_delivered(&receiver, &all).await;
    let delivered = assert_whole_batches_in_order(&receiver);
    assert_eq!(delivered, all, "each selected event once, in seq order");
    // Both nodes show the one sink, delivered by one of them, at the same cursor.
    // The cursor stops at the last delivered batch's last seq examined.
    let last = *all.last().unwrap();
    let delivered_all = |s: &Value| s["cursor"].as_u64() >= Some(last);
    let (sa, sb) = (
        until_sink(&on_a, "shared", "a's view", delivered_all).await,
        until_sink(&on_b, "shared", "b's view", delivered_all).await,
    );
    for key in ["cursor", "node", "state", "source"] {
        assert_eq!(sa[key], sb[key], "{key}: {sa} / {sb}");
    }
    assert!(
        ["a", "b"].contains(&sa["node"].as_str().unwrap_or_default()),
        "{sa}"
    );
    assert_eq!(sinks_of(&on_a).await.len(), 1);

    // Made by the API on one node: listed by the other, which may delete it.
    let made = create_sink(
        &on_b,
        json!({"name": "by-api", "url": url, "topics": ["all"], "lingerMs": 10}),
    )
    .await;
    let id = made["id"].as_str().unwrap().to_owned();
    let seen = until_sink(&on_a, "by-api", "the API's sink on the other node", |s| {
        !s["node"].is_null()
    })
    .await;
    assert_eq!(seen["id"], json!(id));
    assert_eq!(seen["source"], json!("api"));
    let (status, body) = on_a.delete(&format!("/v1/sinks/{id}")).await;
    assert_eq!(status, 200, "{body}");
    bounded(WAIT, "the deletion to reach both nodes", async {
        loop {
            let (la, lb) = (sinks_of(&on_a).await, sinks_of(&on_b).await);
            if la.len() == 1 && lb.len() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_node_defining_a_shared_sink_otherwise_is_refused_at_start() {
    let nats = NatsServer::start();
    let receiver = Receiver::start(Mode::Accept, 4).await;
    let secret = Secret::generate();
    let sink = config_sink("one", &receiver.url(), &secret);
    let a = node(&nats, "a", |c| c.sinks.push(sink.clone())).await;
    until_sink(&a.http(), "one", "the sink to be shared", |s| {
        !s["node"].is_null()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path());
    config.nats = vec![nats.url()];
    config.sinks.push(SinkConfig {
        batch_size: Some(5),
        ..sink
    });
    let refused = actionhub::server::start(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(refused.contains("defined otherwise"), "{refused}");
    a.shutdown().await;
}

#[tokio::test]
async fn a_paused_sink_is_resumed_from_the_node_that_does_not_deliver_it() {
    let nats = NatsServer::start();
    let receiver = Receiver::start(Mode::Refuse, 5).await;
    let few_failures = |c: &mut Config| c.sink_max_failures = 3;
    let a = node(&nats, "a", few_failures).await;
    let b = node(&nats, "b", few_failures).await;
    let (on_a, on_b) = (a.http(), b.http());
    let made = create_sink(
        &on_a,
        json!({"name": "pausing", "url": receiver.url(), "topics": ["webchat:all"], "lingerMs": 10}),
    )
    .await;
    let id = made["id"].as_str().unwrap().to_owned();
    let map = uuid();
    let want = publish_mix(&on_a, &map, 40).await;
    let paused = until_sink(&on_b, "pausing", "the sink to pause", |s| {
        s["state"] == json!("paused")
    })
    .await;
    assert!(
        paused["consecutiveFailures"].as_u64() >= Some(3),
        "{paused}"
    );
    let deliverer = paused["node"].as_str().unwrap().to_owned();
    let other = if deliverer == "a" { &on_b } else { &on_a };
    receiver.set_mode(Mode::Accept);
    let (status, body) = other
        .post(&format!("/v1/sinks/{id}/resume"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], json!("active"), "{body}");
    until_delivered(&receiver, &want).await;
    assert_whole_batches_in_order(&receiver);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_killed_deliverer_is_taken_over_from_the_shared_cursor_losing_nothing() {
    let nats = NatsServer::start();
    let receiver = Receiver::start(Mode::Accept, 6).await;
    let secret = Secret::generate();
    let sink = config_sink("survivor", &receiver.url(), &secret);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("actionhub.toml");
    std::fs::write(
        &file,
        format!(
            "[[sinks]]\nname = \"survivor\"\nurl = \"{}\"\ntopics = [\"webchat:all\"]\n\
             batch_size = 20\nlinger_ms = 10\nsecret = \"{}\"\n",
            receiver.url(),
            secret.text()
        ),
    )
    .unwrap();
    let url = nats.url();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Started first, it takes the lease and delivers.
    let killed = HubProcess::start(
        &data,
        &[
            "--nats",
            &url,
            "--node-name",
            "k",
            "--config",
            file.to_str().unwrap(),
        ],
    );
    let on_killed = Http::new(killed.addr());
    until_ready(&on_killed).await;
    until_sink(&on_killed, "survivor", "k to deliver", |s| {
        s["node"] == json!("k")
    })
    .await;
    let b = node(&nats, "b", |c| c.sinks.push(sink.clone())).await;
    let on_b = b.http();
    let map = uuid();
    let first = publish_mix(&on_b, &map, 300).await;
    until_delivered(&receiver, &first).await;
    // k's next batch (fewer events than `batch_size`, so it goes at its linger) is held
    // by the receiver unanswered, and k is killed with it in flight.
    receiver.set_mode(Mode::Flaky {
        fail_pct: 0,
        stall_pct: 100,
        stall: Duration::from_secs(60),
    });
    let before = receiver.received().len();
    publish_mix(&on_b, &map, 6).await;
    let in_flight = bounded(WAIT, "k to post its next batch", async {
        loop {
            if let Some(request) = receiver.received().get(before) {
                return request.clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    killed.kill();
    receiver.set_mode(Mode::Accept);
    // Published before b takes over, so a batch rebuilt from the cursor would be a full
    // one under another webhook-id, and repeat the unanswered batch's events.
    publish_mix(&on_b, &map, 300).await;
    until_sink(&on_b, "survivor", "b to take the sink over", |s| {
        s["node"] == json!("b")
    })
    .await;
    let (_, events) = on_b.get("/v1/events?topics=webchat:all&limit=1000").await;
    let all: Vec<u64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    until_delivered(&receiver, &all).await;
    assert_eq!(accepted_seqs(&receiver), all.iter().copied().collect());
    // Nothing repeated but whole batches under their own webhook-id: b resent the very
    // batch k had in flight, byte for byte, and went on after it.
    assert_eq!(assert_whole_batches_in_order(&receiver), all);
    assert!(
        receiver
            .received()
            .iter()
            .any(|r| r.accepted && r.id == in_flight.id && r.body == in_flight.body),
        "the batch in flight at the kill ({}) was not resent whole",
        in_flight.id
    );
    b.shutdown().await;
}
