//! The harness every test uses: a hub on a loopback port 0 (in this process, or the
//! release binary as a child process), a WebSocket client that speaks the v1 frames, an
//! HTTP client, builders for valid events with fresh UUIDv4s, assertions on hub frames,
//! browser tokens, and what a data directory holds.
//!
//! Every wait is bounded ([`WAIT`] for something that must arrive, [`QUIET`] for asserting
//! that nothing does), so a broken hub fails a test instead of hanging it. Helpers panic
//! with the offending frame in the message, which keeps the tests themselves short.

use std::future::Future;
use std::time::Duration;

mod client;
mod data_dir;
mod events;
mod frames;
mod http;
mod hub;
pub(crate) mod nats;
mod process;
mod receiver;
mod stream;
mod tokens;

pub(crate) use client::Client;
pub(crate) use data_dir::{temp_files, wal_segments};
pub(crate) use events::{uuid, Action, JsonExt, Visitor, NOT_V4_UUID};
pub(crate) use frames::{
    assert_error, assert_event, assert_timestamp, assert_type, merged_customers, seq_of,
    sorted_ids, topics,
};
pub(crate) use http::{assert_http_error, Http};
pub(crate) use hub::Hub;
pub(crate) use process::{launch, wait_bounded, HubProcess};
pub(crate) use receiver::{Mode, Receiver};
pub(crate) use stream::EventStream;
pub(crate) use tokens::{sign, token, unix_now};

/// Longest wait for something the hub must send or do.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// Longest wait for a graceful shutdown. Generous: it only guards against a hang, and a
/// hub may give lingering connections a drain deadline of its own.
pub(crate) const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);
/// How long "nothing more arrives" is watched for.
pub(crate) const QUIET: Duration = Duration::from_millis(300);
/// The subprotocol of PROTOCOL.md section 5.
pub(crate) const SUBPROTOCOL: &str = "actionhub.v1";

/// Awaits `future` for at most `limit`, panicking with `what` when it takes longer.
pub(crate) async fn bounded<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}
