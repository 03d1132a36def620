//! The real binary's configuration: a file, the environment and flags merged in that order
//! of precedence, read back with `--print-config`; and a refusal as an operator sees it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `--print-config` and a refusal exit at once; this only bounds a hub that would not.
const EXIT_LIMIT: Duration = Duration::from_secs(20);

/// Runs the binary with exactly `env` as its environment, so the machine's own
/// `ACTIONHUB_*` variables play no part; kills it (by its PID) if it outlives the limit.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_actionhub"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting actionhub");
    let deadline = Instant::now() + EXIT_LIMIT;
    while child.try_wait().expect("waiting for actionhub").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("actionhub {args:?} did not exit within {EXIT_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
        .wait_with_output()
        .expect("reading actionhub's output")
}

fn printed(output: &Output) -> toml::Table {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.parse().expect("--print-config prints TOML")
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("hub.toml");
    std::fs::write(
        &file,
        "retention_events = 5\nping_interval = \"7s\"\nmax_frame_bytes = 1234\n",
    )
    .expect("writing the config file");
    let file = file.to_str().expect("a UTF-8 temp path");
    let env = [
        ("ACTIONHUB_CONFIG", file),
        ("ACTIONHUB_RETENTION_EVENTS", "6"),
        ("ACTIONHUB_PING_INTERVAL", "5s"),
        ("ACTIONHUB_API_KEYS", "k-hunter2=publish+subscribe"),
    ];
    let output = run(&["--retention-events", "7", "--print-config"], &env);
    let table = printed(&output);
    let int = |key: &str| table[key].as_integer();
    assert_eq!(int("retention_events"), Some(7), "the flag wins");
    assert_eq!(
        table["ping_interval"].as_str(),
        Some("5s"),
        "the environment wins"
    );
    assert_eq!(int("max_frame_bytes"), Some(1234), "the file wins");
    assert_eq!(int("queue_capacity"), Some(8192), "the default stays");
    assert!(!table.contains_key("api_keys"), "a set key is left out");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("hunter2"));

    // Without the file, the environment and the flag, the same command prints the shipped
    // example.
    let output = run(&["--print-config"], &[]);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("actionhub.example.toml");
    let example = std::fs::read_to_string(example).expect("reading actionhub.example.toml");
    assert_eq!(
        printed(&output),
        example.parse::<toml::Table>().expect("TOML")
    );
}

#[test]
fn open_mode_off_loopback_is_refused_before_anything_binds() {
    let output = run(&["--listen", "0.0.0.0:0", "--print-config"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(stderr.contains("ACTIONHUB_API_KEYS"), "{stderr}");
    assert!(output.stdout.is_empty());
}
