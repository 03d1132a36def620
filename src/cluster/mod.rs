//! Cluster mode: several hub nodes on one NATS JetStream stream, each answering exactly as
//! one node would.
//!
//! The nodes form a replicated state machine over the stream. The stream carries the
//! hub's inputs (validated publishes, visitor changes, merges, the sweeper's ticks; see
//! [`crate::hub::inputs`]) in one order; every node reads every message back in that order
//! and applies it with the same `decide`, at the time the stream stamped on it, so every
//! node commits the same events with the same seqs, frames and state without asking the
//! others. A node answers its client once the input has come back and been applied here.
//! The sequencer, state, history and fan-out are the single node's own; only where the
//! order comes from differs.
//!
//! - [`stream`]: the stream, created or checked, and the epoch it keeps.
//! - [`proposer`]: this node's inputs into the stream, many to a message.
//! - [`applier`]: the stream read back and applied, on a thread of its own.
//! - [`lease`]: which node proposes the sweeper's ticks and writes the shared snapshots.
//! - [`snapshots`]: the state and history as of one message, shared through an object
//!   store, for a node to start from when the stream no longer reaches back far enough.
//! - [`sinks`]: the webhook sinks' definitions, cursors and status, shared in a
//!   key-value bucket; the lease holder delivers them.
//! - [`message`]: a stream message's JSON.
//! - [`order`]: each origin's messages applied in the order it proposed them, though a
//!   message sent again may be stored after later ones.
//!
//! Why a replicated state machine rather than optimistic writes per customer subject
//! (`Nats-Expected-Last-Subject-Sequence`): the hub's rules reach across customers (a
//! merge by user id, dedupe over the retention window), which per-subject expectations
//! would need claim subjects for, and the server answers spurious "wrong last sequence"
//! while a write to the subject is in flight. Here nothing is refused for a race: a
//! conflict is decided by the stream's order, the way one node decides it by its lock.

mod applier;
mod lease;
mod message;
mod order;
mod proposer;
pub mod sinks;
mod snapshots;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Millis;
use crate::config::Config;
use crate::hub::inputs::OrderStatus;
use crate::hub::{Hub, Order, Pipeline, SharedOrder};
use crate::store::log::MemoryOnly;
use crate::store::recovery::Restored;

/// Proposals queued for the proposer, at most; publishers wait for room beyond this.
const PROPOSALS_QUEUED: usize = 16_384;
/// How long a node waits at start for NATS to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for this node's proposals still in the stream to come back.
const DRAIN_PROPOSALS: Duration = Duration::from_secs(2);
/// How long a clean stop waits for the lease holder's last shared snapshot.
const FINAL_SNAPSHOT: Duration = Duration::from_secs(10);
/// How long a request to JetStream (a publish's acknowledgement among them) may take
/// before it is given up and sent again: short, so a message whose server died is
/// resent to another within a leader election, not after it (resending is safe: the
/// stream stores a message id once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node keeps trying to join while NATS cannot answer: longer than a stream
/// leader's election (5-8 s measured here), so a node started during one waits it out.
const JOIN_DEADLINE: Duration = Duration::from_secs(20);
/// The pause between two tries to join.
const JOIN_RETRY: Duration = Duration::from_millis(500);

/// Why a node could not join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach NATS at {urls}: {source}")]
    Connect {
        urls: String,
        source: async_nats::ConnectError,
    },
    #[error("stream {stream}: {problem}")]
    Stream { stream: String, problem: String },
    #[error("reading stream {stream}: {source}")]
    Consume {
        stream: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// NATS did not answer, or answered that it cannot now (no stream leader): worth
    /// asking again, unlike a refusal.
    #[error("{what}: NATS could not answer: {problem}")]
    Unreachable { what: String, problem: String },
}

impl ClusterError {
    /// Whether asking again may succeed.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            ClusterError::Consume { .. } | ClusterError::Unreachable { .. }
        )
    }
}

/// A running node's cluster side, stopped with [`Node::stop`].
pub struct Node {
    hub: Arc<Hub>,
    stop: CancellationToken,
    applier: Option<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    waiting: Arc<proposer::Waiting>,
    snapshots: Arc<snapshots::Snapshots>,
    status: Arc<OrderStatus>,
    sinks: Arc<sinks::SharedSinks>,
}

/// Joins the cluster: connects to NATS, finds or creates the stream, and starts a hub
/// whose inputs are ordered by it, with this node's proposer, applier and sweeper lease.
/// The hub starts from the newest shared snapshot (or empty, from the stream's first
/// message, when there is none) and applies the stream after it; `/readyz` says when it
/// has caught up.
pub async fn start(
    config: Arc<Config>,
    port: u16,
) -> Result<(Arc<Hub>, Pipeline, Node), ClusterError> {
    let node = config.node(port);
    let urls = config.nats.join(",");
    let client = async_nats::ConnectOptions::new()
        .name(format!("actionhub {node}"))
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(&config.nats[..])
        .await
        .map_err(|source| ClusterError::Connect {
            urls: urls.clone(),
            source,
        })?;
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(REQUEST_TIMEOUT);
    let Joined {
        epoch,
        caught_up_at,
        snapshot_store,
        start,
        restored,
        origins,
        reader,
        lease_store,
    } = join_within(&js, &config, JOIN_DEADLINE).await?;

    let (proposals, queued) = mpsc::channel(PROPOSALS_QUEUED);
    let status = Arc::new(OrderStatus::default());
    let order = Order::Shared(SharedOrder {
        node: node.clone(),
        proposals,
        timeout: config.nats_timeout,
        status: status.clone(),
    });
    // The stream is the log (and the shared snapshot the state it started from): the local
    // data directory holds only a copy of the snapshot.
    let restored = Restored { epoch, ..restored };
    let (hub, pipeline) = Hub::start_ordered(config.clone(), Box::new(MemoryOnly), restored, order);

    // Names this process, so outcomes of its proposals come back to it and to no other,
    // a restart of the same node included.
    let origin = format!("{node}/{}", uuid::Uuid::new_v4().simple());
    let waiting = Arc::new(proposer::Waiting::default());
    let stop = CancellationToken::new();
    let proposer = proposer::Proposer {
        js: js.clone(),
        subject: stream::subject(&config),
        origin: origin.clone(),
        waiting: waiting.clone(),
        max_payload: client.server_info().max_payload,
        timeout: config.nats_timeout,
    };
    let snapshots = Arc::new(snapshots::Snapshots::starting_at(start.0));
    let (lease_held, lease_seen) = tokio::sync::watch::channel(false);
    let sinks = Arc::new(sinks::SharedSinks::new(
        &js,
        &config,
        node.clone(),
        lease_seen,
    ));
    let mut tasks = vec![tokio::spawn(proposer.run(queued, stop.clone()))];
    tasks.push(tokio::spawn(lease::run(
        hub.clone(),
        lease_store,
        origin.clone(),
        snapshots.clone(),
        lease_held,
        stop.clone(),
    )));
    let applier = applier::Applier {
        hub: hub.clone(),
        reader,
        origin,
        waiting: waiting.clone(),
        status: status.clone(),
        caught_up_at,
        start,
        snapshots: snapshots.clone(),
        store: snapshot_store,
        origins,
    };
    let runtime = tokio::runtime::Handle::current();
    let applier_stop = stop.clone();
    let applier = std::thread::Builder::new()
        .name("actionhub-applier".into())
        .spawn(move || applier.run(runtime, applier_stop))
        .expect("spawning the applier thread");
    tracing::info!(%node, stream = %config.nats_stream, epoch = %hub.epoch(), caught_up_at, "joined the cluster");
    let node = Node {
        hub: hub.clone(),
        stop,
        applier: Some(applier),
        tasks,
        waiting,
        snapshots,
        status,
        sinks,
    };
    Ok((hub, pipeline, node))
}

/// What a node found in NATS when it joined: where to start and what from.
struct Joined {
    epoch: String,
    /// The stream's last message when the node joined: caught up once applied to there.
    caught_up_at: u64,
    snapshot_store: snapshots::Bucket,
    /// The stream position and time the hub starts at.
    start: (u64, Millis),
    restored: Restored,
    /// Where each origin's messages stand at `start`.
    origins: order::Origins,
    reader: applier::Reader,
    lease_store: async_nats::jetstream::kv::Store,
}

/// [`join`], tried again while NATS cannot answer (a server restarting, a stream leader
/// being elected) for at most `deadline`; a refusal (a stream with other settings, a gap
/// no snapshot covers) is final at once.
async fn join_within(
    js: &async_nats::jetstream::Context,
    config: &Config,
    deadline: Duration,
) -> Result<Joined, ClusterError> {
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        match join(js, config).await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() < give_up => {
                tracing::warn!(error = %e, "NATS did not answer while joining; trying again");
                tokio::time::sleep(JOIN_RETRY).await;
            }
            joined => return joined,
        }
    }
}

/// Finds or creates the stream and the buckets, loads the newest shared snapshot and
/// opens the stream after it.
async fn join(
    js: &async_nats::jetstream::Context,
    config: &Config,
) -> Result<Joined, ClusterError> {
    let (stream, epoch) = stream::ensure(js, config).await?;
    let (first, caught_up_at) = {
        let state = &stream.cached_info().state;
        (state.first_sequence, state.last_sequence)
    };
    let consume_error = |source: Box<dyn std::error::Error + Send + Sync>| ClusterError::Consume {
        stream: config.nats_stream.clone(),
        source,
    };
    let snapshot_store = snapshots::Bucket::new(js, config);
    let loaded = snapshots::load(&snapshot_store, config, &epoch)
        .await
        .map_err(consume_error)?;
    // The stream position and time the hub starts at, and what it starts from.
    let (start, restored, origins) = match loaded {
        Some(loaded) if loaded.stream_sequence + 1 >= first => {
            tracing::info!(stream_sequence = loaded.stream_sequence, seq = %loaded.restored.last_seq, "starting from the shared snapshot");
            (
                (loaded.stream_sequence, loaded.time),
                loaded.restored,
                loaded.origins,
            )
        }
        Some(loaded) => {
            return Err(ClusterError::Stream {
                stream: config.nats_stream.clone(),
                problem: format!(
                    "it starts at message {first}, and the newest shared snapshot holds only up \
                     to message {}: the messages between are lost, so no node can rebuild the \
                     state; delete the stream (a new epoch) to start again",
                    loaded.stream_sequence
                ),
            })
        }
        None if first <= 1 => ((0, 0), Restored::empty(), order::Origins::default()),
        None => {
            return Err(ClusterError::Stream {
                stream: config.nats_stream.clone(),
                problem: format!(
                    "it no longer reaches back to its first message (it starts at {first}) and \
                     no shared snapshot of epoch {epoch} exists to start from"
                ),
            })
        }
    };
    let reader = applier::Reader::open(stream, start.0)
        .await
        .map_err(consume_error)?;
    let lease_store = lease::bucket(js, config).await?;
    Ok(Joined {
        epoch,
        caught_up_at,
        snapshot_store,
        start,
        restored,
        origins,
        reader,
        lease_store,
    })
}

impl Node {
    /// The webhook sinks' shared bucket, for the sinks' registry.
    pub fn sinks(&self) -> Arc<sinks::SharedSinks> {
        self.sinks.clone()
    }

    /// Stops proposing, waits (briefly) for this node's proposals still in the stream to
    /// come back and be answered, then stops reading the stream. The hub's pipeline is
    /// closed after this, by the server.
    pub async fn stop(mut self) {
        let deadline = tokio::time::Instant::now() + DRAIN_PROPOSALS;
        while self.waiting.len() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let applied = self
            .status
            .applied
            .load(std::sync::atomic::Ordering::Acquire);
        self.snapshots.write_final(applied, FINAL_SNAPSHOT).await;
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(applier) = self.applier.take() {
            let _ = tokio::task::spawn_blocking(move || applier.join()).await;
        }
        tracing::debug!(seq = %self.hub.latest_seq(), "left the cluster");
    }
}
