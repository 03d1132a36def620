//! A quick run of the load generator against a real hub: every expected delivery arrives,
//! in per-customer order, with no publish refused. Small numbers and a bounded time; it
//! checks correctness under concurrency, never timings.

use std::process::Stdio;
use std::time::Duration;

use crate::support::Hub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_load_run_loses_nothing_and_keeps_order() {
    let hub = Hub::start().await;
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_actionhub-loadgen"))
        .args(["--addr", &hub.addr().to_string()])
        .args(["--subscribers", "40", "--customers", "8", "--firehose", "2"])
        .args([
            "--publishers",
            "3",
            "--rates",
            "300,max",
            "--duration",
            "1s",
        ])
        .arg("--check")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the load generator finishes within a minute")
        .expect("the load generator runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "load generator failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let steps: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line["phase"] == "step")
        .collect();
    assert_eq!(
        steps.len(),
        2,
        "one report per rung of the ladder:\n{stdout}"
    );
    for step in &steps {
        assert_eq!(step["lostDeliveries"], 0, "{step}");
        assert_eq!(step["orderViolations"], 0, "{step}");
        assert!(step["receivedDeliveries"].as_u64() > Some(0), "{step}");
    }
    hub.shutdown().await;
}
