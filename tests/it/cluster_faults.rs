//! Hub nodes and NATS servers dying and coming back (issue 13), with hub processes on a
//! three-server NATS cluster and a replicated stream.
//!
//! The soak: while publishers keep publishing with `eventId` retries, on each cycle a
//! random hub node or NATS server is SIGKILLed and started again. At the end every
//! acknowledged event is on both nodes exactly once, with the seq it was acknowledged
//! with, and the two nodes hold the same history. CI runs a few cycles
//! (`CLUSTER_SOAK_CYCLES`, default 4); the 20 are run by hand and recorded in
//! docs/benchmarks.md:
//! `CLUSTER_SOAK_CYCLES=20 cargo test --release --test it cluster_faults -- --nocapture`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::nats::NatsCluster;
use crate::support::{bounded, seq_of, Http, HubProcess, Visitor};

/// Cycles when `CLUSTER_SOAK_CYCLES` is not set.
const DEFAULT_CYCLES: usize = 4;

/// Publishers running at once, each on its own visitor.
const PUBLISHERS: usize = 2;

/// How long the cluster runs between a restart and the next kill.
const BETWEEN_FAULTS: Duration = Duration::from_millis(1500);

/// How long a killed process stays down.
const DOWN_FOR: Duration = Duration::from_millis(800);

/// Longest one publish may take to be acknowledged, retries included: a NATS leader
/// election (5-8 s) plus a node restart, with room for a busy machine.
const PUBLISH_LIMIT: Duration = Duration::from_secs(60);

/// Longest the nodes may take to agree once publishing has stopped.
const CONVERGE_LIMIT: Duration = Duration::from_secs(60);

/// The addresses of the live nodes (None while a node is down), where publishers send.
type Nodes = Arc<Mutex<Vec<Option<SocketAddr>>>>;

fn start_node(dir: &Path, urls: &str, name: &str) -> HubProcess {
    HubProcess::start(
        dir,
        &["--nats", urls, "--nats-replicas", "3", "--node-name", name],
    )
}

/// Publishes page views of one visitor, each with its own eventId (`<prefix>-<n>`), to
/// whichever node is up, until `stop`; a publish whose outcome is unknown (refused
/// `unavailable`, a connection error, no answer in time) is retried with the same eventId,
/// to any node. Answers each eventId with the seq it was acknowledged with.
async fn publish_until(nodes: Nodes, prefix: String, stop: Arc<AtomicBool>) -> Vec<(String, u64)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let visitor = Visitor::new();
    let mut acked = Vec::new();
    let mut turn = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let mut event = visitor.page();
        let event_id = format!("{prefix}-{}", acked.len());
        event["eventId"] = json!(event_id);
        let seq = bounded(PUBLISH_LIMIT, "a publish to be acknowledged", async {
            loop {
                turn += 1;
                let up: Vec<SocketAddr> = nodes.lock().unwrap().iter().flatten().copied().collect();
                if let Some(addr) = up.get(turn % up.len().max(1)) {
                    let url = format!("http://{addr}/v1/events");
                    if let Ok(answer) = http.post(&url).json(&event).send().await {
                        if let Ok(body) = answer.json::<Value>().await {
                            // A node not ready yet refuses the whole request.
                            let result = body["results"].get(0).unwrap_or(&body);
                            if let Some(seq) = result["seq"].as_u64() {
                                return seq;
                            }
                            assert_eq!(result["error"]["code"], json!("unavailable"), "{result}");
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        acked.push((event_id, seq));
    }
    acked
}

/// Every retained event of the node at `addr`, in seq order, read page by page.
async fn whole_history(addr: SocketAddr) -> Vec<Value> {
    let http = Http::new(addr);
    let mut events = Vec::new();
    let mut since = 0;
    loop {
        let (status, body) = http
            .get(&format!("/v1/events?since={since}&limit=1000"))
            .await;
        assert_eq!(status, 200, "{body}");
        let page = body["events"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return events;
        }
        since = seq_of(page.last().unwrap());
        events.extend(page);
    }
}

/// Waits until the node at `addr` is ready and holds an event of seq `last`.
async fn caught_up(addr: SocketAddr, last: u64) -> Vec<Value> {
    bounded(CONVERGE_LIMIT, "a node to catch up", async {
        loop {
            let (status, _) = Http::new(addr).get("/readyz").await;
            if status == 200 {
                let events = whole_history(addr).await;
                if events.last().map_or(0, seq_of) >= last {
                    return events;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_event_is_lost_across_kills_of_nodes_and_nats_servers() {
    let cycles = std::env::var("CLUSTER_SOAK_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CYCLES);
    let seed = fastrand::u64(..);
    println!("cluster soak: {cycles} cycles, seed {seed}");
    let mut random = fastrand::Rng::with_seed(seed);

    let mut nats = NatsCluster::start();
    let urls = nats.urls().join(",");
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let names = ["a", "b"];
    let mut hubs: Vec<Option<HubProcess>> = dirs
        .iter()
        .zip(names)
        .map(|(dir, name)| Some(start_node(dir.path(), &urls, name)))
        .collect();
    let nodes: Nodes = Arc::new(Mutex::new(
        hubs.iter()
            .map(|h| h.as_ref().map(HubProcess::addr))
            .collect(),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| tokio::spawn(publish_until(nodes.clone(), format!("p{p}"), stop.clone())))
        .collect();

    for cycle in 0..cycles {
        tokio::time::sleep(BETWEEN_FAULTS).await;
        // Five victims: either hub node or any of the three NATS servers.
        let victim = random.usize(0..5);
        if victim < 2 {
            println!("cycle {cycle}: SIGKILL hub node {}", names[victim]);
            nodes.lock().unwrap()[victim] = None;
            hubs[victim].take().unwrap().kill();
            tokio::time::sleep(DOWN_FOR).await;
            let restarted = tokio::task::spawn_blocking({
                let dir = dirs[victim].path().to_owned();
                let urls = urls.clone();
                move || start_node(&dir, &urls, names[victim])
            })
            .await
            .unwrap();
            nodes.lock().unwrap()[victim] = Some(restarted.addr());
            hubs[victim] = Some(restarted);
        } else {
            let server = victim - 2;
            println!("cycle {cycle}: SIGKILL nats server n{server}");
            nats.servers[server].kill();
            tokio::time::sleep(DOWN_FOR).await;
            nats.servers[server].restart();
        }
    }
    tokio::time::sleep(BETWEEN_FAULTS).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for publisher in publishers {
        acked.extend(
            bounded(PUBLISH_LIMIT * 2, "a publisher to finish", publisher)
                .await
                .unwrap(),
        );
    }
    println!("cluster soak: {} events acknowledged", acked.len());
    assert!(!acked.is_empty(), "the publishers got nothing acknowledged");

    let last = acked.iter().map(|(_, seq)| *seq).max().unwrap();
    let addrs: Vec<SocketAddr> = nodes.lock().unwrap().iter().flatten().copied().collect();
    let histories = [
        caught_up(addrs[0], last).await,
        caught_up(addrs[1], last).await,
    ];
    assert_eq!(
        histories[0], histories[1],
        "both nodes hold the same history"
    );
    let seqs: Vec<u64> = histories[0].iter().map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs are dense and rising"
    );
    let mut by_event_id = HashMap::<&str, Vec<u64>>::new();
    for event in &histories[0] {
        if let Some(id) = event["event"]["eventId"].as_str() {
            by_event_id.entry(id).or_default().push(seq_of(event));
        }
    }
    for (event_id, seq) in &acked {
        assert_eq!(
            by_event_id.get(event_id.as_str()),
            Some(&vec![*seq]),
            "{event_id} is held once, with the seq it was acknowledged with"
        );
    }
    for hub in hubs.into_iter().flatten() {
        hub.stop_async().await;
    }
}

#[tokio::test]
async fn a_node_started_while_the_stream_has_no_leader_waits_for_one() {
    let mut nats = NatsCluster::start();
    let urls = nats.urls().join(",");
    let first = tempfile::tempdir().unwrap();
    // The stream exists, replicated on all three servers.
    start_node(first.path(), &urls, "a").stop_async().await;
    // Two of three down: no quorum, so JetStream answers nothing about the stream.
    nats.servers[0].kill();
    nats.servers[1].kill();
    let dir = tempfile::tempdir().unwrap();
    let starting = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        let urls = urls.clone();
        move || start_node(&dir, &urls, "b")
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.servers[0].restart();
    nats.servers[1].restart();
    let hub = bounded(Duration::from_secs(60), "the node to start", starting)
        .await
        .expect("the node joins once the stream has a leader again");
    caught_up(hub.addr(), 0).await;
    hub.stop_async().await;
}
