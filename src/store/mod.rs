//! Durability: where accepted events are recorded and how a hub starts again from them.
//!
//! - [`log`]: the `Log` seam the pipeline appends to (the write-ahead log today, a shared
//!   stream later) and `LogStatus`, how far it is durable.
//! - [`wal`]: the write-ahead log's segments, records and fsync policies.
//! - [`snapshot`]: snapshot files and the thread that writes them.
//! - [`recovery`]: start-up from a data directory.
//! - [`codec`]: the binary encoding the log and snapshots share.

pub mod codec;
pub mod log;
pub mod recovery;
pub mod snapshot;
pub mod wal;
