//! A quick run of the load generator against a real hub: every expected delivery arrives,
//! in per-customer order, with no publish refused. Small numbers and a bounded time; it
//! checks correctness under concurrency, never timings. And a few seconds of its soak
//! mode (which starts the hub binary itself), once clean and once with a delivery
//! dropped on purpose, so the soak and its loss check stay working.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::nats::NatsServer;
use crate::support::Hub;

/// The load generator, its output captured; it is killed should the test stop waiting.
fn loadgen() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_actionhub-loadgen"));
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The lines of the generator's JSON report whose `phase` is `phase`, in order.
fn report_lines(stdout: &str, phase: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["phase"] == phase)
        .collect()
}

/// A short ladder of two `rates` (e.g. 300/s, then as fast as acks allow), a second
/// each, with `--check` and `flags`, against the hubs at `addrs`; answers whether the
/// check passed, and the step lines.
async fn short_run(
    addrs: &[std::net::SocketAddr],
    rates: &str,
    flags: &[&str],
) -> (bool, Vec<Value>, String) {
    let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let run = loadgen()
        .args(["--addr", &addrs.join(",")])
        .args(["--subscribers", "40", "--customers", "8", "--firehose", "2"])
        .args(["--publishers", "3", "--rates", rates, "--duration", "1s"])
        .args(flags)
        .arg("--check")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the load generator finishes within a minute")
        .expect("the load generator runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = format!("exit {}:\n{stdout}\n{stderr}", output.status);
    let steps = report_lines(&stdout, "step");
    assert_eq!(steps.len(), 2, "one report per rung of the ladder: {said}");
    (output.status.success(), steps, said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_load_run_loses_nothing_and_keeps_order() {
    let hub = Hub::start().await;
    let (passed, steps, said) = short_run(&[hub.addr()], "300,max", &[]).await;
    assert!(passed, "load generator failed: {said}");
    for step in &steps {
        assert_eq!(step["lostDeliveries"], 0, "{step}");
        assert_eq!(step["orderViolations"], 0, "{step}");
        assert!(step["receivedDeliveries"].as_u64() > Some(0), "{step}");
        assert!(step["ackP99Micros"].as_u64() > Some(0), "{step}");
    }
    hub.shutdown().await;
}

/// A subscriber the hub closes as too slow (4008) comes back with `since`, as a client
/// that must lose nothing does, so its deliveries are replayed, not counted lost. A hub
/// that queues one frame per connection closes subscribers all the time (publishers wait
/// for each acknowledgement, so theirs never queue two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_closed_as_too_slow_resumes_and_loses_nothing() {
    let hub = Hub::start_with(|config| config.queue_capacity = 1).await;
    let (passed, steps, said) = short_run(
        &[hub.addr()],
        "300,600",
        &["--window", "1", "--ping-every", "1"],
    )
    .await;
    assert!(passed, "load generator failed: {said}");
    let resumed: u64 = steps
        .iter()
        .map(|s| {
            s["resumedConnections"]
                .as_u64()
                .expect("resumedConnections")
        })
        .sum();
    assert!(
        resumed > 0,
        "the hub closed no subscriber as too slow: {said}"
    );
    for step in &steps {
        assert_eq!(step["lostDeliveries"], 0, "{step}");
        assert_eq!(step["closedConnections"], 0, "{step}");
        assert_eq!(step["extraDeliveries"], 0, "nothing twice: {step}");
        assert_eq!(step["orderViolations"], 0, "{step}");
    }
    hub.shutdown().await;
}

/// `--addr a,b` deals the connections over both hubs. Two hubs that share nothing
/// prove it: a subscriber on one never hears what a publisher on the other sent, so the
/// check fails on lost deliveries. Two nodes of one cluster deliver everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_addresses_share_the_connections_between_the_nodes() {
    let (a, b) = (Hub::start().await, Hub::start().await);
    let (passed, steps, said) = short_run(&[a.addr(), b.addr()], "300,max", &[]).await;
    assert!(
        !passed,
        "two unrelated hubs cannot deliver everything: {said}"
    );
    assert!(
        steps.iter().all(|s| s["lostDeliveries"].as_u64() > Some(0)),
        "{said}"
    );
    a.shutdown().await;
    b.shutdown().await;

    let nats = NatsServer::start();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        nodes.push(crate::cluster::node_on(vec![nats.url()], name, |_| {}).await);
    }
    let addrs: Vec<_> = nodes.iter().map(Hub::addr).collect();
    let (passed, steps, said) = short_run(&addrs, "300,max", &[]).await;
    assert!(passed, "a cluster delivers on every node: {said}");
    for step in &steps {
        assert_eq!(step["lostDeliveries"], 0, "{step}");
        assert!(step["receivedDeliveries"].as_u64() > Some(0), "{step}");
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// Runs `actionhub-loadgen soak` with `flags` against the real hub binary, within a
/// minute and a half; answers its exit code and its summary line. Should the generator
/// not end in time, it is killed, and so is the hub it started (by the pid it wrote).
async fn soak(flags: &[&str]) -> (Option<i32>, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let run = loadgen()
        .arg("soak")
        .args(["--hub-bin", env!("CARGO_BIN_EXE_actionhub")])
        .arg("--run-dir")
        .arg(&run_dir)
        .args(flags)
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(90), run).await {
        Ok(output) => output.expect("the soak runs"),
        Err(_) => {
            if let Ok(pid) = std::fs::read_to_string(run_dir.join("hub.pid")) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid.trim()])
                    .status();
            }
            panic!("the soak did not end within 90 s");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = report_lines(&stdout, "summary")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}\n{stderr}"));
    (output.status.code(), summary, format!("{stdout}\n{stderr}"))
}

/// A few seconds of the soak: a storm, a SIGKILL and restart, and the resumes after both
/// lose nothing and keep order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_with_a_storm_and_a_restart_loses_nothing() {
    let (code, summary, output) = soak(&[
        "--duration",
        "5s",
        "--subscribers",
        "40",
        "--customers",
        "8",
        "--publishers",
        "2",
        "--rate",
        "200",
        "--storm-every",
        "2s",
        "--kill-every",
        "3s",
    ])
    .await;
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(summary["passed"], true, "{summary}");
    for count in ["lost", "orderViolations", "notRecovered", "unexpected"] {
        assert_eq!(summary[count], 0, "{count}: {summary}");
    }
    assert!(summary["storms"].as_u64() >= Some(1), "{summary}");
    assert_eq!(summary["restarts"], 1, "{summary}");
    // 40 subscribers resume after each storm and after the restart.
    assert!(summary["resumes"].as_u64() >= Some(80), "{summary}");
    assert!(summary["deliveries"].as_u64() > Some(0), "{summary}");
}

/// The soak's loss check can fail: a delivery dropped on the client side is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soak_reports_a_dropped_delivery_as_lost() {
    let (code, summary, output) = soak(&[
        "--duration",
        "2s",
        "--subscribers",
        "10",
        "--customers",
        "5",
        "--publishers",
        "1",
        "--rate",
        "200",
        "--storm-every",
        "1h",
        "--kill-every",
        "1h",
        "--debug-drop-delivery",
        "20",
    ])
    .await;
    assert_eq!(code, Some(1), "{output}");
    assert_eq!(summary["passed"], false, "{summary}");
    assert_eq!(summary["lost"], 1, "{summary}");
    assert_eq!(summary["orderViolations"], 0, "{summary}");
}
