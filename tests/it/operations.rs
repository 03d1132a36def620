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
