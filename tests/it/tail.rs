//! `actionhub tail`, the binary reading a real hub's HTTP event stream: one event frame a
//! line on stdout, resuming from its checkpoint file, ending cleanly when stdout closes.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// A running `actionhub tail`, killed when dropped (a failing test leaves none behind).
struct TailProcess(Child);

impl Drop for TailProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = wait_bounded(&mut self.0);
    }
}

impl std::ops::Deref for TailProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for TailProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// `actionhub tail` against `hub` with `args`, its stdout piped.
fn tail(hub: &Hub, args: &[&str]) -> (TailProcess, BufReader<ChildStdout>) {
    let url = format!("http://{}", hub.addr());
    let mut child = Command::new(env!("CARGO_BIN_EXE_actionhub"))
        .arg("tail")
        .args(["--url", &url])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("actionhub tail starts");
    let stdout = child.stdout.take().expect("piped stdout");
    (TailProcess(child), BufReader::new(stdout))
}

/// The next line tail prints, as JSON, read on a blocking thread within [`WAIT`].
async fn next_line(reader: BufReader<ChildStdout>) -> (Value, BufReader<ChildStdout>) {
    let read = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let mut line = String::new();
        reader.read_line(&mut line).expect("read tail's stdout");
        (line, reader)
    });
    let (line, reader) = bounded(WAIT, "a line from actionhub tail", read)
        .await
        .expect("reader thread");
    let frame = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    (frame, reader)
}

fn stop(child: TailProcess) {
    drop(child);
}

/// Waits (without blocking the in-process hub's runtime) for `child` to exit.
async fn exit_of(child: &mut Child) -> std::process::ExitStatus {
    bounded(WAIT, "actionhub tail to exit", async {
        loop {
            if let Some(status) = child.try_wait().expect("waiting for tail") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Waits until the checkpoint file names `seq` (it is written just after the lines).
async fn checkpoint_reaches(path: &std::path::Path, seq: u64) -> Value {
    bounded(WAIT, "the checkpoint to be written", async {
        loop {
            let saved = std::fs::read(path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
            if let Some(saved) = saved.filter(|s| s["seq"] == json!(seq)) {
                return saved;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn pages(visitor: &Visitor, n: usize) -> Value {
    Value::Array((0..n).map(|_| visitor.page()).collect())
}

#[tokio::test]
async fn tail_prints_each_event_once_across_runs_from_its_checkpoint() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let checkpoint = dir.path().join("tail.json");
    let checkpoint_arg = checkpoint.to_str().expect("a UTF-8 path");
    let visitor = Visitor::new();
    let seqs = |results: Vec<Value>| -> Vec<u64> {
        results
            .iter()
            .map(|r| r["seq"].as_u64().expect("accepted"))
            .collect()
    };
    let first = seqs(hub.http().publish(&pages(&visitor, 3)).await);
    let args = [
        "--topics",
        "visitor:page",
        "--since",
        "0",
        "--checkpoint",
        checkpoint_arg,
    ];
    let (child, mut out) = tail(&hub, &args);
    let mut printed = Vec::new();
    for _ in 0..3 {
        let (frame, rest) = next_line(out).await;
        out = rest;
        assert_type(&frame, "event");
        assert_eq!(frame["topic"], json!("visitor:page"), "{frame}");
        printed.push(seq_of(&frame));
    }
    assert_eq!(printed, first);
    // The checkpoint names the last line printed, in the hub's epoch.
    let epoch = hub.client().await.epoch();
    let saved = checkpoint_reaches(&checkpoint, first[2]).await;
    assert_eq!(saved, json!({"epoch": epoch, "seq": first[2]}));
    stop(child);
    let second = seqs(hub.http().publish(&pages(&visitor, 2)).await);
    // Started again from the checkpoint (which wins over --since), it prints only what
    // it had not.
    let (child, mut out) = tail(&hub, &args);
    for seq in &second {
        let (frame, rest) = next_line(out).await;
        out = rest;
        assert_eq!(seq_of(&frame), *seq, "{frame}");
    }
    checkpoint_reaches(&checkpoint, second[1]).await;
    stop(child);
}

#[tokio::test]
async fn tail_ends_cleanly_when_its_reader_goes_away() {
    let hub = Hub::start().await;
    let visitor = Visitor::new();
    let (mut child, mut out) = tail(&hub, &["--topics", "visitor:page"]);
    // A reader that takes one line and goes away, as `head -1` does. On a thread of its
    // own: a read that never returns must not hold the test's runtime.
    let (read_tx, mut read_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let n = out.read_line(&mut line).unwrap_or(0);
        drop(out);
        let _ = read_tx.send(n);
    });
    // Live from now: publish until the line is read and tail has exited.
    let status = bounded(WAIT, "tail to exit after its reader left", async {
        loop {
            hub.http().publish(&visitor.page()).await;
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        matches!(read_rx.try_recv(), Ok(n) if n > 0),
        "the reader got a line"
    );
    assert!(
        status.success(),
        "a closed stdout ends tail cleanly: {status}"
    );
}

#[tokio::test]
async fn tail_refuses_a_bad_filter_with_the_hubs_reason() {
    let hub = Hub::start().await;
    let (mut child, _out) = tail(&hub, &["--topics", "webchat:typo"]);
    let status = exit_of(&mut child).await;
    assert!(!status.success(), "a refused stream is an error: {status}");
}
