//! The log the sequencer's accepted events go to before anyone hears of them.
//!
//! This is the seam DESIGN.md asks for: the pipeline hands each batch of records to a
//! [`Log`] and fans the batch out only after `append` returns, so a durable log (the local
//! write-ahead log, or a shared stream such as NATS JetStream) slots in without reshaping
//! the sequencer or the fan-out. Each record's `frame` holds the event exactly as delivered,
//! which is what a log needs to rebuild state by replaying it.

use std::io;
use std::sync::Arc;

use crate::retention::Record;
use crate::state::AdminOp;

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

    /// Makes everything appended so far durable (called at shutdown).
    fn flush(&mut self) -> io::Result<()> {
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
