//! The applier: the shared stream read back in its order and applied, on every node.
//!
//! One thread reads the stream through an ordered consumer (which recreates itself after
//! a gap or a lost server; and which this module replaces when it fails, ends, or goes
//! quiet while the stream grew, see [`Reader`]) and hands each message's inputs to
//! [`Hub::apply_ordered`], at
//! the message's time: the time the stream stored it, never this node's clock, and never
//! earlier than the message before it, so every node decides at the same times. Inputs
//! this process proposed are answered through the ways back the proposer filed.
//!
//! A message that is not one (nothing a node wrote) is skipped with an error logged, by
//! every node alike.
//!
//! Between two messages the applier takes the shared snapshot the lease holder asked for
//! (see [`super::snapshots`]). A message that does not follow the last one applied means
//! the stream lost what this node still needed (purged below a snapshot, or aged out): the
//! applier stops there and the node reports not ready, as nothing could decide the
//! missing messages again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{stream, Message};
use futures_util::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Millis;
use crate::cluster::message;
use crate::cluster::order::{Origins, Ready};
use crate::cluster::proposer::Waiting;
use crate::cluster::snapshots::{self, Capture, Snapshots};
use crate::hub::inputs::OrderStatus;
use crate::hub::Hub;

/// The longest pull the consumer waits on. The consumer's heartbeat is half of it, and two
/// missed heartbeats make it start again elsewhere: with 3 s, a consumer lost with its
/// server is noticed in about 3 s instead of the client's default 30.
const PULL_EXPIRES: Duration = Duration::from_secs(3);
/// How long the reader waits for a message before it asks whether the stream has more.
const QUIET: Duration = PULL_EXPIRES;

/// The stream read in order from a sequence on, through an ordered consumer that is
/// started again when it stalls.
///
/// After a stream leader dies, a consumer can stay alive (its heartbeats keep coming, so
/// the client library sees nothing wrong) yet deliver nothing for 20 s and more while the
/// stream grows (seen in the NATS-server-kill test under load). So when no message has
/// come for [`QUIET`], the reader asks the stream for its last sequence, and when that is
/// past what was applied, it drops the consumer and starts a new one after it.
pub(super) struct Reader {
    stream: stream::Stream,
    messages: Ordered,
}

/// What the reader came back with.
enum Next {
    Message(Box<Message>),
    /// Woken between messages (a snapshot is asked for).
    Woken,
    Stopped,
}

impl Reader {
    /// Reads `stream` from the message after `applied` (the first when 0).
    pub(super) async fn open(
        stream: stream::Stream,
        applied: u64,
    ) -> Result<Reader, async_nats::Error> {
        let messages = Self::consume(&stream, applied).await?;
        Ok(Reader { stream, messages })
    }

    async fn consume(stream: &stream::Stream, applied: u64) -> Result<Ordered, async_nats::Error> {
        let deliver_policy = match applied {
            0 => DeliverPolicy::All,
            applied => DeliverPolicy::ByStartSequence {
                start_sequence: applied + 1,
            },
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy,
                max_expires: PULL_EXPIRES,
                ..Default::default()
            })
            .await?;
        Ok(consumer.messages().await?)
    }

    /// The next message after `applied`, or what came first: `stop`, or `wake`.
    async fn next(&mut self, applied: u64, stop: &CancellationToken, wake: &Notify) -> Next {
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return Next::Stopped,
                _ = wake.notified() => return Next::Woken,
                next = tokio::time::timeout(QUIET, self.messages.next()) => next,
            };
            match next {
                Ok(Some(Ok(message))) => return Next::Message(Box::new(message)),
                // What the library could not mend itself (it recreates the consumer after
                // a gap or missed heartbeats without saying so): polled again, a failed
                // consumer can fail at once again, so it is replaced instead.
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, applied, "reading the shared stream failed; starting a new consumer");
                    self.restart(applied, stop).await;
                }
                Ok(None) => {
                    tracing::warn!(
                        applied,
                        "the shared stream's consumer ended; starting a new one"
                    );
                    self.restart(applied, stop).await;
                }
                Err(_quiet) => match self.stream.info().await {
                    Ok(info) if info.state.last_sequence > applied => {
                        let last = info.state.last_sequence;
                        tracing::warn!(applied, last, "the shared stream's consumer went quiet behind the stream; starting a new one");
                        self.restart(applied, stop).await;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "the shared stream's state is not known now");
                    }
                },
            }
        }
    }

    /// Replaces the consumer with one that starts after `applied`, trying again (every
    /// second) until it can or `stop` is cancelled. The old one, an in-memory consumer of
    /// one replica, is removed by the server after 30 s without a pull.
    async fn restart(&mut self, applied: u64, stop: &CancellationToken) {
        while !stop.is_cancelled() {
            match Self::consume(&self.stream, applied).await {
                Ok(messages) => {
                    self.messages = messages;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, applied, "starting a new consumer of the shared stream failed; trying again");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

pub(super) struct Applier {
    pub(super) hub: Arc<Hub>,
    pub(super) reader: Reader,
    /// This process's name in messages (see `Proposer::origin`).
    pub(super) origin: String,
    pub(super) waiting: Arc<Waiting>,
    pub(super) status: Arc<OrderStatus>,
    /// The stream's last sequence when the node started: applied, it is caught up.
    pub(super) caught_up_at: u64,
    /// The last stream message the hub's starting state includes (0 for none: it starts
    /// empty, before the first), and the time the applier had reached there.
    pub(super) start: (u64, Millis),
    pub(super) snapshots: Arc<Snapshots>,
    pub(super) store: snapshots::Bucket,
    /// Where each origin's messages stand (see [`super::order`]).
    pub(super) origins: Origins,
}

impl Applier {
    /// Applies messages until `stop` or until the hub's pipeline closes. Runs on its own
    /// thread: a sweep's tick is CPU work that must not sit on an async worker.
    pub(super) fn run(mut self, runtime: Handle, stop: CancellationToken) {
        let (start, mut last_time) = self.start;
        self.status.applied.store(start, Ordering::Release);
        if self.caught_up_at <= start {
            self.status.caught_up.store(true, Ordering::Release);
        }
        loop {
            let applied = self.status.applied.load(Ordering::Acquire);
            // Between two messages: the one place where state, history and the stream
            // position agree, so the one place a shared snapshot is taken.
            if self.snapshots.take_wanted(applied) {
                let capture = Capture::take(&self.hub, applied, last_time, &self.origins);
                runtime.spawn(snapshots::write(
                    self.hub.clone(),
                    self.store.clone(),
                    self.reader.stream.clone(),
                    self.snapshots.clone(),
                    capture,
                ));
            }
            let wake = &self.snapshots.wake;
            let message = match runtime.block_on(self.reader.next(applied, &stop, wake)) {
                Next::Message(message) => message,
                Next::Woken => continue,
                Next::Stopped => return,
            };
            let Ok(info) = message.info() else {
                tracing::error!("a stream message without its stream sequence; skipped");
                continue;
            };
            let (sequence, pending) = (info.stream_sequence, info.pending);
            if sequence <= applied {
                continue;
            }
            if sequence != applied + 1 {
                // Messages this node never applied are gone (purged after a shared
                // snapshot, or past the stream's age): nothing can decide them now.
                tracing::error!(
                    applied,
                    next = sequence,
                    "the shared stream no longer holds the messages after the last one this node applied; it stops applying and is not ready: restart it to start from the newest shared snapshot"
                );
                self.status.caught_up.store(false, Ordering::Release);
                return;
            }
            // The stream's clock, kept from going back (a new leader's clock may be behind).
            last_time = last_time.max(info.published.timestamp_millis());
            let ready = match message::read(&message.payload) {
                Ok(read) => {
                    let ready = match read.reqs {
                        Some(reqs) => {
                            let ready = self.origins.arrive(
                                &read.origin,
                                reqs,
                                &message.payload,
                                last_time,
                            );
                            if !ready.contains(&Ready::Arrived) {
                                tracing::debug!(sequence, origin = %read.origin, first = reqs.0, "a message came before its origin's earlier ones; held");
                            }
                            ready
                        }
                        None => vec![Ready::Arrived],
                    };
                    let mut arrived = Some(read);
                    ready
                        .into_iter()
                        .filter_map(|ready| match ready {
                            Ready::Arrived => arrived.take(),
                            // Read once already; only a snapshot of another release could
                            // hold one this release cannot read.
                            Ready::Held(text) => match message::read(text.as_bytes()) {
                                Ok(held) => Some(held),
                                Err(e) => {
                                    tracing::error!(error = %e, sequence, "a held message that cannot be read; skipped");
                                    None
                                }
                            },
                        })
                        .collect()
                }
                Err(e) => {
                    tracing::error!(error = %e, sequence, "a stream message that no node wrote; skipped");
                    Vec::new()
                }
            };
            for read in ready {
                if !self.apply(&runtime, read, last_time) {
                    return;
                }
            }
            // Nothing compacts a cluster node's log (the stream is its log): what was
            // forgotten is taken so it does not pile up, and the next shared snapshot
            // purges the stream below it.
            if self.hub.has_forgotten() {
                self.hub.take_forgotten();
                self.snapshots.forgot();
            }
            self.status.applied.store(sequence, Ordering::Release);
            self.status.lag.store(pending, Ordering::Release);
            let held = self.origins.held() as u64;
            self.status.held.store(held, Ordering::Release);
            if sequence >= self.caught_up_at && !self.status.caught_up.swap(true, Ordering::AcqRel)
            {
                tracing::info!(sequence, seq = %self.hub.latest_seq(), "caught up with the shared stream: ready");
            }
        }
    }

    /// Applies one message's inputs at `time`, answering those this process proposed;
    /// false once the hub's pipeline is closed.
    fn apply(&self, runtime: &Handle, read: message::Message, time: Millis) -> bool {
        if read.proposals.is_empty() {
            return true;
        }
        let ours = read.origin == self.origin;
        let inputs = read
            .proposals
            .into_iter()
            .map(|(req, input)| {
                let reply = if ours { self.waiting.take(req) } else { None };
                (input, reply)
            })
            .collect();
        runtime.block_on(self.hub.apply_ordered(inputs, time))
    }
}
