//! The applier: the shared stream read back in its order and applied, on every node.
//!
//! One thread reads the stream through an ordered consumer (which recreates itself after
//! a gap or a lost server) and hands each message's inputs to [`Hub::apply_ordered`], at
//! the message's time: the time the stream stored it, never this node's clock, and never
//! earlier than the message before it, so every node decides at the same times. Inputs
//! this process proposed are answered through the ways back the proposer filed.
//!
//! A message that is not one (nothing a node wrote) is skipped with an error logged, by
//! every node alike.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::jetstream::consumer::pull::Ordered;
use futures_util::StreamExt;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::cluster::message;
use crate::cluster::proposer::Waiting;
use crate::hub::inputs::OrderStatus;
use crate::hub::Hub;
use crate::ingest::event::Millis;

pub(super) struct Applier {
    pub(super) hub: Arc<Hub>,
    pub(super) messages: Ordered,
    /// This process's name in messages (see `Proposer::origin`).
    pub(super) origin: String,
    pub(super) waiting: Arc<Waiting>,
    pub(super) status: Arc<OrderStatus>,
    /// The stream's last sequence when the node started: applied, it is caught up.
    pub(super) caught_up_at: u64,
}

impl Applier {
    /// Applies messages until `stop` or until the hub's pipeline closes. Runs on its own
    /// thread: a sweep's tick is CPU work that must not sit on an async worker.
    pub(super) fn run(mut self, runtime: Handle, stop: CancellationToken) {
        let mut last_time: Millis = 0;
        if self.caught_up_at == 0 {
            self.status.caught_up.store(true, Ordering::Release);
        }
        loop {
            let next = runtime.block_on(async {
                tokio::select! {
                    _ = stop.cancelled() => None,
                    next = self.messages.next() => next,
                }
            });
            let message = match next {
                None => return,
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "reading the shared stream failed; the consumer starts again where it was");
                    continue;
                }
            };
            let Ok(info) = message.info() else {
                tracing::error!("a stream message without its stream sequence; skipped");
                continue;
            };
            let (sequence, pending) = (info.stream_sequence, info.pending);
            // The stream's clock, kept from going back (a new leader's clock may be behind).
            last_time = last_time.max(info.published.timestamp_millis());
            let inputs = match message::read(&message.payload) {
                Ok(read) => {
                    let ours = read.origin == self.origin;
                    read.proposals
                        .into_iter()
                        .map(|(req, input)| {
                            let reply = if ours { self.waiting.take(req) } else { None };
                            (input, reply)
                        })
                        .collect()
                }
                Err(e) => {
                    tracing::error!(error = %e, sequence, "a stream message that no node wrote; skipped");
                    Vec::new()
                }
            };
            if !runtime.block_on(self.hub.apply_ordered(inputs, last_time)) {
                return;
            }
            self.status.applied.store(sequence, Ordering::Release);
            self.status.lag.store(pending, Ordering::Release);
            if sequence >= self.caught_up_at && !self.status.caught_up.swap(true, Ordering::AcqRel)
            {
                tracing::info!(sequence, seq = %self.hub.latest_seq(), "caught up with the shared stream: ready");
            }
        }
    }
}
