//! Start-up from a data directory: the newest readable snapshot, then the log after it.
//!
//! Recovery reads everything before it changes anything, so a directory written by a newer
//! release (a higher format version in its marker, a snapshot or a log segment) is refused
//! with nothing overwritten. Then: load the newest snapshot that reads back whole (falling
//! back to the older one, and then to the log alone), replay the log's events after it
//! through `HubState::apply`, keep the log's tail that the retention window covers as the
//! replayable history, cut a torn tail off the newest segment, remove the temp files a
//! crash left behind, and decide the epoch and
//! where seqs continue. The epoch is kept in `<data-dir>/actionhub-data` and changes only
//! when history is lost: a new or empty directory, or a log that no longer reaches back
//! to the snapshot it would have to follow.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::clock::{now_millis, Millis};
use crate::config::Config;
use crate::hub::retention::{Forgetting, Record};
use crate::hub::state::AdminOp;
use crate::hub::state::HubState;
use crate::ids::Seq;
use crate::ingest::event::Published;
use crate::store::snapshot::{self, SnapshotError};
use crate::store::wal::{self, Entry, Reservation, Wal, WalError};

/// The data directory layout this release writes; a higher one is refused.
pub const DATA_FORMAT_VERSION: u32 = 1;
const MARKER_FILE: &str = "actionhub-data";

/// What a hub starts from.
pub struct Restored {
    pub epoch: String,
    pub state: HubState,
    /// The seq after which new events continue.
    pub last_seq: Seq,
    /// The retained history, oldest first (the hub applies the age limit).
    pub history: Vec<Arc<Record>>,
    /// The seq of the snapshot it started from (0 for none).
    pub snapshot_seq: Seq,
    /// The time the history is aged at as the hub takes it in: the clock's for a data
    /// directory; `None` for a cluster's shared snapshot, whose history is exactly what
    /// every node retained at that point of the stream (aged again here, this node would
    /// forget eventIds the others still dedupe).
    pub aged_at: Option<Millis>,
}

impl Restored {
    /// A new history: empty state, a fresh epoch.
    pub fn empty() -> Restored {
        Restored {
            epoch: new_epoch(),
            state: HubState::default(),
            last_seq: Seq(0),
            history: Vec::new(),
            snapshot_seq: Seq(0),
            aged_at: Some(now_millis()),
        }
    }
}

/// Why the hub refuses to start on a data directory.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("data directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "data directory {path} was written by a newer actionhub (format {found}, this release \
         reads up to {DATA_FORMAT_VERSION}); refusing to start, nothing was changed"
    )]
    FutureFormat { path: PathBuf, found: u32 },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the log holds an event this release cannot read back (seq {seq}): {why}")]
    Replay { seq: Seq, why: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io {
        path: path.to_owned(),
        source,
    }
}

pub fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The marker file: `actionhub-data <format>` and `epoch <epoch>`.
fn read_marker(data_dir: &Path) -> Result<Option<(u32, String)>, RecoveryError> {
    let path = data_dir.join(MARKER_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut version = None;
    let mut epoch = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("actionhub-data", v)) => version = v.trim().parse().ok(),
            Some(("epoch", e)) => epoch = Some(e.trim().to_string()),
            _ => {}
        }
    }
    match (version, epoch) {
        (Some(v), Some(e)) => Ok(Some((v, e))),
        _ => Err(io_err(&path)(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{MARKER_FILE} is damaged: {text:?}"),
        ))),
    }
}

fn write_marker(data_dir: &Path, epoch: &str) -> io::Result<()> {
    let text = format!("actionhub-data {DATA_FORMAT_VERSION}\nepoch {epoch}\n");
    wal::write_atomically(&data_dir.join(MARKER_FILE), text.as_bytes())
}

/// Recovers the state in `config.data_dir` and opens its log for appending.
pub fn recover(config: &Config) -> Result<(Restored, Wal), RecoveryError> {
    let started = Instant::now();
    let data_dir = config.data_dir.as_path();
    fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let marker = read_marker(data_dir)?;
    if let Some((found, _)) = marker.clone().filter(|(v, _)| *v > DATA_FORMAT_VERSION) {
        return Err(RecoveryError::FutureFormat {
            path: data_dir.to_owned(),
            found,
        });
    }
    // Refuse newer snapshot formats before reading anything else.
    let snapshots = snapshot::list(data_dir).map_err(io_err(data_dir))?;
    for (_, path) in &snapshots {
        if let Some(found) = snapshot::version_of(path).filter(|v| *v > snapshot::FORMAT_VERSION) {
            return Err(SnapshotError::FutureFormat {
                path: path.clone(),
                found,
            }
            .into());
        }
    }
    // Load the snapshot and read the log at the same time: the log reader assumes the
    // newest snapshot will load (and reads again in the rare case it does not).
    let wal_dir = data_dir.join("wal");
    let newest = snapshots.first().map_or(Seq(0), |(seq, _)| *seq);
    let (loaded, log) = std::thread::scope(|scope| -> Result<_, RecoveryError> {
        let loader = std::thread::Builder::new()
            .name("actionhub-load".into())
            .spawn_scoped(scope, || load_snapshot(&snapshots))
            .map_err(io_err(data_dir))?;
        let log = read_log(&wal_dir, newest, config.retention_events);
        Ok((
            loader.join().expect("the snapshot loader does not panic"),
            log,
        ))
    })?;
    let (snap_seq, changes_after, snap_epoch, state) = match loaded? {
        Some(l) => (l.seq, l.changes_after, Some(l.epoch), l.state),
        None => (Seq(0), None, None, HubState::default()),
    };
    let snapshot_took = started.elapsed();
    let log = match log {
        Ok(log) if snap_seq == newest => log,
        _ => read_log(&wal_dir, snap_seq, config.retention_events)?,
    };
    let ReadLog {
        scan,
        history,
        replay,
    } = log;
    let replayed = replay.len();
    // The snapshot holds the first `changes_after` visitor changes logged after its seq,
    // which the log still has as long as the segment holding that seq is kept: they are
    // not applied again (an update applied again after the erasure that followed it would
    // start a profile the erasure had ended). A snapshot that does not say, or whose seq's
    // segment is gone, gets every change at its seq again, as before.
    let mut held = match changes_after {
        Some(n) if scan.first_segment.is_some_and(|first| first <= snap_seq) => n,
        _ => 0,
    };
    for entry in &replay {
        match entry {
            Replay::Event(p) => state.apply(p),
            Replay::Admin { after, .. } if *after == snap_seq && held > 0 => held -= 1,
            Replay::Admin { after, op } => state.apply_admin(op, *after),
        }
    }

    // Is the history whole? The log must reach back to the event after the snapshot (or
    // to the first event when there is no snapshot): segments are deleted only when a
    // kept snapshot covers them.
    let reaches_back = scan
        .first_segment
        .is_none_or(|first| first <= snap_seq.next());
    let fresh = marker.is_none() && snapshots.is_empty() && scan.records == 0;
    let known_epoch = marker.map(|(_, e)| e).or(snap_epoch);
    let epoch = match (known_epoch, reaches_back, fresh) {
        (Some(epoch), true, _) => epoch,
        (_, _, true) | (None, true, false) => new_epoch(),
        (_, false, _) => {
            warn!(
                snapshot_seq = snap_seq.0,
                first_log_segment = scan.first_segment.map(|s| s.0),
                "the log does not reach back to the newest readable snapshot: events are lost; \
                 starting a new epoch so clients resume from a snapshot instead of a gap"
            );
            new_epoch()
        }
    };

    // Where seqs continue: after everything written, and after every seq the previous run
    // may have handed out, whatever the fsync policy: an event delivered before it reached
    // the disk, or a damaged last record dropped as a torn tail, keeps its seq to itself.
    let reservation = Reservation::read(data_dir).map_err(io_err(data_dir))?;
    let wal_last = scan.last_seq.unwrap_or(Seq(0));
    let mut last_seq = snap_seq.max(wal_last);
    if let Some(r) = reservation.filter(|r| r.reserved > last_seq) {
        warn!(
            logged = last_seq.0,
            reserved = r.reserved.0,
            "the last run stopped uncleanly: seqs up to the reserved mark are skipped, never \
             reused"
        );
        last_seq = r.reserved;
    }

    // Everything is read: now change things.
    if let Some(torn) = &scan.torn {
        warn!(
            segment = %torn.path.display(),
            keep_bytes = torn.keep,
            why = %torn.why,
            "cutting a torn tail off the log"
        );
        wal::cut(torn).map_err(io_err(&torn.path))?;
    }
    remove_orphan_temp_files(data_dir);
    if marker_epoch_differs(data_dir, &epoch)? {
        write_marker(data_dir, &epoch).map_err(io_err(data_dir))?;
    }
    let wal = Wal::open(
        data_dir,
        last_seq,
        config.fsync,
        config.fsync_interval,
        config.wal_segment_bytes,
    )
    .map_err(io_err(&wal_dir))?;
    info!(
        snapshot_seq = snap_seq.0,
        replayed,
        retained = history.len(),
        last_seq = last_seq.0,
        actions = state.action_count(),
        snapshot_ms = snapshot_took.as_millis() as u64,
        took_ms = started.elapsed().as_millis() as u64,
        "recovered from {}",
        data_dir.display()
    );
    Ok((
        Restored {
            epoch,
            state,
            last_seq,
            history: history.into(),
            snapshot_seq: snap_seq,
            aged_at: Some(now_millis()),
        },
        wal,
    ))
}

/// The newest snapshot that reads back whole, if any.
fn load_snapshot(snapshots: &[(Seq, PathBuf)]) -> Result<Option<snapshot::Loaded>, RecoveryError> {
    for (_, path) in snapshots {
        match snapshot::load(path) {
            Ok(l) => return Ok(Some(l)),
            Err(e @ SnapshotError::FutureFormat { .. }) => return Err(e.into()),
            Err(e) => {
                warn!(error = %e, "skipping a snapshot that cannot be read; trying an older one")
            }
        }
    }
    Ok(None)
}

/// The log read back: what retention keeps, and the events after the snapshot to replay.
struct ReadLog {
    scan: wal::Scan,
    history: VecDeque<Arc<Record>>,
    replay: Vec<Replay>,
}

/// What the log holds after the snapshot, to apply in order (an event boxed: a whole
/// log's worth is held at once, and most entries are far smaller than the largest).
enum Replay {
    Event(Box<Published>),
    /// A visitor change logged after the event at `after`. One logged right at the
    /// snapshot's seq may be in the snapshot already: the snapshot says how many are.
    Admin {
        after: Seq,
        op: AdminOp,
    },
}

/// Erases or anonymizes what the rebuilt history holds about a visitor from before the
/// change, as the live hub did when the change was made (an erased visitor's events never
/// come back). Records the log's compaction rewrote already stay as they are.
fn forget_in_history(history: &mut VecDeque<Arc<Record>>, op: &AdminOp) {
    let Some(forgetting) = Forgetting::of(op) else {
        return;
    };
    for slot in history.iter_mut() {
        if let Some(replacement) = forgetting.record(slot) {
            *slot = Arc::new(replacement);
        }
    }
}

fn read_log(wal_dir: &Path, after: Seq, keep: usize) -> Result<ReadLog, RecoveryError> {
    let mut history: VecDeque<Arc<Record>> = VecDeque::new();
    let mut replay = Vec::new();
    let mut failed: Option<RecoveryError> = None;
    let scan = wal::scan(wal_dir, |entry| {
        if failed.is_some() {
            return;
        }
        let record = match entry {
            Entry::Event(record) => record,
            Entry::Admin { after: at, op } => {
                forget_in_history(&mut history, &op);
                if at >= after {
                    replay.push(Replay::Admin { after: at, op });
                }
                return;
            }
        };
        // An erased record (the log's compaction left it so) has nothing to replay: the
        // erasure after it forgets its customer.
        if record.seq > after && !record.is_erased() {
            match Published::from_frame(record.frame.as_str()) {
                Ok(p) if p.seq == record.seq => replay.push(Replay::Event(Box::new(p))),
                Ok(_) => {
                    failed = Some(RecoveryError::Replay {
                        seq: record.seq,
                        why: "the frame's seq differs from the record's".into(),
                    })
                }
                Err(e) => {
                    failed = Some(RecoveryError::Replay {
                        seq: record.seq,
                        why: e.to_string(),
                    })
                }
            }
        }
        history.push_back(Arc::new(record));
        if history.len() > keep {
            history.pop_front();
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(ReadLog {
            scan,
            history,
            replay,
        }),
    }
}

/// Removes the temp files a crash (or a failed write) left behind: snapshots never
/// renamed, the marker's and the seq reservation's replacements, and log segments a
/// compaction had not yet renamed over the originals (which still hold every record).
/// Nothing reads them, and on a full disk they hold the space a restart needs.
fn remove_orphan_temp_files(data_dir: &Path) {
    for dir in [
        data_dir.to_path_buf(),
        snapshot::dir(data_dir),
        data_dir.join("wal"),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            if path.extension().is_some_and(|e| e == "tmp") && path.is_file() {
                match fs::remove_file(&path) {
                    Ok(()) => info!(file = %path.display(), "removed a temp file left behind"),
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "cannot remove a temp file")
                    }
                }
            }
        }
    }
}

fn marker_epoch_differs(data_dir: &Path, epoch: &str) -> Result<bool, RecoveryError> {
    Ok(read_marker(data_dir)?.is_none_or(|(_, e)| e != epoch))
}
