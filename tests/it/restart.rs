//! Durability across real restarts (issue 3): each test runs the `actionhub` binary as a
//! child process on a data directory, stops it (SIGTERM) or kills it (SIGKILL), damages
//! the directory where the test is about damage, starts it again and checks what survived
//! over HTTP. Every wait is bounded; children are killed when a test ends, however it ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{launch, seq_of, uuid, wait_bounded, wal_segments, HubProcess};

/// A customer with a session and a fresh action map, making events.
struct Visitor {
    customer: String,
    session: String,
    map: String,
}

impl Visitor {
    fn new() -> Visitor {
        Visitor {
            customer: uuid(),
            session: uuid(),
            map: uuid(),
        }
    }

    fn action(&self, action: &str, state: &str) -> Value {
        json!({
            "actionId": action, "actionState": state, "actionMediaType": "webchat",
            "actionMapId": self.map, "actionMapVersion": 1,
            "customerId": self.customer, "sessionId": self.session,
        })
    }
}

struct Http {
    client: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        Http {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// Publishes a batch; returns the seqs (refusals fail the test).
    async fn publish(&self, hub: &HubProcess, events: Vec<Value>) -> Vec<u64> {
        let reply: Value = self
            .client
            .post(hub.url("/v1/events"))
            .json(&events)
            .send()
            .await
            .expect("publishing")
            .json()
            .await
            .expect("a JSON reply");
        reply["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{reply}"))
            .iter()
            .map(|r| r["seq"].as_u64().unwrap_or_else(|| panic!("refused: {r}")))
            .collect()
    }

    async fn get(&self, hub: &HubProcess, path: &str) -> (u16, Value) {
        let response = self.client.get(hub.url(path)).send().await.expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Every retained event after `since`, paging through `GET /v1/events`.
    async fn events_since(&self, hub: &HubProcess, mut since: u64) -> (Vec<Value>, String) {
        let mut events = Vec::new();
        loop {
            let (status, page) = self
                .get(hub, &format!("/v1/events?since={since}&limit=1000"))
                .await;
            assert_eq!(status, 200, "{page}");
            let batch = page["events"].as_array().unwrap().clone();
            let next = page["next"].as_u64().unwrap();
            let done = batch.is_empty() || next == since;
            events.extend(batch);
            if done {
                return (events, page["epoch"].as_str().unwrap().to_string());
            }
            since = next;
        }
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(seq_of).collect()
}

/// The states of every action a test made, as the hub reports them.
async fn action_views(http: &Http, hub: &HubProcess, actions: &[String]) -> Vec<Value> {
    let mut views = Vec::new();
    for id in actions {
        let (status, view) = http.get(hub, &format!("/v1/actions/{id}")).await;
        assert_eq!(status, 200, "action {id}: {view}");
        views.push(view);
    }
    views
}

fn newest_segment(dir: &Path) -> PathBuf {
    wal_segments(dir).pop().expect("a log segment")
}

#[tokio::test]
async fn a_restart_keeps_every_action_and_continues_the_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let hub = HubProcess::start(dir.path(), &[]);
    let mut actions = Vec::new();
    let mut customers = Vec::new();
    for i in 0..40 {
        let v = Visitor::new();
        let action = uuid();
        let path: &[&str] = match i % 4 {
            0 => &["offered"],
            1 => &["offered", "accepted"],
            2 => &["qualified", "offered", "accepted", "started", "engaged"],
            _ => &["offered", "rejected"],
        };
        let mut batch: Vec<Value> = path.iter().map(|s| v.action(&action, s)).collect();
        if i % 5 == 0 {
            batch.push(json!({"type": "signin", "customerId": v.customer,
                "sessionId": v.session, "userId": format!("user-{}", i % 10),
                "traits": {"plan": "gold"}}));
        }
        http.publish(&hub, batch).await;
        actions.push(action);
        customers.push(v.customer);
    }
    let before = action_views(&http, &hub, &actions).await;
    let (_, customers_before) = http
        .get(&hub, &format!("/v1/customers/{}", customers[0]))
        .await;
    let (_, stats_before) = http.get(&hub, "/v1/stats/action-maps").await;
    let (_, ready) = http.get(&hub, "/readyz").await;
    let output = hub.stop();
    assert!(
        output.iter().any(|l| l.contains("snapshot written")),
        "a final snapshot"
    );

    let hub = HubProcess::start(dir.path(), &[]);
    assert!(
        hub.output().contains("\"replayed\":0"),
        "a clean stop leaves nothing to replay:\n{}",
        hub.output()
    );
    let (_, ready_after) = http.get(&hub, "/readyz").await;
    assert_eq!(ready_after["epoch"], ready["epoch"], "the same history");
    assert_eq!(ready_after["seq"], ready["seq"]);
    assert_eq!(action_views(&http, &hub, &actions).await, before);
    let (_, customers_after) = http
        .get(&hub, &format!("/v1/customers/{}", customers[0]))
        .await;
    assert_eq!(customers_after, customers_before);
    let (_, stats_after) = http.get(&hub, "/v1/stats/action-maps").await;
    assert_eq!(stats_after, stats_before);
    let v = Visitor::new();
    let next = http.publish(&hub, vec![v.action(&uuid(), "offered")]).await;
    // A new session starts first (one seq), then the event.
    assert_eq!(next, [ready["seq"].as_u64().unwrap() + 2], "seqs continue");
    hub.stop();
}

#[tokio::test]
async fn sigkill_under_fsync_always_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let http = Arc::new(Http::new());
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut epoch: Option<String> = None;
    for round in 0..12u64 {
        let hub = Arc::new(HubProcess::start(dir.path(), &["--fsync", "always"]));
        let (_, ready) = http.get(&hub, "/readyz").await;
        match &epoch {
            None => epoch = Some(ready["epoch"].as_str().unwrap().to_string()),
            Some(e) => assert_eq!(ready["epoch"], json!(e), "round {round}: same history"),
        }
        // Four publishers, each posting small batches until the hub dies.
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (hub, http) = (hub.clone(), http.clone());
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let v = Visitor::new();
                    let ids: Vec<String> = (0..5).map(|_| uuid()).collect();
                    let batch = ids
                        .iter()
                        .map(|a| v.action(a, "offered"))
                        .collect::<Vec<_>>();
                    let Ok(response) = http
                        .client
                        .post(hub.url("/v1/events"))
                        .json(&batch)
                        .send()
                        .await
                    else {
                        return mine;
                    };
                    let Ok(reply) = response.json::<Value>().await else {
                        return mine;
                    };
                    for (result, id) in reply["results"].as_array().unwrap().iter().zip(ids) {
                        mine.push((result["seq"].as_u64().unwrap(), id));
                    }
                }
            }));
        }
        // A different kill point each round, 20 to 240 ms into the stream.
        tokio::time::sleep(Duration::from_millis(20 + (round * 37) % 220)).await;
        let _ = Command::new("kill")
            .args(["-KILL", &hub.pid().to_string()])
            .status();
        for task in tasks {
            acked.extend(task.await.unwrap());
        }
        drop(hub);
    }
    assert!(
        acked.len() > 100,
        "the publishers got through: {}",
        acked.len()
    );
    let hub = HubProcess::start(dir.path(), &["--fsync", "always"]);
    let (events, _) = http.events_since(&hub, 0).await;
    let logged: std::collections::HashMap<u64, String> = events
        .iter()
        .filter(|e| e["event"]["actionId"].is_string())
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["event"]["actionId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let lost: Vec<&(u64, String)> = acked
        .iter()
        .filter(|(seq, id)| logged.get(seq) != Some(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let all = seqs(&events);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "seqs increase");
    hub.stop();
}

#[tokio::test]
async fn a_truncated_or_bit_flipped_log_tail_still_starts() {
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let hub = HubProcess::start(dir.path(), &["--fsync", "always"]);
    let v = Visitor::new();
    let mut published = Vec::new();
    for _ in 0..10 {
        published.extend(http.publish(&hub, vec![v.action(&uuid(), "offered")]).await);
    }
    let (epoch, last) = {
        let (_, ready) = http.get(&hub, "/readyz").await;
        (ready["epoch"].clone(), ready["seq"].as_u64().unwrap())
    };
    hub.kill();

    // Tear the last record: cut three bytes off.
    let segment = newest_segment(dir.path());
    let len = fs::metadata(&segment).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let hub = HubProcess::start(dir.path(), &["--fsync", "always"]);
    assert!(
        hub.output().contains("cutting a torn tail"),
        "{}",
        hub.output()
    );
    let (events, epoch_after) = http.events_since(&hub, 0).await;
    assert_eq!(json!(epoch_after), epoch);
    assert_eq!(
        seqs(&events),
        (1..last).collect::<Vec<_>>(),
        "all but the torn one"
    );
    let more = http.publish(&hub, vec![v.action(&uuid(), "offered")]).await;
    assert!(
        more[0] > last,
        "the torn seq is never reused: {} after {last}",
        more[0]
    );
    hub.kill();

    // Flip one bit inside the last record's payload.
    let segment = newest_segment(dir.path());
    let mut bytes = fs::read(&segment).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    fs::write(&segment, bytes).unwrap();
    let hub = HubProcess::start(dir.path(), &["--fsync", "always"]);
    assert!(hub.output().contains("checksum"), "{}", hub.output());
    let (events, _) = http.events_since(&hub, 0).await;
    assert_eq!(seqs(&events), (1..last).collect::<Vec<_>>());
    hub.stop();
}

/// Damages the newer of the two kept snapshots, starts the hub, and checks that it fell
/// back to the older one.
fn start_past_a_corrupt_newest_snapshot(dir: &Path) -> HubProcess {
    let mut snapshots: Vec<PathBuf> = fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    snapshots.sort();
    assert_eq!(snapshots.len(), 2, "the newest two are kept");
    let newest = snapshots.pop().unwrap();
    let mut bytes = fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&newest, bytes).unwrap();
    let hub = HubProcess::start(dir, &[]);
    assert!(
        hub.output().contains("skipping a snapshot"),
        "{}",
        hub.output()
    );
    hub
}

#[tokio::test]
async fn a_corrupt_newest_snapshot_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let v = Visitor::new();
    let (first, second) = (uuid(), uuid());
    let hub = HubProcess::start(dir.path(), &[]);
    http.publish(
        &hub,
        vec![v.action(&first, "offered"), v.action(&second, "offered")],
    )
    .await;
    hub.stop();
    let hub = HubProcess::start(dir.path(), &[]);
    http.publish(
        &hub,
        vec![v.action(&first, "accepted"), v.action(&first, "started")],
    )
    .await;
    let before = action_views(&http, &hub, &[first.clone(), second.clone()]).await;
    hub.stop();

    let hub = start_past_a_corrupt_newest_snapshot(dir.path());
    assert_eq!(action_views(&http, &hub, &[first, second]).await, before);
    hub.stop();
}

#[tokio::test]
async fn since_replay_across_a_restart_has_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let v = Visitor::new();
    let hub = HubProcess::start(dir.path(), &[]);
    for _ in 0..30 {
        http.publish(&hub, vec![v.action(&uuid(), "offered")]).await;
    }
    let (_, epoch) = http.events_since(&hub, 0).await;
    hub.stop();
    let hub = HubProcess::start(dir.path(), &[]);
    for _ in 0..30 {
        http.publish(&hub, vec![v.action(&uuid(), "offered")]).await;
    }
    let (events, epoch_after) = http.events_since(&hub, 10).await;
    assert_eq!(epoch_after, epoch);
    let last = *seqs(&events).last().unwrap();
    assert_eq!(
        seqs(&events),
        (11..=last).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
    assert_eq!(last, 61, "1 session start + 30 + 30 events");

    // The same over a WebSocket `since` subscription.
    let url = hub.url("/v1/ws").replacen("http", "ws", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut send = async |frame: Value| {
        ws.send(Message::text(frame.to_string())).await.unwrap();
    };
    send(json!({"op": "connect", "id": 1})).await;
    send(
        json!({"op": "subscribe", "id": 2, "sub": "s", "topics": ["webchat:all"],
        "since": 40, "epoch": epoch}),
    )
    .await;
    let mut replayed = Vec::new();
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while replayed.len() < 21 && Instant::now() < deadline {
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await
        else {
            break;
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        frames.push(frame.clone());
        if frame["type"] == "subscribed" {
            assert_eq!(frame["recovered"], json!(true), "{frame}");
        }
        if frame["type"] == "event" {
            replayed.push(frame["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(replayed, (41..=61).collect::<Vec<_>>(), "{frames:?}");
    drop(ws);
    hub.stop();
}

#[tokio::test]
async fn a_data_dir_of_a_future_format_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let hub = HubProcess::start(dir.path(), &[]);
    let v = Visitor::new();
    http.publish(&hub, vec![v.action(&uuid(), "offered")]).await;
    hub.stop();
    let marker = dir.path().join("actionhub-data");
    let text = fs::read_to_string(&marker).unwrap();
    fs::write(
        &marker,
        text.replace("actionhub-data 1", "actionhub-data 7"),
    )
    .unwrap();
    let before = tree(dir.path());

    let (mut child, output, addr) = launch(dir.path(), &[]);
    let status = wait_bounded(&mut child);
    assert!(addr.try_recv().is_err(), "it must not listen");
    assert!(
        status.is_some_and(|s| !s.success()),
        "it must exit with an error"
    );
    // The output threads may still be draining the last lines.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !output
        .lock()
        .unwrap()
        .join("\n")
        .contains("newer actionhub")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = output.lock().unwrap().join("\n");
    assert!(output.contains("newer actionhub"), "{output}");
    assert_eq!(tree(dir.path()), before, "nothing was changed");
}

/// Every file under `dir` with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn history_that_cannot_be_rebuilt_starts_a_new_epoch_after_the_old_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let small_segments = ["--wal-segment-bytes", "4096"];
    let hub = HubProcess::start(dir.path(), &small_segments);
    let v = Visitor::new();
    for _ in 0..40 {
        http.publish(&hub, vec![v.action(&uuid(), "offered")]).await;
    }
    let (_, ready) = http.get(&hub, "/readyz").await;
    hub.stop();
    // Lose the snapshots and the oldest log segment: the state cannot be rebuilt.
    fs::remove_dir_all(dir.path().join("snapshots")).unwrap();
    let segments = wal_segments(dir.path());
    assert!(segments.len() > 2, "small segments roll over");
    fs::remove_file(&segments[0]).unwrap();

    let hub = HubProcess::start(dir.path(), &small_segments);
    assert!(
        hub.output().contains("starting a new epoch"),
        "{}",
        hub.output()
    );
    let (_, after) = http.get(&hub, "/readyz").await;
    assert_ne!(after["epoch"], ready["epoch"], "history was lost");
    let next = http.publish(&hub, vec![v.action(&uuid(), "offered")]).await;
    assert!(
        next[0] > ready["seq"].as_u64().unwrap(),
        "seqs still never go back"
    );
    hub.stop();
}

/// An identify with traits, for the visitor changes below.
fn identify(v: &Visitor, user: &str) -> Value {
    json!({
        "type": "identify", "customerId": v.customer, "sessionId": v.session,
        "userId": user, "traits": {"email": format!("{user}@x.example")},
    })
}

/// Everything a hub says about one visitor through its reads, as text.
async fn traces_of(
    http: &Http,
    hub: &HubProcess,
    v: &Visitor,
    action: &str,
    user: &str,
) -> Vec<String> {
    let mut found = Vec::new();
    for path in [
        format!("/v1/visitors/user:{user}"),
        format!("/v1/visitors/{}", v.customer),
        format!("/v1/customers/{}", v.customer),
        format!("/v1/actions/{action}"),
    ] {
        let (status, body) = http.get(hub, &path).await;
        if status != 404 {
            found.push(format!("{path}: {status} {body}"));
        }
    }
    let (history, _) = http.events_since(hub, 0).await;
    let text = Value::Array(history).to_string();
    if text.contains(&v.customer) || text.contains(user) {
        found.push(format!("history: {text}"));
    }
    found
}

#[tokio::test]
async fn an_erased_visitor_stays_erased_after_a_crash_and_from_an_older_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let (gone, bystander) = (Visitor::new(), Visitor::new());
    let action = uuid();
    let hub = HubProcess::start(dir.path(), &[]);
    http.publish(
        &hub,
        vec![
            identify(&gone, "u-gone"),
            gone.action(&action, "offered"),
            bystander.action(&uuid(), "offered"),
        ],
    )
    .await;
    // A clean stop: the snapshot it writes still holds the visitor.
    hub.stop();

    let hub = HubProcess::start(dir.path(), &[]);
    let deleted = http
        .client
        .delete(hub.url("/v1/visitors/user:u-gone"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status().as_u16(), 200);
    http.publish(&hub, vec![bystander.action(&uuid(), "offered")])
        .await;
    assert_eq!(
        traces_of(&http, &hub, &gone, &action, "u-gone").await,
        Vec::<String>::new()
    );
    // No final snapshot: the restart starts from the one that still holds the visitor and
    // must replay the erasure from the log.
    hub.kill();

    let hub = HubProcess::start(dir.path(), &[]);
    assert_eq!(
        traces_of(&http, &hub, &gone, &action, "u-gone").await,
        Vec::<String>::new(),
        "after a crash"
    );
    let (history, _) = http.events_since(&hub, 0).await;
    assert!(
        Value::Array(history)
            .to_string()
            .contains(&bystander.customer),
        "other visitors stay"
    );
    hub.stop();

    // Damage the newest snapshot (written without the visitor): the older one, which
    // holds it, plus the log must still come back without it.
    let hub = start_past_a_corrupt_newest_snapshot(dir.path());
    assert_eq!(
        traces_of(&http, &hub, &gone, &action, "u-gone").await,
        Vec::<String>::new(),
        "from an older snapshot"
    );
    hub.stop();
}

#[tokio::test]
async fn visitor_changes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let (kept, anonymous, source) = (Visitor::new(), Visitor::new(), Visitor::new());
    let hub = HubProcess::start(dir.path(), &[]);
    http.publish(
        &hub,
        vec![
            identify(&kept, "u-kept"),
            identify(&anonymous, "u-anon"),
            source.action(&uuid(), "offered"),
        ],
    )
    .await;
    let put = http
        .client
        .put(hub.url("/v1/visitors/user:u-kept"))
        .json(&json!({"attributes": {"plan": "premium"}}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 200);
    let anonymized = http
        .client
        .post(hub.url("/v1/visitors/user:u-anon/anonymize"))
        .send()
        .await
        .expect("anonymize");
    assert_eq!(anonymized.status().as_u16(), 200);
    let merged = http
        .client
        .post(hub.url("/v1/visitors/merge"))
        .json(&json!({"sourceVisitorId": source.customer, "targetVisitorId": kept.customer}))
        .send()
        .await
        .expect("merge");
    assert_eq!(merged.status().as_u16(), 200);
    let (_, before) = http.get(&hub, "/v1/visitors/user:u-kept").await;
    // A crash: the changes come back from the log alone.
    hub.kill();
    let hub = HubProcess::start(dir.path(), &[]);
    let (status, after) = http.get(&hub, "/v1/visitors/user:u-kept").await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["email"], json!("u-kept@x.example"));
    assert_eq!(after["attributes"], json!({"plan": "premium"}));
    assert_eq!(
        after["customers"], before["customers"],
        "the merge survived"
    );
    assert_eq!(after["counts"], before["counts"]);
    let (status, _) = http.get(&hub, "/v1/visitors/user:u-anon").await;
    assert_eq!(status, 404, "the anonymized user id stays gone");
    let (_, anon) = http
        .get(&hub, &format!("/v1/visitors/{}", anonymous.customer))
        .await;
    assert_eq!(anon["attributes"], json!({}));
    assert_eq!(anon["identity"]["state"], json!("anonymous"));
    hub.stop();
}
