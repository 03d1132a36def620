//! Store faults (issue 11): a damaged or cut write-ahead log, failing snapshots and a full
//! disk. The log cases run recovery in-process on copies of a crash image, one damage
//! each, so thousands of them take seconds; the disk-full cases mount a small tmpfs (as
//! root) and run a real hub on it.

use std::fs;
use std::path::{Path, PathBuf};

use actionhub::config::{Config, FsyncPolicy};
use actionhub::ingest::event::Event;
use actionhub::store::recovery;
use serde_json::json;

use crate::support::{temp_files, uuid, wal_segments, Action, JsonExt, Visitor};

/// Where the copies go: memory when the machine has it, so recovery's syncs cost nothing.
fn scratch() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").expect("temp dir in /dev/shm"),
        false => tempfile::tempdir().expect("temp dir"),
    }
}

/// A data directory as a crash under `--fsync always` leaves it: every published event
/// acknowledged (so on disk), no final snapshot. Returns the directory and the seqs of
/// the events the log holds, in order.
async fn crash_image(events: usize) -> (tempfile::TempDir, Vec<u64>) {
    let live = scratch();
    let mut config = Config::ephemeral(live.path());
    config.fsync = FsyncPolicy::Always;
    let running = actionhub::server::start(config).await.expect("hub starts");
    for _ in 0..events {
        let event = Action::new("webchat")
            .event("offered")
            .with("eventId", json!(uuid()));
        let ack = running.hub().publish_one(Event::from_json(event)).await;
        ack.expect("published");
    }
    // Acknowledged under `always` means synced: a copy now is what a crash would leave.
    let image = scratch();
    copy_dir(live.path(), image.path());
    running.shutdown().await.expect("clean stop");
    let _ = fs::remove_dir_all(image.path().join("snapshots"));
    let seqs = recover_copy(image.path(), |_| {})
        .expect("the undamaged image recovers")
        .0;
    (image, seqs)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            fs::copy(&path, &target).unwrap();
        }
    }
}

/// The only log segment of a data directory.
fn segment(dir: &Path) -> PathBuf {
    let mut segments = wal_segments(dir);
    assert_eq!(segments.len(), 1, "a small log is one segment");
    segments.pop().unwrap()
}

/// Copies `image`, damages the copy's log segment with `damage`, and recovers it: the seqs
/// of the history it rebuilt and where new seqs would continue, or the refusal's message.
fn recover_copy(image: &Path, damage: impl FnOnce(&Path)) -> Result<(Vec<u64>, u64), String> {
    let copy = scratch();
    copy_dir(image, copy.path());
    damage(&segment(copy.path()));
    let mut config = Config::ephemeral(copy.path());
    config.fsync = FsyncPolicy::Always;
    match recovery::recover(&config) {
        Ok((restored, _wal)) => Ok((
            restored.history.iter().map(|r| r.seq.0).collect(),
            restored.last_seq.0,
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Where each record of a segment starts and ends: a 12-byte header, then records of
/// length (u32 LE), crc32, payload.
fn record_bounds(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut bounds = Vec::new();
    let mut at = 12;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        bounds.push((at, at + 8 + len));
        at += 8 + len;
    }
    bounds
}

/// Checks a recovery that started: exactly the first `kept` records, and no seq of the
/// log handed out again.
fn assert_started(outcome: Result<(Vec<u64>, u64), String>, seqs: &[u64], kept: usize, what: &str) {
    let (history, continues_after) = outcome.unwrap_or_else(|e| panic!("{what}: refused: {e}"));
    assert_eq!(
        history,
        seqs[..kept],
        "{what}: the records before the damage"
    );
    let highest = *seqs.last().unwrap();
    assert!(
        continues_after >= highest,
        "{what}: seqs continue after {continues_after}, reusing up to {highest}"
    );
}

#[tokio::test]
async fn every_flipped_byte_of_the_log_is_refused_or_drops_only_the_last_record() {
    let (image, seqs) = crash_image(12).await;
    let name = segment(image.path())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let bytes = fs::read(segment(image.path())).unwrap();
    let bounds = record_bounds(&bytes);
    assert_eq!(bounds.len(), seqs.len(), "one record per event");
    let last_start = bounds.last().unwrap().0;
    for at in 0..bytes.len() {
        let outcome = recover_copy(image.path(), |path| {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0xff;
            fs::write(path, damaged).unwrap();
        });
        let what = format!("byte {at} flipped");
        if at >= last_start {
            // A damaged last record cannot be told from a torn write: dropped, never reused.
            assert_started(outcome, &seqs, seqs.len() - 1, &what);
            continue;
        }
        let message = outcome.err().unwrap_or_else(|| panic!("{what}: started"));
        assert!(message.contains(&name), "{what}: names the file: {message}");
        if let Some(&(start, _)) = bounds
            .iter()
            .find(|(start, end)| (*start..*end).contains(&at))
        {
            assert!(
                message.contains(&format!("byte {start}")),
                "{what}: names the record's offset {start}: {message}"
            );
        }
    }
}

#[tokio::test]
async fn a_log_cut_at_every_offset_starts_with_the_whole_records_before_the_cut() {
    let (image, seqs) = crash_image(12).await;
    let bytes = fs::read(segment(image.path())).unwrap();
    let bounds = record_bounds(&bytes);
    for cut in 0..bytes.len() {
        let outcome = recover_copy(image.path(), |path| {
            fs::write(path, &bytes[..cut]).unwrap();
        });
        let kept = bounds.iter().filter(|(_, end)| *end <= cut).count();
        assert_started(outcome, &seqs, kept, &format!("cut at byte {cut}"));
    }
}

async fn publish_pages(hub: &actionhub::hub::Hub, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..count {
        let event = Visitor::new().page().with("eventId", json!(uuid()));
        seqs.push(
            hub.publish_one(Event::from_json(event))
                .await
                .expect("published")
                .seq
                .0,
        );
    }
    seqs
}

#[tokio::test]
async fn a_failed_snapshot_leaves_no_temp_file_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where each snapshot would go makes every rename fail (root ignores file
    // permissions), after the temp file is written in full.
    for seq in 1..=100u64 {
        let blocker = dir.path().join("snapshots").join(format!("{seq:020}.snap"));
        fs::create_dir_all(&blocker).unwrap();
        fs::write(blocker.join("in-the-way"), b"x").unwrap();
    }
    let mut config = Config::ephemeral(dir.path());
    config.snapshot_interval = std::time::Duration::from_millis(20);
    let running = actionhub::server::start(config).await.expect("hub starts");
    publish_pages(running.hub(), 3).await;
    let failures = &running.hub().metrics().snapshot_failures;
    crate::support::bounded(
        std::time::Duration::from_secs(20),
        "a snapshot to fail",
        async {
            while failures.get() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    // The final snapshot fails too; the log holds everything, so the stop is still clean.
    running.shutdown().await.expect("a clean stop");
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn orphan_temp_files_are_removed_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("snapshots")).unwrap();
    for orphan in [
        "snapshots/00000000000000000007.tmp",
        "seq-reserved.tmp",
        "actionhub-data.tmp",
    ] {
        fs::write(dir.path().join(orphan), b"left by a crash").unwrap();
    }
    let running = actionhub::server::start(Config::ephemeral(dir.path()))
        .await
        .expect("hub starts");
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
    running.shutdown().await.expect("a clean stop");
}
