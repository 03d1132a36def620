//! Cluster mode over a real `nats-server`: several hubs on one JetStream stream, each
//! answering as one hub would (issue 13). Every node here is a real hub on its own port;
//! the tests talk to them over WebSocket and HTTP only.

use std::time::Duration;

use actionhub::Config;
use serde_json::{json, Value};

use crate::support::nats::{NatsCluster, NatsServer};
use crate::support::{bounded, seq_of, Action, Client, Hub, HubProcess, JsonExt, Visitor, WAIT};

/// A node named `name` on the stream of `nats`, once it has caught up.
async fn node(nats: &NatsServer, name: &str) -> Hub {
    node_with(nats, name, |_| {}).await
}

async fn node_with(nats: &NatsServer, name: &str, tweak: impl FnOnce(&mut Config)) -> Hub {
    node_on(vec![nats.url()], name, tweak).await
}

/// Starts a node on the NATS servers at `urls` and waits until it is ready.
pub(crate) async fn node_on(urls: Vec<String>, name: &str, tweak: impl FnOnce(&mut Config)) -> Hub {
    let hub = Hub::start_with(|config| {
        config.nats = urls;
        config.node_name = name.to_owned();
        tweak(config);
    })
    .await;
    ready(&hub).await;
    hub
}

/// Starts a node on `nats` with `tweak`ed settings, which must refuse to start; answers why.
async fn refused_at_start(nats: &NatsServer, tweak: impl FnOnce(&mut Config)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path());
    config.nats = vec![nats.url()];
    tweak(&mut config);
    actionhub::server::start(config)
        .await
        .err()
        .expect("refused")
        .to_string()
}

/// Waits until the node's `/readyz` says ready, and returns what it says.
async fn ready(hub: &Hub) -> Value {
    let http = hub.http();
    bounded(WAIT, "the node to catch up", async {
        loop {
            let (status, body) = http.get("/readyz").await;
            if status == 200 {
                return body;
            }
            assert_eq!(status, 503, "readyz answers 200 or 503: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The retained history of a node, as the frames it would deliver, once it holds `count`.
async fn history(hub: &Hub, count: usize) -> Vec<Value> {
    history_until(hub, |events| {
        (events.len() >= count).then(|| events.to_vec())
    })
    .await
}

/// What `seen` makes of the node's history (its frames) once it makes something of it.
async fn history_until<T>(hub: &Hub, seen: impl Fn(&[Value]) -> Option<T>) -> T {
    let http = hub.http();
    bounded(WAIT, "the node's history to converge", async {
        loop {
            let (status, body) = http.get("/v1/events?limit=1000").await;
            assert_eq!(status, 200, "{body}");
            let events = body["events"].as_array().cloned().unwrap_or_default();
            if let Some(found) = seen(&events) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Waits until a node holds the sweeper's lease (so it writes the shared snapshots).
async fn lease_taken(nats: &NatsServer) {
    let leases = nats
        .jetstream()
        .await
        .get_key_value("actionhub-lease")
        .await
        .unwrap();
    bounded(WAIT, "the node to hold the lease", async {
        while leases.get("sweeper").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn every_node_gives_every_event_the_same_seq_epoch_and_frame() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    assert_eq!(on_a.epoch(), on_b.epoch(), "one epoch for the cluster");
    let mut seqs = Vec::new();
    let visitor = Visitor::new();
    for i in 0..20 {
        let client = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        let action = visitor.action("webchat");
        seqs.push(client.publish_ok(action.event("offered")).await);
    }
    // The first event also started the session, so the seqs are dense after it.
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let total = *seqs.last().unwrap() as usize;
    let (on_a, on_b) = (history(&a, total).await, history(&b, total).await);
    assert_eq!(on_a.len(), total);
    assert_eq!(
        on_a, on_b,
        "the same events, seqs, timestamps and frames on every node"
    );
    // A `since` replay from either node yields the same frames, byte for byte.
    let mut texts = Vec::new();
    for hub in [&a, &b] {
        let mut client = hub.client().await;
        let epoch = client.epoch();
        client
            .subscribe(
                json!("s"),
                json!({"topics": ["all"], "since": 0, "epoch": epoch}),
            )
            .await;
        let mut frames = Vec::new();
        for _ in 0..total {
            frames.push(client.recv_text().await);
        }
        texts.push(frames);
    }
    assert_eq!(texts[0], texts[1]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn connected_and_readyz_name_the_node() {
    let nats = NatsServer::start();
    let a = node(&nats, "node-a").await;
    let mut client = Client::open(a.addr(), &[], None).await;
    let connected = client.connect().await;
    assert_eq!(connected["node"], json!("node-a"), "{connected}");
    let ready = ready(&a).await;
    assert_eq!(ready["node"], json!("node-a"), "{ready}");
    assert_eq!(ready["status"], json!("ready"));
    assert_eq!(ready["epoch"], json!(client.epoch()));
    assert!(ready["lag"].is_u64(), "{ready}");
    let (status, _, metrics) = a.http().get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("actionhub_stream_applied{node=\"node-a\"}"),
        "{metrics}"
    );
    a.shutdown().await;
}

#[tokio::test]
async fn conflicting_reports_on_two_nodes_accept_exactly_one() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    let (mut on_a, mut on_b) = (a.client().await, b.client().await);
    for _ in 0..10 {
        let action = Action::new("contentoffer");
        on_a.publish_ok(action.event("offered")).await;
        // Both terminal: whichever the stream orders first wins, the other is refused as
        // one node would refuse it.
        let (accepted, rejected) = tokio::join!(
            on_a.publish(action.event("accepted")),
            on_b.publish(action.event("rejected")),
        );
        let outcomes = [&accepted, &rejected];
        let won: Vec<_> = outcomes
            .iter()
            .filter(|r| r["type"] == "published")
            .collect();
        assert_eq!(won.len(), 1, "exactly one wins: {accepted} {rejected}");
        let lost = outcomes.iter().find(|r| r["type"] == "error").unwrap();
        assert_eq!(lost["code"], json!("action_terminal"), "{lost}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_retry_on_another_node_is_answered_duplicate_with_the_first_seq() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    let mut event = Visitor::new().page();
    event["eventId"] = json!("retry-1");
    let first = a.http().publish(&event).await;
    let again = b.http().publish(&event).await;
    assert_eq!(first[0]["duplicate"], json!(false), "{first:?}");
    assert_eq!(again[0]["duplicate"], json!(true), "{again:?}");
    assert_eq!(again[0]["seq"], first[0]["seq"]);
    a.shutdown().await;
    b.shutdown().await;
}

/// A busy node starts a stream message at most every millisecond (the proposer's
/// `MESSAGE_INTERVAL`), so publishes that come faster share messages: the stream's servers
/// and every node pay per message. Unpaced, each left alone.
#[tokio::test]
async fn a_busy_node_sends_at_most_one_stream_message_per_interval() {
    const PUBLISHES: u64 = 400;
    let nats = NatsServer::start();
    let a = node(&nats, "a").await;
    let mut client = a.client().await;
    let visitor = Visitor::new();
    let started = std::time::Instant::now();
    // Two publishes a millisecond (the timer's finest tick).
    let mut every = tokio::time::interval(Duration::from_millis(1));
    for id in 1..=PUBLISHES {
        if id % 2 == 1 {
            every.tick().await;
        }
        let frame = json!({"op": "publish", "id": id, "event": visitor.page()});
        client.send(frame).await;
    }
    for id in 1..=PUBLISHES {
        let reply = client.reply_to(id).await;
        assert_eq!(reply["type"], json!("published"), "{reply}");
    }
    let elapsed = started.elapsed();
    let messages = stream_messages(&nats)
        .await
        .iter()
        .filter(|message| message.contains(r#""publish""#))
        .count();
    let most = elapsed.as_millis() as usize + 1;
    assert!(
        messages <= most,
        "{PUBLISHES} publishes in {elapsed:?} took {messages} stream messages, more than one \
         a millisecond ({most})"
    );
    a.shutdown().await;
}

#[tokio::test]
async fn a_batch_keeps_its_refusals_in_place() {
    let nats = NatsServer::start();
    let a = node(&nats, "a").await;
    let action = Action::new("webchat");
    let results = a
        .http()
        .publish(&json!([
            action.event("offered"),
            {"actionId": "not-a-uuid"},
            action.event("ended"),
            action.event("accepted"),
        ]))
        .await;
    assert!(results[0]["seq"].is_u64(), "{results:?}");
    assert_eq!(results[1]["error"]["code"], json!("invalid_event"));
    assert_eq!(results[2]["error"]["code"], json!("invalid_transition"));
    assert_eq!(seq_of(&results[3]), seq_of(&results[0]) + 1, "{results:?}");
    a.shutdown().await;
}

#[tokio::test]
async fn the_hubs_own_events_are_made_once_in_the_cluster() {
    let nats = NatsServer::start();
    let short_sessions = |config: &mut Config| {
        config.session_idle_timeout = Duration::from_millis(400);
    };
    let a = node_with(&nats, "a", short_sessions).await;
    let b = node_with(&nats, "b", short_sessions).await;
    let visitor = Visitor::new();
    // The same new session reported on both nodes at once starts it once.
    let (http_a, http_b, page) = (a.http(), b.http(), visitor.page());
    let (on_a, on_b) = tokio::join!(http_a.publish(&page), http_b.publish(&page));
    assert!(on_a[0]["seq"].is_u64() && on_b[0]["seq"].is_u64());
    // Two nodes sweep; one lease holder ends the idle session, once.
    let ended = bounded(Duration::from_secs(20), "the idle session to end", async {
        loop {
            let (_, body) = b.http().get("/v1/events?topics=session:ended").await;
            let events = body["events"].as_array().cloned().unwrap_or_default();
            if !events.is_empty() {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Let any second tick come through before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for hub in [&a, &b] {
        let (_, body) = hub.http().get("/v1/events?topics=session:all").await;
        let topics: Vec<&str> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["topic"].as_str().unwrap())
            .collect();
        assert_eq!(topics, ["session:started", "session:ended"], "{body}");
    }
    assert_eq!(ended[0]["event"]["reason"], json!("idle"));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_node_started_later_rebuilds_the_same_state_from_the_stream() {
    let nats = NatsServer::start();
    let a = node(&nats, "a").await;
    let mut visitor = Visitor::new();
    let action = visitor.action("webchat");
    let http = a.http();
    http.publish(&json!([
        visitor.event("identify", "user-1"),
        action.event("offered"),
        action.event("accepted"),
    ]))
    .await;
    visitor.new_session();
    http.publish(&visitor.page()).await;
    let path = format!("/v1/customers/{}", visitor.customer_id);
    let (_, on_a) = http.get(&path).await;
    let (_, action_on_a) = http.get(&format!("/v1/actions/{}", action.action_id)).await;
    let total = history(&a, 1).await.len();

    let b = node(&nats, "b").await;
    assert_eq!(history(&b, total).await, history(&a, total).await);
    assert_eq!(b.http().get(&path).await.1, on_a);
    let action_path = format!("/v1/actions/{}", action.action_id);
    assert_eq!(b.http().get(&action_path).await.1, action_on_a);
    // And it decides as the others do: the action moves on from where the stream left it.
    let mut on_b = b.client().await;
    on_b.publish_ok(action.event("started")).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn visitor_changes_apply_on_every_node() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    let visitor = Visitor::new();
    a.http().publish(&visitor.event("identify", "user-7")).await;
    let path = format!("/v1/visitors/{}", visitor.customer_id);
    let (status, _) = a
        .http()
        .put(&path, &json!({"attributes": {"plan": "premium"}}))
        .await;
    assert_eq!(status, 200);
    let plan = bounded(WAIT, "the change to reach node b", async {
        loop {
            let (_, body) = b.http().get(&path).await;
            if body["attributes"]["plan"] == json!("premium") {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(plan["attributes"]["plan"], json!("premium"));
    let (status, _) = b.http().delete(&path).await;
    assert_eq!(status, 200, "erased through node b");
    // Node a applies it as the stream brings it (an ack promises read-your-writes on the
    // node that answered, convergence on the others).
    bounded(WAIT, "the erasure to reach node a", async {
        while a.http().get(&path).await.0 != 404 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Segments and companies in a cluster: a segment made on one node has the same id on the
/// other, a visitor changed through either enters it with one `segment:entered` whose seq
/// and frame are the same on both, and the counts agree.
#[tokio::test]
async fn segments_and_companies_are_the_same_on_every_node() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    let definition = json!({"name": "Acme people", "conditions": [
        {"field": "company.id", "operator": "equals", "value": "acme"}]});
    let (status, made) = a.http().post("/v1/segments", &definition).await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    let (ada, bob) = (Visitor::new(), Visitor::new());
    for (node, visitor, user) in [(&a, &ada, "ada"), (&b, &bob, "bob")] {
        let identify = visitor
            .event("identify", user)
            .with("company", json!({"id": "acme", "name": "Acme"}));
        let answer = node.http().publish(&identify).await;
        assert!(answer[0]["seq"].is_u64(), "{answer:?}");
    }
    let entered = |hub: &Hub| {
        let http = hub.http();
        async move {
            bounded(WAIT, "both segment:entered events", async {
                loop {
                    let (_, body) = http
                        .get("/v1/events?topics=segment:entered&limit=100")
                        .await;
                    let events = body["events"].as_array().cloned().unwrap_or_default();
                    if events.len() >= 2 {
                        return events;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
        }
    };
    let (on_a, on_b) = (entered(&a).await, entered(&b).await);
    assert_eq!(on_a, on_b, "the same events, seqs and frames on both nodes");
    assert_eq!(on_a.len(), 2);
    for node in [&a, &b] {
        let (_, segment) = node.http().get(&format!("/v1/segments/{id}")).await;
        assert_eq!(segment["visitorCount"], json!(2), "{segment}");
        let (_, company) = node.http().get("/v1/companies/acme").await;
        assert_eq!(company["visitorCount"], json!(2), "{company}");
    }
    let (_, list_a) = a.http().get("/v1/segments").await;
    let (_, list_b) = b.http().get("/v1/segments").await;
    assert_eq!(list_a, list_b);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_channel_id_claimed_on_two_nodes_names_one_visitor_on_both() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats, "a").await, node(&nats, "b").await);
    let (chat, laptop) = (Visitor::new(), Visitor::new());
    let whatsapp = json!({"whatsapp": "10435685475"});
    let through_channel = chat
        .event("identify", "")
        .without("userId")
        .with("channels", whatsapp.clone());
    let first = a.http().publish(&through_channel).await;
    assert!(first[0]["seq"].is_u64(), "{first:?}");
    // Acknowledged on a, so earlier in the stream than anything b proposes next: b decides
    // the second claim against the first.
    let second = b
        .http()
        .publish(&laptop.event("identify", "u-1").with("channels", whatsapp))
        .await;
    assert!(second[0]["seq"].is_u64(), "{second:?}");
    let path = "/v1/visitors/by-channel/whatsapp/10435685475";
    let mut customers = vec![chat.customer_id.clone(), laptop.customer_id.clone()];
    customers.sort();
    for node in [&a, &b] {
        let view = bounded(WAIT, "both claims to reach the node", async {
            loop {
                let (status, body) = node.http().get(path).await;
                if status == 200 && body["customers"].as_array().is_some_and(|c| c.len() == 2) {
                    return body;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert_eq!(view["visitorId"], json!(chat.customer_id), "{view}");
        let mut held: Vec<String> = serde_json::from_value(view["customers"].clone()).unwrap();
        held.sort();
        assert_eq!(held, customers);
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_stream_actionhub_did_not_make_is_refused_at_start() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "actionhub".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let message = refused_at_start(&nats, |_| {}).await;
    assert!(message.contains("stream actionhub"), "{message}");
    assert!(message.contains("not made by actionhub"), "{message}");
}

/// Publishes `count` page views of one visitor to the hub at `addr`, each with its own
/// eventId (`<prefix>-<n>`), retrying one whose outcome is unknown (refused
/// `unavailable`, or no answer in time) with the same eventId; answers each eventId with
/// the seq it was acknowledged with.
async fn publish_with_retries(
    addr: std::net::SocketAddr,
    prefix: &str,
    count: usize,
) -> Vec<(String, u64)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let url = format!("http://{addr}/v1/events");
    let visitor = Visitor::new();
    let mut acked = Vec::new();
    for i in 0..count {
        let mut event = visitor.page();
        let event_id = format!("{prefix}-{i}");
        event["eventId"] = json!(event_id);
        let seq = bounded(
            Duration::from_secs(60),
            "a publish to be acknowledged",
            async {
                loop {
                    // No answer (the node is unreachable or slow): the outcome is unknown.
                    if let Ok(answer) = http.post(&url).json(&event).send().await {
                        if let Ok(body) = answer.json::<Value>().await {
                            let result = &body["results"][0];
                            if let Some(seq) = result["seq"].as_u64() {
                                return seq;
                            }
                            assert_eq!(result["error"]["code"], json!("unavailable"), "{result}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await;
        acked.push((event_id, seq));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    acked
}

/// The seqs of `event` frames `client` receives, until it has seen `last`.
async fn seqs_until(client: &mut Client, last: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    let limit = Duration::from_secs(30);
    bounded(limit, "the subscriber to see every event", async {
        while seqs.last().is_none_or(|seen| *seen < last) {
            let frame = client.recv_within(limit).await;
            assert_eq!(frame["type"], json!("event"), "{frame}");
            seqs.push(seq_of(&frame));
        }
    })
    .await;
    seqs
}

/// Every retained event of `hub` with an eventId: eventId -> seqs it was given.
async fn event_ids(hub: &Hub) -> std::collections::HashMap<String, Vec<u64>> {
    let mut ids = std::collections::HashMap::<String, Vec<u64>>::new();
    for event in history(hub, 1).await {
        if let Some(id) = event["event"]["eventId"].as_str() {
            ids.entry(id.to_owned()).or_default().push(seq_of(&event));
        }
    }
    ids
}

#[tokio::test]
async fn a_nats_server_dying_pauses_publishes_and_loses_nothing_acknowledged() {
    let mut nats = NatsCluster::start();
    let replicated = |config: &mut Config| config.nats_replicas = 3;
    let a = node_on(nats.urls(), "a", replicated).await;
    let b = node_on(nats.urls(), "b", replicated).await;
    let mut watcher = b.client().await;
    watcher.subscribe_to("all", &["all"], None).await;
    let addr = a.addr();
    let publishing = tokio::spawn(async move { publish_with_retries(addr, "e", 120).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = bounded(WAIT, "the stream's leader", async {
        loop {
            if let Some(leader) = nats.leader_of("actionhub").await {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    nats.servers[leader].kill();
    let acked = bounded(Duration::from_secs(90), "the publisher", publishing)
        .await
        .unwrap();
    let last = acked.iter().map(|(_, seq)| *seq).max().unwrap();
    // The live subscriber on the other node kept its stream: every seq, in order, once.
    let seen = seqs_until(&mut watcher, last).await;
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no duplicate: {seen:?}"
    );
    // Every acknowledged event is there once, with the seq it was acknowledged with.
    let ids = event_ids(&b).await;
    for (event_id, seq) in &acked {
        assert_eq!(ids.get(event_id), Some(&vec![*seq]), "{event_id}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn every_log_line_of_a_node_names_it() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path(), &["--nats", &url, "--node-name", "logged"]);
    let lines = hub.stop_async().await;
    let logged: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(logged.len() >= 3, "{lines:?}");
    for line in &logged {
        assert_eq!(line["node"], json!("logged"), "{line}");
    }
}

#[tokio::test]
async fn a_killed_node_loses_nothing_and_its_clients_resume_on_another() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let killed = HubProcess::start(dir.path(), &["--nats", &url, "--node-name", "k"]);
    let b = node(&nats, "b").await;
    let mut on_killed = Client::connected_to(killed.addr(), None).await;
    let epoch = on_killed.epoch();
    on_killed.subscribe_to("all", &["all"], None).await;
    // Acknowledged by the node about to die.
    let acked = publish_with_retries(killed.addr(), "before", 10).await;
    let last_seen = *seqs_until(&mut on_killed, acked.last().unwrap().1)
        .await
        .last()
        .unwrap();
    killed.kill();
    // Published meanwhile on the other node.
    let later = publish_with_retries(b.addr(), "after", 5).await;
    // The client resumes on the other node from where it was: no gap, no duplicate.
    let mut resumed = b.client().await;
    let reply = resumed
        .subscribe(
            json!("all"),
            json!({"topics": ["all"], "since": last_seen, "epoch": epoch}),
        )
        .await;
    assert_eq!(reply["recovered"], json!(true), "{reply}");
    let seen = seqs_until(&mut resumed, later.last().unwrap().1).await;
    assert_eq!(seen[0], last_seen + 1, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    let ids = event_ids(&b).await;
    for (event_id, seq) in acked.iter().chain(&later) {
        assert_eq!(ids.get(event_id), Some(&vec![*seq]), "{event_id}");
    }
    // The killed node starts again on its data directory and catches up.
    let restarted = HubProcess::start(dir.path(), &["--nats", &url, "--node-name", "k"]);
    let http = crate::support::Http::new(restarted.addr());
    let total = history(&b, 1).await.len();
    bounded(WAIT, "the restarted node to catch up", async {
        loop {
            let (status, _) = http.get("/readyz").await;
            let (_, events) = http.get("/v1/events?limit=1000").await;
            if status == 200
                && events["events"]
                    .as_array()
                    .is_some_and(|e| e.len() == total)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (_, on_restarted) = http.get("/v1/events?limit=1000").await;
    assert_eq!(
        on_restarted["events"].as_array().unwrap(),
        &history(&b, total).await
    );
    restarted.stop_async().await;
    b.shutdown().await;
}

/// What the newest shared snapshot's `latest` object says, once one exists.
async fn latest_snapshot(nats: &NatsServer) -> Option<Value> {
    let js = nats.jetstream().await;
    let store = js.get_object_store("actionhub-snapshots").await.ok()?;
    let mut object = store.get("latest").await.ok()?;
    let mut text = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut text)
        .await
        .unwrap();
    Some(serde_json::from_slice(&text).unwrap())
}

/// Waits until a shared snapshot holds every event up to `seq`; answers its `latest`.
async fn snapshot_through(nats: &NatsServer, seq: u64) -> Value {
    bounded(WAIT, "a shared snapshot to be written", async {
        loop {
            if let Some(latest) = latest_snapshot(nats).await {
                if latest["seq"].as_u64().unwrap() >= seq {
                    return latest;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Every message the stream still holds, as text.
async fn stream_messages(nats: &NatsServer) -> Vec<String> {
    let js = nats.jetstream().await;
    let mut stream = js.get_stream("actionhub").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            out.push(String::from_utf8_lossy(&message.payload).into_owned());
        }
    }
    out
}

#[tokio::test]
async fn a_new_node_starts_from_the_shared_snapshot_when_the_stream_was_purged() {
    let nats = NatsServer::start();
    let a = node_with(&nats, "a", |c| {
        c.snapshot_interval = Duration::from_millis(200)
    })
    .await;
    let mut visitor = Visitor::new();
    let action = visitor.action("webchat");
    let mut offered = action.event("offered");
    offered["eventId"] = json!("offer-1");
    let http = a.http();
    http.publish(&json!([
        visitor.event("identify", "user-1"),
        offered.clone(),
        action.event("accepted"),
    ]))
    .await;
    visitor.new_session();
    http.publish(&visitor.page()).await;
    let before = history(&a, 1).await;
    let offered_seq = before
        .iter()
        .find(|e| e["topic"] == json!("webchat:offered"))
        .map(seq_of)
        .unwrap();
    let last = seq_of(before.last().unwrap());

    // Every message so far is in a snapshot; the stream forgets them.
    let latest = snapshot_through(&nats, last).await;
    let covered = latest["streamSequence"].as_u64().unwrap();
    let js = nats.jetstream().await;
    let stream = js.get_stream("actionhub").await.unwrap();
    stream.purge().sequence(covered + 1).await.unwrap();
    // And one more after the purge, which only the stream holds.
    a.client().await.publish_ok(action.event("started")).await;
    let total = history(&a, before.len() + 1).await.len();

    let b = node(&nats, "b").await;
    assert_eq!(history(&b, total).await, history(&a, total).await);
    let path = format!("/v1/customers/{}", visitor.customer_id);
    assert_eq!(b.http().get(&path).await.1, a.http().get(&path).await.1);
    let action_path = format!("/v1/actions/{}", action.action_id);
    assert_eq!(
        b.http().get(&action_path).await.1,
        a.http().get(&action_path).await.1
    );
    // It decides as the others do, with the history it was given: a retry of an event
    // from before the snapshot is a duplicate of it, and the action moves on.
    let mut on_b = b.client().await;
    let retried = on_b.publish(offered).await;
    assert_eq!(retried["duplicate"], json!(true), "{retried}");
    assert_eq!(retried["seq"].as_u64(), Some(offered_seq), "{retried}");
    on_b.publish_ok(action.event("engaged")).await;
    let converged = history(&a, total + 1).await;
    assert_eq!(history(&b, total + 1).await, converged);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_clean_stop_leaves_a_shared_snapshot_of_everything_applied() {
    let nats = NatsServer::start();
    // No interval's snapshot comes within the test: only the one the stop writes.
    let a = node_with(&nats, "a", |c| {
        c.snapshot_interval = Duration::from_secs(3600)
    })
    .await;
    let visitor = Visitor::new();
    a.http().publish(&visitor.page()).await;
    let last = seq_of(history(&a, 1).await.last().unwrap());
    lease_taken(&nats).await;
    assert!(latest_snapshot(&nats).await.is_none());
    a.shutdown().await;
    let latest = latest_snapshot(&nats)
        .await
        .expect("a snapshot at the stop");
    assert!(latest["seq"].as_u64().unwrap() >= last, "{latest}");
}

#[tokio::test]
async fn a_purged_stream_with_no_snapshot_is_refused_at_start() {
    let nats = NatsServer::start();
    // Killed, so it leaves no snapshot behind (a clean stop writes one).
    let dir = tempfile::tempdir().unwrap();
    let killed = HubProcess::start(dir.path(), &["--nats", &nats.url()]);
    crate::support::Http::new(killed.addr())
        .publish(&Visitor::new().page())
        .await;
    killed.kill();
    let js = nats.jetstream().await;
    js.get_stream("actionhub")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    let message = refused_at_start(&nats, |_| {}).await;
    assert!(message.contains("no longer reaches back"), "{message}");
}

#[tokio::test]
async fn a_node_with_another_retention_age_than_the_stream_is_refused() {
    let nats = NatsServer::start();
    let a = node(&nats, "a").await;
    let message = refused_at_start(&nats, |config| {
        // Node a runs with the default.
        config.retention_age *= 2;
    })
    .await;
    assert!(message.contains("--retention-age"), "{message}");
    a.shutdown().await;
}

#[tokio::test]
async fn erased_personal_data_leaves_the_stream_within_a_snapshot_interval() {
    let nats = NatsServer::start();
    let a = node_with(&nats, "a", |c| {
        c.snapshot_interval = Duration::from_millis(200)
    })
    .await;
    let visitor = Visitor::new();
    let email = format!("pii-{}@example.com", uuid::Uuid::new_v4().simple());
    let mut identify = visitor.event("identify", "pii-user");
    identify["traits"] = json!({ "email": email });
    a.http().publish(&identify).await;
    assert!(
        stream_messages(&nats)
            .await
            .iter()
            .any(|m| m.contains(&email)),
        "the stream carries the identify"
    );
    let path = format!("/v1/visitors/{}", visitor.customer_id);
    assert_eq!(a.http().delete(&path).await.0, 200);
    bounded(WAIT, "the erased data to leave the stream", async {
        while stream_messages(&nats)
            .await
            .iter()
            .any(|m| m.contains(&email))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The snapshot the purge followed holds nothing of it either, and a node started
    // from it knows no such visitor.
    let b = node(&nats, "b").await;
    assert_eq!(b.http().get(&path).await.0, 404);
    let (_, events) = b.http().get("/v1/events?limit=1000").await;
    assert!(!events.to_string().contains(&email), "{events}");
    a.shutdown().await;
    b.shutdown().await;
}

/// Writes a message into the stream as a node of `origin` would, its proposals numbered
/// from `first`, each input a publish of one event (`skip`: none, the requests given up).
async fn stream_message(nats: &NatsServer, origin: &str, first: u64, events: &[Value]) {
    let proposals: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, event)| json!({"req": first + i as u64, "input": {"publish": [event]}}))
        .collect();
    let message = json!({"origin": origin, "proposals": proposals});
    stored(nats, message).await;
}

async fn stored(nats: &NatsServer, message: Value) {
    let js = nats.jetstream().await;
    let ack = js
        .publish("actionhub.inputs", message.to_string().into())
        .await
        .expect("publish to the stream");
    ack.await.expect("the stream stores it");
}

/// The lifecycle states the node's history holds for `action`, in seq order, once it
/// holds `count`.
async fn states_of(hub: &Hub, action: &Action, count: usize) -> Vec<String> {
    history_until(hub, |events| {
        let states: Vec<String> = events
            .iter()
            .filter(|frame| frame["event"]["actionId"] == json!(action.action_id))
            .map(|frame| frame["event"]["actionState"].as_str().unwrap().to_owned())
            .collect();
        (states.len() >= count).then_some(states)
    })
    .await
}

/// A message sent again after a lost acknowledgement can be stored after messages its
/// node proposed later. Every node applies an origin's messages in the order it proposed
/// them (by their request numbers): one that came early waits for the one before it, even
/// across a shared snapshot and a node that starts from it; a skip (the proposer gave
/// those requests up) lets through what waited behind it.
#[tokio::test]
async fn an_origins_messages_are_applied_in_the_order_it_proposed_them() {
    let nats = NatsServer::start();
    let a = node_with(&nats, "a", |c| {
        c.snapshot_interval = Duration::from_secs(3600)
    })
    .await;
    lease_taken(&nats).await;
    let action = Action::new("webchat");
    let origin = "elsewhere/1";
    stream_message(&nats, origin, 1, &[action.event("offered")]).await;
    // Request 3 is stored before request 2.
    stream_message(&nats, origin, 3, &[action.event("started")]).await;
    // Applied after both (the stream's order): so both were read when it is seen.
    let visitor = Visitor::new();
    a.http().publish(&visitor.page()).await;
    assert_eq!(states_of(&a, &action, 1).await, ["offered"]);
    let (_, _, metrics) = a.http().get_text("/metrics").await;
    assert!(
        metrics.contains("actionhub_stream_held{node=\"a\"} 1\n"),
        "{metrics}"
    );

    // The node's stop leaves a shared snapshot with request 3 held; b starts from it.
    a.shutdown().await;
    assert!(latest_snapshot(&nats).await.is_some());
    let b = node(&nats, "b").await;
    stream_message(&nats, origin, 2, &[action.event("accepted")]).await;
    assert_eq!(
        states_of(&b, &action, 3).await,
        ["offered", "accepted", "started"]
    );

    // Request 4 is given up; 5 waits for it until the skip says so.
    stream_message(&nats, origin, 5, &[action.event("ended")]).await;
    stored(
        &nats,
        json!({"origin": origin, "proposals": [], "skip": [4, 4]}),
    )
    .await;
    assert_eq!(
        states_of(&b, &action, 4).await,
        ["offered", "accepted", "started", "ended"]
    );
    b.shutdown().await;
}

/// The names of every object in the snapshot bucket.
async fn snapshot_objects(nats: &NatsServer) -> Vec<String> {
    use futures_util::StreamExt;
    let js = nats.jetstream().await;
    let store = js.get_object_store("actionhub-snapshots").await.unwrap();
    let mut listed = store.list().await.unwrap();
    let mut names = Vec::new();
    while let Some(info) = listed.next().await {
        names.push(info.unwrap().name);
    }
    names.sort();
    names
}

/// The history pieces `latest` names.
fn chunk_names(latest: &Value) -> Vec<String> {
    latest["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// A shared snapshot uploads only the history that is new since the one before: the
/// earlier pieces are named again, not written again, and a node starts from all the
/// pieces together. An anonymization rewrites the history, so the next snapshot writes it
/// whole again and the pieces that held the visitor's data are deleted.
#[tokio::test]
async fn shared_snapshots_upload_each_piece_of_the_history_once() {
    let nats = NatsServer::start();
    let a = node_with(&nats, "a", |c| {
        c.snapshot_interval = Duration::from_millis(200)
    })
    .await;
    let http = a.http();
    let visitor = Visitor::new();
    http.publish(&visitor.event("identify", "piece-user")).await;
    http.publish(&visitor.page()).await;
    let first = snapshot_through(&nats, seq_of(history(&a, 2).await.last().unwrap())).await;
    let earlier = chunk_names(&first);
    assert!(!earlier.is_empty(), "{first}");

    let other = Visitor::new();
    http.publish(&json!([other.page(), other.page()])).await;
    let all = history(&a, 4).await;
    let second = snapshot_through(&nats, seq_of(all.last().unwrap())).await;
    let later = chunk_names(&second);
    assert!(later.len() > earlier.len(), "{first}\n{second}");
    assert_eq!(
        later[..earlier.len()],
        earlier[..],
        "kept, not written again"
    );
    let chunks = second["chunks"].as_array().unwrap();
    for pair in chunks.windows(2) {
        assert!(
            pair[1]["first"].as_u64() > pair[0]["last"].as_u64(),
            "{second}"
        );
    }
    // What the bucket holds is what `latest` names, once it has cleaned up.
    bounded(WAIT, "older snapshots to be deleted", async {
        loop {
            let latest = latest_snapshot(&nats).await.unwrap();
            let mut named = chunk_names(&latest);
            named.push(latest["state"].as_str().unwrap().to_owned());
            named.push("latest".to_owned());
            named.sort();
            if snapshot_objects(&nats).await == named {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // A node that can only start from the snapshot reads every piece.
    let covered = latest_snapshot(&nats).await.unwrap()["streamSequence"]
        .as_u64()
        .unwrap();
    let js = nats.jetstream().await;
    let stream = js.get_stream("actionhub").await.unwrap();
    stream.purge().sequence(covered + 1).await.unwrap();
    let b = node(&nats, "b").await;
    let total = history(&a, 0).await.len();
    assert_eq!(history(&b, total).await, history(&a, total).await);
    b.shutdown().await;

    let (status, view) = http
        .post(
            &format!("/v1/visitors/{}/anonymize", visitor.customer_id),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    let after = bounded(WAIT, "a snapshot after the anonymization", async {
        loop {
            let latest = latest_snapshot(&nats).await.unwrap();
            if latest["streamSequence"].as_u64() > Some(covered) {
                return latest;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let rewritten = chunk_names(&after);
    assert_eq!(rewritten.len(), 1, "written whole again: {after}");
    assert!(!later.contains(&rewritten[0]), "{after}");
    bounded(WAIT, "the pieces of before to be deleted", async {
        while snapshot_objects(&nats)
            .await
            .iter()
            .any(|name| later.contains(name))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    a.shutdown().await;
}
