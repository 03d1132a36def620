//! Faults around the sequencer (issue 11): publishers racing a shutdown, a pipeline that
//! lags behind the sequencer, and big snapshots taken while others publish.
//!
//! Some of these drive the hub's own components in-process (`actionhub::hub::Hub` over a
//! test [`Log`]), because the fault lives between the sequencer and the log: a log that
//! records what it was given, or one that holds appends back until the test lets go.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar};

use actionhub::hub::retention::Record;
use actionhub::hub::state::AdminOp;
use actionhub::hub::Hub as CoreHub;
use actionhub::ingest::event::Event;
use actionhub::store::log::Log;
use actionhub::Config;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::support::{
    assert_type, bounded, seq_of, uuid, Client, JsonExt, Visitor, SHUTDOWN_WAIT, SUBPROTOCOL, WAIT,
};

/// Longest wait for the next frame of a snapshot of 100,000 actions while another
/// connection publishes: its build takes seconds on a loaded 2-core machine.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A log that keeps the seqs it was given, for the test to compare with what was
/// acknowledged.
struct Recording(Arc<Mutex<Vec<u64>>>);

impl Log for Recording {
    fn append(&mut self, records: &[Arc<Record>]) -> std::io::Result<()> {
        self.0.lock().extend(records.iter().map(|r| r.seq.0));
        Ok(())
    }

    fn append_admin(&mut self, _op: &AdminOp) -> std::io::Result<()> {
        Ok(())
    }
}

/// Holds a log's appends back while closed, so the pipeline lags behind the sequencer.
#[derive(Clone, Default)]
struct Gate(Arc<(std::sync::Mutex<bool>, Condvar)>);

impl Gate {
    fn set_closed(&self, closed: bool) {
        *self.0 .0.lock().expect("gate") = closed;
        self.0 .1.notify_all();
    }

    fn pass(&self) {
        let (closed, changed) = &*self.0;
        let guard = closed.lock().expect("gate");
        drop(changed.wait_while(guard, |closed| *closed).expect("gate"));
    }
}

/// Opens the gate when dropped, so a failing test never leaves the pipeline stuck.
struct Closed(Gate);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.set_closed(false);
    }
}

struct Gated {
    inner: Box<dyn Log>,
    gate: Gate,
}

impl Log for Gated {
    fn append(&mut self, records: &[Arc<Record>]) -> std::io::Result<()> {
        self.gate.pass();
        self.inner.append(records)
    }

    fn append_admin(&mut self, op: &AdminOp) -> std::io::Result<()> {
        self.gate.pass();
        self.inner.append_admin(op)
    }

    fn tick(&mut self) -> std::io::Result<()> {
        self.inner.tick()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A resume from `connected.seq` while the pipeline lags: `since` is ahead of what has been
/// delivered. The replay has nothing to send, and live delivery must still start after
/// `since`, not after the (older) delivered mark, or the events in between arrive twice.
#[tokio::test]
async fn a_since_ahead_of_delivery_gets_nothing_at_or_before_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gate = Gate::default();
    let running = {
        let gate = gate.clone();
        let starting = actionhub::server::start_with_log(Config::ephemeral(dir.path()), |log| {
            Box::new(Gated { inner: log, gate })
        });
        bounded(WAIT, "the hub to start", starting)
            .await
            .expect("hub starts")
    };
    let addr = running.addr();
    let mut publisher = Client::open(addr, &[SUBPROTOCOL], None).await;
    publisher.connect().await;
    let visitor = Visitor::new();
    let closed = Closed(gate.clone());
    gate.set_closed(true);
    // Not acknowledged while the gate is closed: sent without waiting for replies.
    const HELD: u64 = 5;
    for _ in 0..HELD {
        let frame = json!({"op": "publish", "event": visitor.page()});
        publisher.send(frame).await;
    }
    // Each held page view and the session it starts are decided (though not delivered).
    let decided = HELD + 1;
    bounded(WAIT, "the held publishes to be decided", async {
        while running.hub().latest_seq().0 < decided {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut subscriber = Client::open(addr, &[SUBPROTOCOL], None).await;
    let connected = subscriber.connect().await;
    let since = seq_of(&connected);
    assert_eq!(
        since, decided,
        "connected.seq is the sequencer's: {connected}"
    );
    let subscribed = subscriber
        .subscribe(
            json!("resume"),
            json!({"topics": ["visitor:all", "session:all"]})
                .with("since", json!(since))
                .with("epoch", json!(subscriber.epoch())),
        )
        .await;
    assert_eq!(subscribed["recovered"], json!(true), "{subscribed}");
    // Round trips after `subscribed`, so the connection has run its (empty) replay and
    // gone live before the held events are delivered.
    for _ in 0..5 {
        let pong = subscriber.request(json!({"op": "ping"})).await;
        assert_type(&pong, "pong");
    }
    drop(closed);
    let after = publisher.publish_ok(visitor.page()).await;
    let first = subscriber.next_event().await;
    assert_eq!(
        seq_of(&first),
        after,
        "the first event after since={since} is the next one published: {first}"
    );
    subscriber.expect_no_frame().await;
    drop((publisher, subscriber));
    bounded(SHUTDOWN_WAIT, "the hub to shut down", running.shutdown())
        .await
        .expect("hub shuts down cleanly");
}

/// Publishers keep publishing while the pipeline is closed under them: whatever they were
/// told was accepted must have reached the log, and nothing may be committed after the
/// log's last record (the final snapshot would wait for it forever). A publisher already
/// holding room in the pipeline when it closes is the race; several rounds make it likely
/// that one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_unless_logged_when_the_pipeline_closes() {
    const PUBLISHERS: usize = 8;
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("temp dir");
        let logged = Arc::new(Mutex::new(Vec::new()));
        let (hub, pipeline) = CoreHub::start(
            Arc::new(Config::ephemeral(dir.path())),
            Box::new(Recording(logged.clone())),
        );
        let acked_so_far = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Handle::current();
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|_| {
                let (hub, acked_so_far, runtime) =
                    (hub.clone(), acked_so_far.clone(), runtime.clone());
                std::thread::spawn(move || {
                    let page = json!({
                        "type": "page", "customerId": uuid(), "sessionId": uuid(),
                        "page": {"url": "https://shop.example/p"},
                    });
                    let mut acked = Vec::new();
                    loop {
                        let event = Event::from_json(page.clone());
                        let Ok(submitted) = hub.try_submit(vec![event]) else {
                            continue;
                        };
                        match runtime.block_on(submitted.acknowledged()).pop() {
                            Some(Ok(ack)) => {
                                acked.push(ack.seq.0);
                                acked_so_far.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => return acked,
                        }
                    }
                })
            })
            .collect();
        bounded(WAIT, "publishes to be acknowledged", async {
            while acked_so_far.load(Ordering::Relaxed) < 50 * PUBLISHERS {
                tokio::task::yield_now().await;
            }
        })
        .await;
        hub.close_pipeline();
        let joined = tokio::task::spawn_blocking(move || {
            let acked: Vec<u64> = publishers
                .into_iter()
                .flat_map(|p| p.join().expect("publisher"))
                .collect();
            pipeline.join();
            acked
        });
        let acked = bounded(WAIT, "publishers and the pipeline to end", joined)
            .await
            .expect("joined");
        let logged = logged.lock();
        let unlogged: Vec<u64> = acked
            .iter()
            .copied()
            .filter(|seq| logged.binary_search(seq).is_err())
            .collect();
        assert!(
            unlogged.is_empty(),
            "round {round}: acknowledged but never logged: {unlogged:?}"
        );
        assert_eq!(
            hub.latest_seq().0,
            logged.last().copied().unwrap_or(0),
            "round {round}: committed after the log's last record"
        );
    }
}

/// `snapshot: true` over 100,000 actions while another connection keeps publishing. The
/// snapshot is built without the sequencer: a publish sent right after the subscribe, on
/// the same connection, is acknowledged before the first snapshot frame (the old hub built
/// the snapshot inside the subscribe, holding the sequencer, so nothing could come first).
/// It arrives in chunks that share one seq, the last without `more`; with the live events
/// after it, it holds every action once, and the events are exactly the history after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_snapshot_lets_publishes_through_and_joins_live_without_gap_or_duplicate() {
    const VISITORS: usize = 100;
    const ACTIONS_EACH: usize = 1000;
    let hub = crate::support::Hub::start().await;
    let http = hub.http();
    offer_actions(&http, VISITORS, ACTIONS_EACH).await;
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (mut publisher, stop) = (hub.client().await, stop.clone());
        tokio::spawn(async move {
            let visitor = Visitor::new();
            let mut published = 0usize;
            // Bounded: what is published during the build is caught up in one go, and
            // that must fit the subscriber's outbox (pacing it is the replay's business).
            while !stop.load(Ordering::Relaxed) && published < 2000 {
                publisher
                    .publish_ok(visitor.action("webchat").event("offered"))
                    .await;
                published += 1;
            }
            published
        })
    };
    let mut subscriber = hub.client().await;
    let own = Visitor::new().action("webchat");
    subscriber
        .send(
            json!({"op": "subscribe", "id": 1, "sub": "big", "topics": ["webchat:all"],
                     "snapshot": true}),
        )
        .await;
    subscriber
        .send(json!({"op": "publish", "id": 2, "event": own.event("offered")}))
        .await;
    let subscribed = subscriber.recv().await;
    assert_type(&subscribed, "subscribed");
    let at = seq_of(&subscribed);
    let mut acked_first = false;
    let mut snapshot: Vec<Value> = Vec::new();
    let mut chunks = 0;
    loop {
        // Generous: the build's length is the machine's business, not what is tested.
        let frame = subscriber.recv_within(SNAPSHOT_WAIT).await;
        match frame["type"].as_str() {
            Some("published") if chunks == 0 => acked_first = true,
            Some("published") => {}
            Some("snapshot") => {
                assert_eq!(seq_of(&frame), at, "every chunk shares the seq");
                chunks += 1;
                snapshot.extend(frame["actions"].as_array().expect("actions").clone());
                if frame.get("more").is_none() {
                    break;
                }
                assert_eq!(frame["more"], json!(true), "{}", frame["more"]);
            }
            _ => panic!("unexpected frame during the snapshot: {frame}"),
        }
    }
    assert!(
        acked_first,
        "a publish after the subscribe is acknowledged before the snapshot arrives"
    );
    assert!(chunks > 1, "a big snapshot comes in chunks: {chunks}");
    stop.store(true, Ordering::Relaxed);
    let published = bounded(WAIT, "the publisher to stop", busy)
        .await
        .expect("publisher");
    let marker = Visitor::new().action("webchat");
    let last = subscriber.publish_ok(marker.event("offered")).await;
    let mut live: Vec<u64> = Vec::new();
    let mut seen: std::collections::HashSet<String> = snapshot
        .iter()
        .map(|a| {
            assert!(seq_of(a) <= at, "a snapshot action is as of its seq: {a}");
            a["actionId"].as_str().expect("actionId").to_owned()
        })
        .collect();
    assert_eq!(
        seen.len(),
        snapshot.len(),
        "no action twice in the snapshot"
    );
    while live.last() != Some(&last) {
        let event = subscriber.next_event().await;
        live.push(seq_of(&event));
        let id = event["event"]["actionId"].as_str().expect("actionId");
        assert!(seen.insert(id.to_owned()), "action {id} twice: {event}");
    }
    assert_eq!(
        seen.len(),
        VISITORS * ACTIONS_EACH + published + 2,
        "snapshot and live events hold every action"
    );
    assert_eq!(
        live,
        webchat_history(&http, at, last).await,
        "live after the snapshot is the history after its seq"
    );
}

/// Offers `each` new webchat actions for each of `visitors` new visitors, a batch a
/// visitor, every one accepted.
async fn offer_actions(http: &crate::support::Http, visitors: usize, each: usize) {
    for _ in 0..visitors {
        let visitor = Visitor::new();
        let events: Vec<_> = (0..each)
            .map(|_| visitor.action("webchat").event("offered"))
            .collect();
        for result in http.publish(&Value::Array(events)).await {
            assert_eq!(result["duplicate"], json!(false), "{result}");
        }
    }
}

/// The seqs of the retained `webchat` events after `at` up to `last`, read page by page
/// from `GET /v1/events`.
async fn webchat_history(http: &crate::support::Http, at: u64, last: u64) -> Vec<u64> {
    let mut history: Vec<u64> = Vec::new();
    let mut since = at;
    while history.last() != Some(&last) {
        let query = [
            ("since", since.to_string()),
            ("limit", "1000".to_string()),
            ("topics", "webchat:all".to_string()),
        ];
        let (status, page) = http.get_query("/v1/events", &query).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().expect("events");
        history.extend(events.iter().map(seq_of).filter(|&seq| seq <= last));
        since = page["next"].as_u64().expect("next");
        assert!(
            !events.is_empty() || history.last() == Some(&last),
            "{page}"
        );
    }
    history
}

/// A snapshot subscription on a connection whose outbox holds only 64 frames (issue 11,
/// snapshot catch-up): the snapshot is 20 frames, and while it is built another publisher
/// adds far more than 64 matching events. Everything reaches the reader, paced by its
/// outbox like a `since` replay: no 4008 (the snapshot and all the events committed during
/// its build used to be queued in one go, which overflowed the outbox), and the events
/// after the snapshot are exactly the history after its seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_built_while_many_events_arrive_is_paced_by_a_small_outbox() {
    const VISITORS: usize = 20;
    const ACTIONS_EACH: usize = 1000;
    let hub = crate::support::Hub::start_with(|c| c.queue_capacity = 64).await;
    let http = hub.http();
    offer_actions(&http, VISITORS, ACTIONS_EACH).await;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let busy = {
        let (http, stop, progress) = (hub.http(), stop.clone(), progress.clone());
        tokio::spawn(async move {
            let visitor = Visitor::new();
            // Bounded in count; in practice it stops when the snapshot has arrived.
            while !stop.load(Ordering::Relaxed) && progress.load(Ordering::Relaxed) < 200_000 {
                let batch: Vec<_> = (0..200)
                    .map(|_| visitor.action("webchat").event("offered"))
                    .collect();
                let acked = http.publish(&Value::Array(batch)).await.len();
                progress.fetch_add(acked, Ordering::Relaxed);
            }
            progress.load(Ordering::Relaxed)
        })
    };
    // The build should overlap the publishing: subscribe once it is under way.
    bounded(WAIT, "the publisher to start", async {
        while progress.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut subscriber = Client::open(hub.addr(), &[], Some(4096)).await;
    subscriber.connect().await;
    let subscribed = subscriber
        .subscribe(
            json!("snap"),
            json!({"topics": ["webchat:all"], "snapshot": true}),
        )
        .await;
    let at = seq_of(&subscribed);
    let mut actions = 0;
    loop {
        let frame = subscriber.recv_within(SNAPSHOT_WAIT).await;
        assert_type(&frame, "snapshot");
        actions += frame["actions"].as_array().expect("actions").len();
        if frame.get("more").is_none() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Live now: what the publisher still sends is read as it comes, as a reader keeping up
    // does (a reader that stopped here would rightly be closed as a slow consumer).
    let mut live: Vec<u64> = Vec::new();
    let mut busy = busy;
    let published = bounded(SHUTDOWN_WAIT, "the publisher to stop", async {
        loop {
            tokio::select! {
                done = &mut busy => return done.expect("publisher"),
                frame = subscriber.recv_within(SNAPSHOT_WAIT) => live.push(seq_of(&frame)),
            }
        }
    })
    .await;
    assert!(actions >= VISITORS * ACTIONS_EACH, "{actions} actions");
    let marker = Visitor::new().action("webchat");
    let last = http
        .publish(&json!([marker.event("offered")]))
        .await
        .iter()
        .map(seq_of)
        .next_back()
        .expect("one result");
    while live.last() != Some(&last) {
        live.push(seq_of(&subscriber.recv_within(SNAPSHOT_WAIT).await));
    }
    assert!(
        published > 64,
        "the test publishes past the outbox: {published}"
    );
    assert_eq!(
        live,
        webchat_history(&http, at, last).await,
        "every event after the snapshot's seq, in order, once"
    );
}

/// A sweep that runs after the pipeline closed (the sweeper racing a shutdown) commits
/// nothing: an idle session it would end then could never be logged, and the final
/// snapshot would wait for a seq the log never gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_after_the_pipeline_closed_commits_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::ephemeral(dir.path());
    config.session_idle_timeout = std::time::Duration::from_millis(50);
    let logged = Arc::new(Mutex::new(Vec::new()));
    let (hub, pipeline) = CoreHub::start(Arc::new(config), Box::new(Recording(logged.clone())));
    let page = json!({
        "type": "page", "customerId": uuid(), "sessionId": uuid(),
        "page": {"url": "https://shop.example/p"},
    });
    let acks = hub.publish(vec![Event::from_json(page)]).await;
    assert!(acks[0].is_ok(), "{:?}", acks[0]);
    let before = hub.latest_seq();
    hub.close_pipeline();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tokio::task::spawn_blocking({
        let hub = hub.clone();
        move || hub.sweep()
    })
    .await
    .expect("sweep");
    assert_eq!(
        hub.latest_seq(),
        before,
        "the sweep committed after the close"
    );
    bounded(
        WAIT,
        "the pipeline to end",
        tokio::task::spawn_blocking(move || pipeline.join()),
    )
    .await
    .expect("joined");
    assert_eq!(logged.lock().last().copied(), Some(before.0));
}
