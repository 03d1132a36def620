//! A full disk (issue 11 item 13): the hub's data directory on a small tmpfs, filled up
//! with a file the test then deletes. While the disk is full the hub refuses publishes
//! with `unavailable` and keeps serving reads and subscriptions; when space returns it
//! takes publishes again by itself; a restart on a full disk comes up read-only. Mounting
//! needs root (CI runs as root); elsewhere each test says why it skips.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use actionhub::config::{Config, FsyncPolicy};
use serde_json::{json, Value};

use crate::support::{
    assert_error, assert_type, bounded, seq_of, temp_files, Action, Client, Hub, JsonExt,
    SHUTDOWN_WAIT, WAIT,
};

/// Room for the hub's files and a few dozen big events; the test fills the rest.
const DISK_BYTES: u64 = 4 << 20;
/// Longest wait for the hub to notice the disk filled or emptied (it retries at most
/// every 5 s).
const NOTICE: Duration = Duration::from_secs(30);

/// A tmpfs mounted on a temp dir for the test's life, unmounted on drop (lazily, so a
/// file still open cannot keep it).
struct Tmpfs {
    mount_point: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) where mounting is not allowed.
    fn mount(test: &str) -> Option<Tmpfs> {
        let mount_point = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}")])
            .arg("actionhub-test")
            .arg(mount_point.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs { mount_point }),
            Ok(out) => {
                let why = String::from_utf8_lossy(&out.stderr);
                eprintln!("{test} skipped: cannot mount a tmpfs (needs root): {why}");
                None
            }
            Err(e) => {
                eprintln!("{test} skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }

    /// A data directory on this file system.
    fn data_dir(&self) -> tempfile::TempDir {
        tempfile::tempdir_in(self.path()).expect("data dir on the tmpfs")
    }

    /// Fills the file system up with one file, whose path it returns.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = File::create(&path).expect("the filler");
        for chunk in [64 * 1024, 4096] {
            let bytes = vec![0u8; chunk];
            loop {
                match file.write(&bytes) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
                    Err(e) => panic!("filling the disk: {e}"),
                }
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount_point.path())
            .status();
    }
}

/// Every hub of these tests runs with `--fsync always`: each batch is synced before it is
/// acknowledged, so what a test saw acknowledged was written before it fills the disk.
fn fsync_always(config: &mut Config) {
    config.fsync = FsyncPolicy::Always;
}

/// An offer whose record is longer than a page (4 KiB), so logging it always needs space
/// the filler took.
fn big_offer() -> Value {
    Action::new("webchat")
        .event("offered")
        .with("data", json!({"pad": "x".repeat(4_000)}))
}

/// Waits until `/metrics` says the log is writable (`true`) or the disk full (`false`).
async fn log_writable(hub: &Hub, writable: bool) {
    let want = format!("actionhub_log_writable {}", u8::from(writable));
    let http = hub.http();
    bounded(NOTICE, &want, async {
        loop {
            let (_, _, text) = http.get_text("/metrics").await;
            if text.lines().any(|line| line == want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// `/readyz` says ready, and whether the hub takes publishes.
async fn assert_ready(hub: &Hub, writable: bool) {
    let (status, ready) = hub.http().get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], json!("ready"), "{ready}");
    assert_eq!(ready["writable"], json!(writable), "{ready}");
}

/// The seqs of every event `GET /v1/events` returns (all of them fit one page here).
async fn history(hub: &Hub) -> Vec<u64> {
    let (status, page) = hub
        .http()
        .get("/v1/events?since=0&limit=1000&topics=webchat:all")
        .await;
    assert_eq!(status, 200, "{page}");
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(seq_of)
        .collect()
}

/// A new subscriber resumes from the start: the retained events replay to it.
async fn replayed(hub: &Hub, count: usize) -> Vec<u64> {
    let mut client = hub.client().await;
    let epoch = client.epoch();
    let body = json!({"topics": ["webchat:all"], "since": 0, "epoch": epoch});
    client.subscribe(json!("replay"), body).await;
    client.event_seqs(count).await
}

fn assert_disk_full(reply: &Value) {
    assert_error(reply, "unavailable", None);
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(message.contains("disk is full"), "says why: {reply}");
}

async fn publish_offers(client: &mut Client, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..count {
        seqs.push(client.publish_ok(big_offer()).await);
    }
    seqs
}

#[tokio::test]
async fn a_full_disk_refuses_publishes_keeps_reads_and_resumes_by_itself() {
    let Some(disk) = Tmpfs::mount("a_full_disk_refuses_publishes") else {
        return;
    };
    let hub = Hub::start_in(disk.data_dir(), fsync_always).await;
    let mut watcher = hub.client().await;
    watcher.subscribe_to("live", &["webchat:all"], None).await;
    let mut publisher = hub.client().await;
    let mut acked = publish_offers(&mut publisher, 5).await;
    assert_eq!(watcher.event_seqs(5).await, acked);

    let filler = disk.fill();
    // This one cannot be logged: it waits, unacknowledged and undelivered, and the hub
    // turns read-only.
    publisher
        .send(json!({"op": "publish", "id": 900, "event": big_offer()}))
        .await;
    log_writable(&hub, false).await;
    assert_ready(&hub, false).await;
    let mut other = hub.client().await;
    assert_disk_full(&other.publish(big_offer()).await);
    publisher.expect_no_frame().await;
    watcher.expect_no_frame().await;
    // Reads and subscriptions go on.
    let read = history(&hub).await;
    assert!(
        acked.iter().all(|s| read.contains(s)),
        "{read:?} holds {acked:?}"
    );
    assert_eq!(replayed(&hub, 5).await, acked);

    fs::remove_file(&filler).unwrap();
    log_writable(&hub, true).await;
    assert_ready(&hub, true).await;
    let reply = publisher.reply_to(900).await;
    assert_type(&reply, "published");
    let waited = seq_of(&reply);
    assert_eq!(seq_of(&watcher.next_event().await), waited);
    acked.push(waited);
    acked.extend(publish_offers(&mut other, 2).await);
    assert_eq!(watcher.event_seqs(2).await, acked[6..]);

    let hub = hub.restart().await;
    assert_eq!(history(&hub).await, acked, "nothing acknowledged is lost");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_restart_on_a_full_disk_comes_up_read_only_and_leaves_no_temp_file() {
    let Some(disk) = Tmpfs::mount("a_restart_on_a_full_disk") else {
        return;
    };
    let data_dir = disk.data_dir();
    let data_path = data_dir.path().to_owned();
    let hub = Hub::start_in(data_dir, fsync_always).await;
    let acked = publish_offers(&mut hub.client().await, 3).await;
    let filler = disk.fill();
    // The stop finds the disk full too (its final snapshot cannot be written).
    let hub = hub.restart().await;
    log_writable(&hub, false).await;
    assert_eq!(temp_files(&data_path), Vec::<PathBuf>::new());
    let mut client = hub.client().await;
    assert_disk_full(&client.publish(big_offer()).await);
    assert_eq!(history(&hub).await, acked);
    assert_eq!(replayed(&hub, 3).await, acked);

    fs::remove_file(&filler).unwrap();
    log_writable(&hub, true).await;
    let seq = client.publish_ok(big_offer()).await;
    assert!(
        seq > *acked.last().unwrap(),
        "seqs move on: {seq} after {acked:?}"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_stop_while_the_disk_is_full_answers_the_waiting_publish_unavailable() {
    let Some(disk) = Tmpfs::mount("a_stop_while_the_disk_is_full") else {
        return;
    };
    let data_dir = disk.data_dir();
    let mut config = Config::ephemeral(data_dir.path());
    fsync_always(&mut config);
    let running = actionhub::server::start(config).await.expect("hub starts");
    let hub = running.hub().clone();
    let publish = |hub: std::sync::Arc<actionhub::hub::Hub>| async move {
        let event = actionhub::ingest::event::Event::from_json(big_offer());
        hub.publish_one(event).await
    };
    let acked = publish(hub.clone()).await.expect("published").seq.0;
    let filler = disk.fill();
    let waiting = tokio::spawn(publish(hub.clone()));
    bounded(NOTICE, "the hub to find the disk full", async {
        while !hub.log_status().is_full() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let handed_out = hub.latest_seq().0;
    assert!(handed_out > acked, "the waiting publish took a seq");
    bounded(SHUTDOWN_WAIT, "the hub to stop", running.shutdown())
        .await
        .expect("a clean stop");
    let answer = bounded(WAIT, "the waiting publish's answer", waiting)
        .await
        .unwrap();
    let refused = answer.expect_err("not acknowledged: it was never logged");
    assert_eq!(refused.code.as_str(), "unavailable", "{refused:?}");

    fs::remove_file(&filler).unwrap();
    let hub = Hub::start_in(data_dir, fsync_always).await;
    assert_eq!(
        history(&hub).await,
        vec![acked],
        "only the acknowledged one is kept"
    );
    let seq = hub.client().await.publish_ok(big_offer()).await;
    assert!(seq > handed_out, "{seq} reuses a seq up to {handed_out}");
    hub.shutdown().await;
}
