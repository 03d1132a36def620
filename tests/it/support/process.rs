//! The release binary as a child process, for tests that need a real process: SIGTERM and
//! SIGKILL, its log lines, its memory in `/proc`. Children are killed when a test ends,
//! however it ends.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest wait for a hub to start or stop.
const START_STOP_LIMIT: Duration = Duration::from_secs(30);

/// One running `actionhub` process.
pub(crate) struct HubProcess {
    child: Child,
    addr: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
    /// The data directory, when the process has one of its own (see [`HubProcess::start_fresh`]);
    /// dropped after the child is killed.
    _data_dir: Option<tempfile::TempDir>,
}

impl HubProcess {
    /// Starts the binary on `dir` with `extra` flags and waits until it listens.
    pub(crate) fn start(dir: &Path, extra: &[&str]) -> HubProcess {
        HubProcess::start_under(&[], dir, extra)
    }

    /// [`HubProcess::start`] with the binary run by `wrapper` (a command that execs its
    /// arguments, such as `prlimit --nofile=256:4096`), so the process id stays the hub's.
    pub(crate) fn start_under(wrapper: &[&str], dir: &Path, extra: &[&str]) -> HubProcess {
        let (child, output, addr) = launch_under(wrapper, dir, extra);
        let Some(addr) = addr.recv_timeout(START_STOP_LIMIT).ok() else {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the hub did not start:\n{}",
                output.lock().unwrap().join("\n")
            );
        };
        HubProcess {
            child,
            addr: addr
                .parse()
                .unwrap_or_else(|e| panic!("the hub listens on {addr:?}: {e}")),
            output,
            _data_dir: None,
        }
    }

    /// Starts the binary on a new temporary data directory, which lives as long as it.
    pub(crate) fn start_fresh(extra: &[&str]) -> HubProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut hub = HubProcess::start(dir.path(), extra);
        hub._data_dir = Some(dir);
        hub
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then waits for a clean exit; answers the output lines.
    pub(crate) fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
        let exit = wait_bounded(&mut self.child);
        let output = self.output.lock().unwrap().clone();
        assert!(
            exit.is_some_and(|s| s.success()),
            "clean stop failed: {exit:?}\n{}",
            output.join("\n")
        );
        output
    }

    /// [`HubProcess::stop`] on a blocking thread, so the test's own tasks (its clients)
    /// keep running while the hub drains.
    pub(crate) async fn stop_async(self) -> Vec<String> {
        tokio::task::spawn_blocking(move || self.stop())
            .await
            .expect("the hub stops cleanly")
    }

    /// SIGKILL: no drain, no final snapshot.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything it has written so far, one line a log record.
    pub(crate) fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// The process id, for reading its memory from `/proc` or sending it a signal.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The output lines of a child, appended as they arrive.
pub(crate) type OutputLines = Arc<Mutex<Vec<String>>>;

/// Starts the binary; returns the child, its output lines, and where its address arrives
/// (nothing arrives from a hub that never listens).
pub(crate) fn launch(dir: &Path, extra: &[&str]) -> (Child, OutputLines, mpsc::Receiver<String>) {
    launch_under(&[], dir, extra)
}

/// [`launch`], run by `wrapper` (see [`HubProcess::start_under`]).
fn launch_under(
    wrapper: &[&str],
    dir: &Path,
    extra: &[&str],
) -> (Child, OutputLines, mpsc::Receiver<String>) {
    let binary = env!("CARGO_BIN_EXE_actionhub");
    let mut command = match wrapper.split_first() {
        None => Command::new(binary),
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
    };
    let mut child = command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting actionhub");
    let output = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    for (stream, tx) in [
        (Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(tx)),
        (Box::new(stderr), None),
    ] {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(tx) = &tx {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if v["fields"]["message"] == "actionhub listening" {
                            let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or("").to_string());
                        }
                    }
                }
                output.lock().unwrap().push(line);
            }
        });
    }
    (child, output, rx)
}

/// Waits for `child` to exit, at most [`START_STOP_LIMIT`]; kills it when it does not.
pub(crate) fn wait_bounded(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + START_STOP_LIMIT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("waiting for the hub") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}
