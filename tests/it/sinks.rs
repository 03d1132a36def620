//! Webhook sinks: batches of the selected events, in seq order, at least once, signed as
//! Standard Webhooks says (checked by PyPI's `standardwebhooks`, independently of the
//! hub), through a receiver that fails, stalls and restarts; durable across a hub
//! restart; paused after repeated failures and resumed without loss; a gap record when
//! the cursor left retention; and the admin API's scope and input checks.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use actionhub::edge::sinks::spec::{Secret, SinkConfig};
use actionhub::Config;
use serde_json::{json, Value};

use crate::support::*;

/// Longest wait for a sink to deliver what was published (retries included).
pub(crate) const DELIVERY_WAIT: Duration = Duration::from_secs(90);

/// Retries quick enough for a test: 300 ms per request, at most 200 ms between tries.
pub(crate) fn quick_retries(config: &mut Config) {
    config.sink_timeout = Duration::from_millis(300);
    config.sink_backoff_max = Duration::from_millis(200);
    config.sink_max_failures = 1000;
}

/// Publishes `count` webchat offers, every other one on `map` (the rest on other maps),
/// plus page views, and answers the seqs of the events on `map`.
pub(crate) async fn publish_mix(http: &Http, map: &str, count: usize) -> Vec<u64> {
    let visitor = Visitor::new();
    let mut matching = Vec::new();
    let mut batch = Vec::new();
    let mut on_map = Vec::new();
    for i in 0..count {
        let mine = i % 2 == 0;
        let action = match mine {
            true => visitor.action("webchat").on_map(map, 1),
            false => visitor.action("webchat"),
        };
        batch.push(match i % 5 {
            4 => visitor.page(),
            _ => action.event("offered"),
        });
        on_map.push(mine && i % 5 != 4);
        if batch.len() == 500 || i + 1 == count {
            let results = http
                .publish(&Value::Array(std::mem::take(&mut batch)))
                .await;
            for (result, mine) in results.iter().zip(on_map.drain(..)) {
                let seq = result["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("accepted: {result}"));
                if mine {
                    matching.push(seq);
                }
            }
        }
    }
    matching
}

/// Waits until the receiver has accepted an event of every seq in `want`.
pub(crate) async fn until_delivered(receiver: &Receiver, want: &[u64]) {
    let want: BTreeSet<u64> = want.iter().copied().collect();
    bounded(DELIVERY_WAIT, "the sink to deliver every event", async {
        loop {
            let got: BTreeSet<u64> = receiver
                .accepted_items()
                .iter()
                .filter_map(|i| i["seq"].as_u64())
                .collect();
            if want.is_subset(&got) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Every request's signature, checked by the Standard Webhooks reference library.
async fn verify_signatures(receiver: &Receiver, secret: &str) {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test, which installs PyPI's standardwebhooks into \
         target/py (the independent signature check of these tests)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("requests.json");
    std::fs::write(&file, receiver.as_json(secret).to_string()).unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/verify_webhooks.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the venv's python");
    let pid = child.id();
    let out = match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
        Ok(status) => status.expect("python runs"),
        Err(_) => {
            let _ = child.start_kill();
            panic!("verify_webhooks.py (pid {pid:?}) did not finish within 60 s");
        }
    };
    let mut text = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use tokio::io::AsyncReadExt as _;
        let _ = stdout.read_to_string(&mut text).await;
    }
    if let Some(mut stderr) = child.stderr.take() {
        use tokio::io::AsyncReadExt as _;
        let _ = stderr.read_to_string(&mut text).await;
    }
    assert!(
        out.success() && text.contains("verified"),
        "standardwebhooks refused a request ({out}): {text}\n(if it cannot import \
         standardwebhooks, run scripts/test)"
    );
}

/// Every batch resent under a `webhook-id` is the same bytes, and the batches, once per
/// id, carry the events in strictly rising seq order.
pub(crate) fn assert_whole_batches_in_order(receiver: &Receiver) -> Vec<u64> {
    let mut bodies: HashMap<String, String> = HashMap::new();
    let mut seqs = Vec::new();
    for request in receiver.received() {
        match bodies.get(&request.id) {
            Some(body) => assert_eq!(body, &request.body, "a retry changed batch {}", request.id),
            None => {
                bodies.insert(request.id.clone(), request.body.clone());
                seqs.extend(request.items().iter().filter_map(|i| i["seq"].as_u64()));
            }
        }
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs out of order or repeated under a new webhook-id: {seqs:?}"
    );
    seqs
}

pub(crate) async fn create_sink(http: &Http, body: Value) -> Value {
    let (status, sink) = http.post("/v1/sinks", &body).await;
    assert_eq!(status, 201, "POST /v1/sinks: {sink}");
    assert!(
        sink["secret"]
            .as_str()
            .unwrap_or_default()
            .starts_with("whsec_"),
        "{sink}"
    );
    sink
}

#[tokio::test]
async fn a_flaky_restarting_receiver_gets_every_selected_event_in_order_signed() {
    let hub = Hub::start_with(quick_retries).await;
    let http = hub.http();
    let mut receiver = Receiver::start(
        Mode::Flaky {
            fail_pct: 30,
            stall_pct: 5,
            stall: Duration::from_millis(600),
        },
        16,
    )
    .await;
    let map = uuid();
    let sink = create_sink(
        &http,
        json!({
            "name": "flaky",
            "url": receiver.url(),
            "topics": ["webchat:all"],
            "where": {"actionMapId": [map]},
            "batchSize": 50,
            "lingerMs": 20,
        }),
    )
    .await;
    let mut want = publish_mix(&http, &map, 1000).await;
    // Down mid-stream: the sink keeps its batch and retries until the receiver is back.
    bounded(WAIT, "the first deliveries", async {
        while receiver.accepted_items().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    receiver.stop();
    want.extend(publish_mix(&http, &map, 1000).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.restart().await;
    until_delivered(&receiver, &want).await;

    let delivered = assert_whole_batches_in_order(&receiver);
    let delivered: BTreeSet<u64> = delivered.into_iter().collect();
    let want: BTreeSet<u64> = want.into_iter().collect();
    assert_eq!(
        delivered, want,
        "exactly the selected events, none outside the filter"
    );
    for item in receiver.accepted_items() {
        assert_eq!(item["type"], json!("event"), "{item}");
        assert_eq!(item["event"]["actionMapId"], json!(map), "{item}");
    }
    let failed = receiver.received().iter().filter(|r| !r.accepted).count();
    assert!(
        failed > 0,
        "the receiver failed no request: the test proves nothing"
    );
    verify_signatures(&receiver, sink["secret"].as_str().unwrap()).await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_hub_restart_resumes_a_file_sink_after_its_last_acknowledged_batch() {
    let receiver = Receiver::start(Mode::Accept, 1).await;
    let map = CONFIG_MAP.to_owned();
    let secret = Secret::generate();
    let url = receiver.url();
    let sink_secret = secret.clone();
    let hub = Hub::start_with(move |config| {
        quick_retries(config);
        config.sinks.push(SinkConfig {
            name: "restart".into(),
            url,
            topics: vec!["webchat:all".into()],
            filter: Some(json!({"actionMapId": [CONFIG_MAP]})),
            batch_size: Some(7),
            linger_ms: Some(10),
            secret: sink_secret,
        });
    })
    .await;
    let http = hub.http();
    let mut want = publish_mix(&http, &map, 60).await;
    until_delivered(&receiver, &want).await;
    // The cursor is kept once the batch is acknowledged; wait for it, then restart.
    let latest = *want.last().unwrap();
    bounded(WAIT, "the cursor to be kept", async {
        loop {
            let (_, sink) = http.get("/v1/sinks/restart").await;
            if sink["cursor"].as_u64().unwrap_or(0) >= latest {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let hub = hub.restart().await;
    want.extend(publish_mix(&hub.http(), &map, 60).await);
    until_delivered(&receiver, &want).await;
    let delivered = assert_whole_batches_in_order(&receiver);
    assert_eq!(
        delivered, want,
        "no gap and no duplicate across the restart"
    );
    verify_signatures(&receiver, &secret.text()).await;
    hub.shutdown().await;
}

/// The action map of the config-file sink.
const CONFIG_MAP: &str = "9f1c2a4e-3b7d-4c1e-8a2b-0123456789ab";

#[tokio::test]
async fn a_sink_pauses_after_its_failures_and_resumes_without_loss() {
    let hub = Hub::start_with(|config| {
        quick_retries(config);
        config.sink_max_failures = 3;
    })
    .await;
    let http = hub.http();
    let receiver = Receiver::start(Mode::Refuse, 2).await;
    let map = uuid();
    let sink = create_sink(
        &http,
        json!({"name": "pausing", "url": receiver.url(), "topics": ["all"],
               "where": {"actionMapId": [map]}, "lingerMs": 0}),
    )
    .await;
    let id = sink["id"].as_str().unwrap().to_owned();
    let want = publish_mix(&http, &map, 40).await;
    let paused = bounded(DELIVERY_WAIT, "the sink to pause", async {
        loop {
            let (_, list) = http.get("/v1/sinks").await;
            let sink = list["sinks"][0].clone();
            if sink["state"] == json!("paused") {
                return sink;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(paused["consecutiveFailures"], json!(3), "{paused}");
    assert_eq!(paused["lastStatus"], json!(503), "{paused}");
    assert!(
        paused["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("503"),
        "{paused}"
    );
    let (_, _, metrics) = http.get_text("/metrics").await;
    assert!(
        metrics.contains("actionhub_sink_paused{sink=\"pausing\"} 1"),
        "{metrics}"
    );
    let attempts = receiver.received().len();
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        receiver.received().len(),
        attempts,
        "a paused sink still posts"
    );

    receiver.set_mode(Mode::Accept);
    let (status, resumed) = http
        .post(&format!("/v1/sinks/{id}/resume"), &json!({}))
        .await;
    assert_eq!(status, 200, "{resumed}");
    until_delivered(&receiver, &want).await;
    let delivered = assert_whole_batches_in_order(&receiver);
    assert_eq!(
        delivered, want,
        "resume continues from the cursor, nothing lost"
    );
    let (_, sink) = http.get(&format!("/v1/sinks/{id}")).await;
    assert_eq!(sink["state"], json!("active"), "{sink}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_cursor_out_of_retention_gets_a_gap_record_then_the_rest() {
    let hub = Hub::start_with(|config| {
        quick_retries(config);
        config.retention_events = 10;
    })
    .await;
    let http = hub.http();
    let receiver = Receiver::start(Mode::Accept, 3).await;
    let all = publish_mix(&http, &uuid(), 40).await;
    let (_, page) = http.get("/v1/events?limit=1").await;
    let epoch = page["epoch"].as_str().unwrap().to_owned();
    let first_retained = page["events"][0]["seq"].as_u64().unwrap();
    assert!(first_retained > 1, "retention dropped nothing: {page}");
    create_sink(
        &http,
        json!({"url": receiver.url(), "topics": ["all"], "since": 0, "epoch": epoch,
               "lingerMs": 0}),
    )
    .await;
    let (_, ready) = http.get("/readyz").await;
    let latest = ready["seq"].as_u64().unwrap();
    let want: Vec<u64> = (first_retained..=latest).collect();
    until_delivered(&receiver, &want).await;
    let items = receiver.accepted_items();
    assert_eq!(
        items[0],
        json!({"type": "gap", "from": 1, "to": first_retained - 1, "epoch": epoch}),
        "the gap comes first, as an item of its own"
    );
    let seqs: Vec<u64> = items[1..]
        .iter()
        .map(|i| i["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, want, "then every retained event, in order");
    assert!(all.iter().all(|s| *s < first_retained || seqs.contains(s)));
    hub.shutdown().await;
}

#[tokio::test]
async fn the_sink_api_needs_admin_and_names_the_field_it_refuses() {
    let receiver = Receiver::start(Mode::Accept, 4).await;
    let url = receiver.url();
    let hub = Hub::start_with(|config| {
        config.api_keys = "sub-key=subscribe+publish,admin-key=admin".parse().unwrap();
        config.sinks.push(SinkConfig {
            name: "from-file".into(),
            url: url.clone(),
            topics: vec!["all".into()],
            filter: None,
            batch_size: None,
            linger_ms: None,
            secret: Secret::generate(),
        });
    })
    .await;
    let subscriber = hub.http_with(&[("x-api-key", "sub-key")]);
    let admin = hub.http_with(&[("x-api-key", "admin-key")]);
    let ok = json!({"url": receiver.url(), "topics": ["webchat:all"]});
    assert_http_error(&subscriber.post("/v1/sinks", &ok).await, 403, "forbidden");
    assert_http_error(&subscriber.get("/v1/sinks").await, 403, "forbidden");
    assert_http_error(&hub.http().get("/v1/sinks").await, 401, "unauthorized");

    let bad = [
        (ok.clone().with("url", json!("ftp://x.example/")), "`url`"),
        (ok.clone().with("batchSize", json!(0)), "`batchSize`"),
        (ok.clone().with("batchSize", json!(1001)), "`batchSize`"),
        (
            ok.clone().with("topics", json!(["webchat:nope"])),
            "`topics`",
        ),
        (
            ok.clone().with("where", json!({"colour": ["red"]})),
            "colour",
        ),
        (ok.clone().with("retries", json!(3)), "retries"),
        (ok.clone().with("since", json!(1)), "`epoch`"),
        (ok.clone().with("name", json!("from-file")), "`name`"),
    ];
    for (body, field) in bad {
        let answer = admin.post("/v1/sinks", &body).await;
        assert_http_error(&answer, 400, "bad_request");
        let message = answer.1["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{body}: {message}");
    }

    let created = create_sink(&admin, ok).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, list) = admin.get("/v1/sinks").await;
    assert_eq!(status, 200, "{list}");
    let sinks = list["sinks"].as_array().unwrap();
    assert_eq!(sinks.len(), 2, "{list}");
    for sink in sinks {
        assert!(
            sink.get("secret").is_none(),
            "the secret is shown once: {sink}"
        );
        for field in [
            "id",
            "name",
            "url",
            "topics",
            "where",
            "cursor",
            "lag",
            "state",
            "lastStatus",
            "consecutiveFailures",
            "lastError",
        ] {
            assert!(sink.get(field).is_some(), "{field} missing: {sink}");
        }
    }
    assert_http_error(
        &admin.delete("/v1/sinks/from-file").await,
        400,
        "bad_request",
    );
    let (status, deleted) = admin.delete(&format!("/v1/sinks/{id}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_http_error(
        &admin.get(&format!("/v1/sinks/{id}")).await,
        404,
        "not_found",
    );
    assert!(!hub.data_dir().join(format!("sinks/{id}.json")).exists());
    hub.shutdown().await;
}

#[tokio::test]
async fn an_api_sink_survives_a_restart_with_its_secret_in_a_private_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let hub = Hub::start_with(quick_retries).await;
    let receiver = Receiver::start(Mode::Accept, 5).await;
    let map = uuid();
    let sink = create_sink(
        &hub.http(),
        json!({"url": receiver.url(), "topics": ["webchat:all"],
               "where": {"actionMapId": [map]}, "lingerMs": 0}),
    )
    .await;
    let id = sink["id"].as_str().unwrap();
    let file = hub.data_dir().join(format!("sinks/{id}.json"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let hub = hub.restart().await;
    let want = publish_mix(&hub.http(), &map, 20).await;
    until_delivered(&receiver, &want).await;
    verify_signatures(&receiver, sink["secret"].as_str().unwrap()).await;
    hub.shutdown().await;
}
