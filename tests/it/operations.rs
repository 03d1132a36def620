//! What an operator runs the hub with (issue 17, part 2): the open-files limit it raises
//! for itself, the systemd unit in `contrib/`, its logs and its metrics, each checked on
//! the real binary as a child process.

use crate::support::HubProcess;

/// The soft and hard "Max open files" of a running process, from `/proc/<pid>/limits`.
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("reading limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-files line in:\n{limits}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Under a soft limit of 256 and a hard one of 4096 (util-linux's `prlimit` sets them and
/// execs the hub, which keeps its process id).
const PRLIMIT: &[&str] = &["prlimit", "--nofile=256:4096"];

#[test]
fn the_hub_raises_its_open_files_limit_to_the_hard_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = HubProcess::start_under(PRLIMIT, dir.path(), &["--max-connections", "1000"]);
    assert_eq!(open_files_limits(hub.pid()), (4096, 4096));
    let output = hub.stop();
    assert!(
        !output
            .iter()
            .any(|l| l.contains("cannot fit max_connections")),
        "1000 connections fit 4096 files:\n{}",
        output.join("\n")
    );
}

#[test]
fn the_hub_warns_when_max_connections_exceed_the_hard_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = HubProcess::start_under(PRLIMIT, dir.path(), &["--max-connections", "5000"]);
    let output = hub.stop();
    let warning = output
        .iter()
        .find(|l| l.contains("cannot fit max_connections"))
        .unwrap_or_else(|| panic!("no warning in:\n{}", output.join("\n")));
    let warning: serde_json::Value = serde_json::from_str(warning).expect("a JSON log line");
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["fields"]["open_files"], 4096);
    assert_eq!(warning["fields"]["max_connections"], 5000);
}

/// The systemd unit as shipped.
fn unit() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/systemd/actionhub.service"
    );
    std::fs::read_to_string(path).expect("reading contrib/systemd/actionhub.service")
}

/// The value of `key=` in the unit (its last setting, as systemd reads it).
fn unit_setting(unit: &str, key: &str) -> String {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .unwrap_or_else(|| panic!("the unit sets no {key}="))
        .trim()
        .to_string()
}

#[test]
fn the_systemd_unit_parses() {
    let unit = unit();
    // systemd checks that the binary exists, so the verified copy runs this build's.
    let exec = unit_setting(&unit, "ExecStart");
    let program = exec.split_whitespace().next().expect("a program");
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("actionhub.service");
    std::fs::write(
        &copy,
        unit.replace(program, env!("CARGO_BIN_EXE_actionhub")),
    )
    .expect("writing the unit's copy");
    let output = match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: systemd-analyze is not installed, so the unit was not verified");
            return;
        }
        Err(e) => panic!("running systemd-analyze: {e}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    // An unknown key or a bad value is only a warning to systemd, naming the file.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("actionhub.service"))
        .collect();
    assert!(
        output.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}",
        output.status
    );
}

#[test]
fn the_systemd_unit_starts_the_hub_with_flags_it_accepts() {
    let unit = unit();
    assert_eq!(unit_setting(&unit, "Restart"), "on-failure");
    let state = unit_setting(&unit, "StateDirectory");
    let files: u64 = unit_setting(&unit, "LimitNOFILE")
        .parse()
        .expect("LimitNOFILE is a number");
    let exec = unit_setting(&unit, "ExecStart");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let config_at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    assert_eq!(args[config_at + 1], "/etc/actionhub/actionhub.toml");
    // The same flags, reading the shipped example instead of /etc.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/actionhub.example.toml");
    let mut args = args.clone();
    args[config_at + 1] = example;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_actionhub"))
        .args(&args)
        .arg("--print-config")
        .env_clear()
        .output()
        .expect("running actionhub --print-config");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{args:?}: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let config: toml::Table = stdout.parse().expect("--print-config prints TOML");
    assert_eq!(
        config["data_dir"].as_str(),
        Some(format!("/var/lib/{state}").as_str()),
        "the hub keeps its data in the unit's state directory"
    );
    let max_connections = config["max_connections"].as_integer().expect("a number") as u64;
    assert!(
        files >= max_connections + 256,
        "LimitNOFILE={files} fits max_connections ({max_connections}) and the margin"
    );
}

/// The access lines (JSON log records) of `output` about `path`.
fn access_lines(output: &str, path: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "http request" && v["span"]["path"] == path)
        .collect()
}

#[tokio::test]
async fn a_request_makes_one_access_line_without_its_query_values() {
    let hub = HubProcess::start_fresh(&[]);
    let customer = crate::support::uuid();
    let filter = format!("{{\"customerId\":[\"{customer}\"]}}");
    let response = reqwest::Client::new()
        .get(hub.url("/v1/events"))
        .query(&[("limit", "5"), ("where", filter.as_str())])
        .send()
        .await
        .expect("GET /v1/events");
    assert_eq!(response.status(), 200);
    let request_id = response
        .headers()
        .get("x-request-id")
        .expect("the response carries its request id")
        .to_str()
        .expect("a text id")
        .to_string();
    // The line is written as the response starts; the reader thread may lag behind.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while access_lines(&hub.output(), "/v1/events").is_empty()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let output = hub.output();
    let lines = access_lines(&output, "/v1/events");
    assert_eq!(lines.len(), 1, "one access line:\n{output}");
    let line = &lines[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["status"], 200);
    assert!(line["fields"]["latency_ms"].as_f64().is_some(), "{line}");
    assert_eq!(line["span"]["method"], "GET");
    assert_eq!(line["span"]["query"], "limit,where");
    assert_eq!(line["span"]["request_id"], request_id.as_str());
    assert!(
        !output.contains(&customer),
        "a query value reached the log:\n{output}"
    );
}

/// The value of the sample `name` (with its labels, as printed) in a scrape.
fn sample(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{scrape}"))
}

#[tokio::test]
async fn metrics_hold_histograms_build_info_and_process_metrics() {
    let hub = HubProcess::start_fresh(&["--fsync", "always"]);
    let client = reqwest::Client::new();
    let visitor = crate::support::Visitor::new();
    let mut subscriber = crate::support::Client::connected_to(hub.addr(), None).await;
    subscriber.subscribe_to("all", &["all"], None).await;
    for _ in 0..5 {
        let batch = serde_json::json!([visitor.page(), visitor.page()]);
        let response = client
            .post(hub.url("/v1/events"))
            .json(&batch)
            .send()
            .await
            .expect("publishing");
        assert_eq!(response.status(), 200);
    }
    for _ in 0..10 {
        subscriber.expect_type("event").await;
    }
    // A write is observed just after the socket took it, so the client may read the
    // last events a moment before the hub counts their write: scraped until it has (and
    // until the hub has used a tick of CPU time).
    let scrape = crate::support::bounded(crate::support::WAIT, "the writes counted", async {
        loop {
            let scrape = client
                .get(hub.url("/metrics"))
                .send()
                .await
                .expect("GET /metrics")
                .text()
                .await
                .expect("the scrape");
            // The kernel counts CPU time in 10 ms ticks: a young hub may show none yet.
            if sample(&scrape, "actionhub_frames_per_write_sum") >= 12.0
                && sample(&scrape, "process_cpu_seconds_total") > 0.0
            {
                return scrape;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // Five publishes, each acknowledged after one or more passes: at least one pass, at
    // most one a publish (a pass can take several), and every event in some pass.
    let passes = sample(&scrape, "actionhub_pipeline_pass_events_count");
    assert!((1.0..=5.0).contains(&passes), "{passes} passes");
    let events = sample(&scrape, "actionhub_pipeline_pass_events_sum");
    assert!(events >= 10.0, "{events} events in passes");
    for histogram in ["publish_ack_seconds", "log_append_seconds"] {
        let count = sample(&scrape, &format!("actionhub_{histogram}_count"));
        assert!((1.0..=5.0).contains(&count), "{histogram}: {count}");
        let sum = sample(&scrape, &format!("actionhub_{histogram}_sum"));
        assert!(sum > 0.0 && sum < 10.0, "{histogram}: {sum} s");
    }
    // The subscriber's replies and its ten events left in at least one write, and in at
    // most one write a frame (each frame is completed by exactly one write).
    let writes = sample(&scrape, "actionhub_frames_per_write_count");
    let frames = sample(&scrape, "actionhub_frames_per_write_sum");
    assert!(
        (1.0..=frames).contains(&writes),
        "{writes} writes of {frames} frames"
    );
    for histogram in ["log_sync_seconds", "snapshot_seconds"] {
        sample(&scrape, &format!("actionhub_{histogram}_count"));
    }
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("actionhub_build_info{")
                && l.contains(&format!("version=\"{version}\""))),
        "{scrape}"
    );
    assert!(sample(&scrape, "process_cpu_seconds_total") > 0.0);
    let rss = sample(&scrape, "process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 1e10, "{rss} bytes resident");
    let fds = sample(&scrape, "process_open_fds");
    let max = sample(&scrape, "process_max_fds");
    assert!(fds >= 3.0 && fds < max, "{fds} of {max} descriptors");
    assert!(scrape.ends_with("# EOF\n"), "one EOF, at the end");
    assert_eq!(scrape.matches("# EOF").count(), 1);
}
