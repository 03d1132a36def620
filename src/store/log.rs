//! The log the sequencer's accepted events go to before anyone hears of them.
//!
//! The pipeline hands each batch of records to a [`Log`] and fans the batch out only after
//! `append` returns, so a durable log slots in without reshaping the sequencer or the
//! fan-out. Each record's `frame` holds the event exactly as delivered, which is what a
//! log needs to rebuild state by replaying it. A cluster's shared stream is not a `Log`:
//! it orders the inputs before the sequencer decides them (see `crate::hub::inputs`), and
//! a cluster node logs to [`MemoryOnly`].

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::hub::retention::Record;
use crate::hub::state::AdminOp;
use crate::ids::Seq;

/// Where accepted events are recorded, in seq order.
pub trait Log: Send + 'static {
    /// Appends a batch of records, in seq order. When it returns `Ok`, the records are as
    /// durable as the log's policy promises, and the batch may be acknowledged.
    fn append(&mut self, records: &[Arc<Record>]) -> io::Result<()>;

    /// Appends a visitor change that is not an event (see [`AdminOp`]), after the events
    /// appended so far. A durable log must keep it: replaying the log repeats it, so an
    /// erased visitor never comes back.
    fn append_admin(&mut self, op: &AdminOp) -> io::Result<()>;
    /// Called by the pipeline at least every few milliseconds, busy or idle, so a log can
    /// sync on a timer.
    fn tick(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Gets ready to append: for a log on disk, a segment to write to and seqs reserved
    /// ahead. `append` does this itself; the pipeline calls it alone to find out whether a
    /// full disk has room again while nothing is waiting to be logged.
    fn prepare(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Makes everything appended so far durable now, whatever the policy (called when
    /// someone must not run ahead of the disk, such as a snapshot about to be published).
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Rewrites what the log's segments from the one named `from` on hold from before each
    /// of `forgotten` (anonymizations and erasures, with the seq each was logged after), so
    /// that they no longer hold what those forget (see [`crate::store::wal::compact`]; the
    /// snapshot thread did the older, closed segments itself). Called on the pipeline's
    /// thread, between appends, when the snapshot thread asks ([`LogStatus::compact`]). A
    /// log that keeps nothing on disk has nothing to rewrite.
    fn compact(&mut self, _forgotten: &[(Seq, AdminOp)], _from: Seq) -> io::Result<()> {
        Ok(())
    }

    /// Makes everything appended so far durable (called at shutdown).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How far the log is known durable, shared by the pipeline (which owns the log) with
/// those that must not run ahead of the disk: a snapshot names a seq only once the log is
/// durable up to it, or after a power loss the log could end before the snapshot's seq
/// and replay would have a silent gap.
#[derive(Debug)]
pub struct LogStatus {
    /// Every seq up to this one is durable in the log.
    durable: AtomicU64,
    /// The highest seq someone waits to see durable; the pipeline syncs for it.
    wanted: AtomicU64,
    /// Set when the pipeline has stopped: nothing becomes durable any more.
    closed: AtomicBool,
    /// Set while the disk is full: the hub refuses publishes until the log can write again.
    full: AtomicBool,
    /// A compaction the snapshot thread asks the pipeline for, and how it went.
    compaction: Mutex<Compaction>,
}

/// Where a compaction asked of the pipeline stands.
#[derive(Debug, Default)]
enum Compaction {
    #[default]
    Idle,
    /// The changes, and the first segment to rewrite.
    Wanted(Vec<(Seq, AdminOp)>, Seq),
    Running,
    Done(Result<(), String>),
}

/// Whether an IO error says the disk (or the user's quota on it) is full: a condition that
/// passes when space is freed, unlike the other errors, which the hub cannot go on after.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

impl LogStatus {
    /// A log that holds (or has skipped) everything up to `last_seq`.
    pub fn new(last_seq: Seq) -> LogStatus {
        LogStatus {
            durable: AtomicU64::new(last_seq.0),
            wanted: AtomicU64::new(last_seq.0),
            closed: AtomicBool::new(false),
            full: AtomicBool::new(false),
            compaction: Mutex::new(Compaction::Idle),
        }
    }

    /// Whether the disk is full, so publishes must be refused.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// For the pipeline: the log could not write for lack of space (`true`), or wrote again
    /// (`false`). Returns whether this changed anything, so the change is reported once.
    pub fn set_full(&self, full: bool) -> bool {
        self.full.swap(full, Ordering::AcqRel) != full
    }

    pub fn durable(&self) -> Seq {
        Seq(self.durable.load(Ordering::Acquire))
    }

    /// For the pipeline: `log` holds every record up to `appended`; syncs it when someone
    /// waits for a seq not yet known durable.
    pub fn sync_if_wanted(&self, log: &mut dyn Log, appended: Seq) -> io::Result<()> {
        let durable = self.durable();
        if self.wanted.load(Ordering::Acquire) > durable.0 && appended > durable {
            log.sync()?;
            self.mark_durable(appended);
        }
        Ok(())
    }

    /// For the pipeline: runs the compaction someone asked for, if any, and reports how it
    /// went to them. A failure is theirs to handle (they try again later); the log goes on.
    pub fn compact_if_wanted(&self, log: &mut dyn Log) {
        let (forgotten, from) = {
            let mut slot = self.compaction.lock();
            match std::mem::take(&mut *slot) {
                Compaction::Wanted(forgotten, from) => {
                    *slot = Compaction::Running;
                    (forgotten, from)
                }
                other => {
                    *slot = other;
                    return;
                }
            }
        };
        let result = log.compact(&forgotten, from).map_err(|e| e.to_string());
        *self.compaction.lock() = Compaction::Done(result);
    }

    /// Asks the pipeline to compact the log's segments from the one named `from` on for
    /// `forgotten`, and waits (at most `limit`). `Ok(false)` when the pipeline had stopped
    /// without taking it: nobody appends any more, so the caller may rewrite them itself.
    pub fn compact(
        &self,
        forgotten: Vec<(Seq, AdminOp)>,
        from: Seq,
        limit: Duration,
    ) -> io::Result<bool> {
        *self.compaction.lock() = Compaction::Wanted(forgotten, from);
        let deadline = Instant::now() + limit;
        loop {
            {
                let mut slot = self.compaction.lock();
                match &*slot {
                    Compaction::Done(result) => {
                        let result = result.clone();
                        *slot = Compaction::Idle;
                        return result.map(|()| true).map_err(io::Error::other);
                    }
                    Compaction::Wanted(..) if self.closed.load(Ordering::Acquire) => {
                        *slot = Compaction::Idle;
                        return Ok(false);
                    }
                    Compaction::Wanted(..) if Instant::now() > deadline => {
                        *slot = Compaction::Idle;
                        return Err(io::Error::other(format!(
                            "the log was not compacted within {limit:?}"
                        )));
                    }
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// For the pipeline: everything up to `seq` is durable (after a sync or a flush).
    pub fn mark_durable(&self, seq: Seq) {
        self.durable.fetch_max(seq.0, Ordering::AcqRel);
    }

    /// For the pipeline: it has stopped.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Asks the pipeline for a sync up to `seq` and waits (at most `limit`) until the log
    /// is durable up to it.
    pub fn wait_durable(&self, seq: Seq, limit: Duration) -> io::Result<()> {
        self.wanted.fetch_max(seq.0, Ordering::AcqRel);
        let deadline = Instant::now() + limit;
        while self.durable() < seq {
            if self.closed.load(Ordering::Acquire) {
                return Err(io::Error::other(format!(
                    "the log stopped before seq {seq} was durable"
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "the log was not durable up to seq {seq} within {limit:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// A log that keeps nothing: history lives only in memory, and a restart starts a new
/// epoch. Used until the write-ahead log is configured.
#[derive(Debug, Default)]
pub struct MemoryOnly;

impl Log for MemoryOnly {
    fn append(&mut self, _records: &[Arc<Record>]) -> io::Result<()> {
        Ok(())
    }

    fn append_admin(&mut self, _op: &AdminOp) -> io::Result<()> {
        Ok(())
    }
}
