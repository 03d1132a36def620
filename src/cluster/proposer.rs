//! The proposer: this node's inputs into the shared stream, many to a message.
//!
//! A message per input would cap a node near the stream's message rate (about 17,000 a
//! second with three replicas here), so proposals queue while earlier messages are being
//! stored and leave together: up to [`MAX_PUBLISHES_IN_FLIGHT`] messages are unacknowledged
//! at once, and each takes whatever waited meanwhile, up to the server's payload limit.
//! A busy node also sends at most one message per [`MESSAGE_INTERVAL`]: the stream's
//! servers and every node pay per message, not per input, and a stream answers so fast at
//! moderate rates that, unpaced, nearly every input left alone (see the constant).
//!
//! A proposal's way back is filed under its request number before its message is sent;
//! the applier takes it out when the message comes back through the stream. A message is
//! sent again with the same message id until the stream acknowledges it or the node's
//! `nats_timeout` passes (a leader election, say), so the stream stores it once; after
//! that its waiters are forgotten and answered `unavailable`, its outcome unknown, and a
//! skip tells every node to stop waiting for it (see [`super::order`]: a message sent again
//! may be stored after later ones, and every node puts them back in this order). The first
//! message goes alone, acknowledged before any other is sent, so that nothing of this
//! process overtakes it: the nodes take an origin's first message as its start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::message;
use crate::error::{ErrorCode, HubError};
use crate::hub::inputs::{Applied, Proposal};

/// Messages sent and not yet acknowledged by the stream, at most.
const MAX_PUBLISHES_IN_FLIGHT: usize = 32;
/// Proposals in one message, at most.
const MAX_PROPOSALS_PER_MESSAGE: usize = 1024;
/// The wait between two sends of a message the stream did not acknowledge.
const RESEND_DELAY: Duration = Duration::from_millis(250);
/// The least time between the starts of two messages. A proposal that comes later than
/// this after the last message leaves at once; one that comes sooner waits out the rest
/// (rounded up to the timer's millisecond), with whatever else comes meanwhile. Measured
/// with two nodes over three NATS servers at 5,000 events/s (docs/benchmarks.md, "Pacing
/// the proposer's messages"): unpaced, a message carried 1.3 inputs and the three servers
/// took 112% of a core, the two nodes 64%; paced at 1 ms, 5.0 inputs, 76% and 47%, and the
/// publish-to-deliver median under fan-out halved (its p99 fell less, and noisily). The
/// price is about a millisecond at the median for a node taking 1,000 inputs a second,
/// where nearly every one waits.
const MESSAGE_INTERVAL: Duration = Duration::from_millis(1);

/// The ways back of this node's proposals, by request number, until they are applied.
#[derive(Default)]
pub(super) struct Waiting(Mutex<HashMap<u64, oneshot::Sender<Applied>>>);

impl Waiting {
    /// Takes the way back of request `req`, when it is still waited for.
    pub(super) fn take(&self, req: u64) -> Option<oneshot::Sender<Applied>> {
        self.0.lock().remove(&req)
    }

    fn file(&self, req: u64, reply: oneshot::Sender<Applied>) {
        self.0.lock().insert(req, reply);
    }

    pub(super) fn len(&self) -> usize {
        self.0.lock().len()
    }
}

pub(super) struct Proposer {
    pub(super) js: Context,
    pub(super) subject: String,
    /// Names this process in its messages, so outcomes find their way back to it only.
    pub(super) origin: String,
    pub(super) waiting: Arc<Waiting>,
    /// The largest message the NATS server takes.
    pub(super) max_payload: usize,
    pub(super) timeout: Duration,
}

impl Proposer {
    /// Sends proposals until `stop`, or until no one can propose any more.
    pub(super) async fn run(
        self,
        mut proposals: mpsc::Receiver<Proposal>,
        stop: CancellationToken,
    ) {
        let this = Arc::new(self);
        let sending = Arc::new(Semaphore::new(MAX_PUBLISHES_IN_FLIGHT));
        let mut next_req = 1u64;
        let mut carried: Option<Proposal> = None;
        let mut opened = false;
        // When the last message started to leave (long ago, for the first).
        let mut last_sent: Option<Instant> = None;
        loop {
            // Room first: while every slot is busy, proposals gather in the queue.
            let Ok(slot) = sending.clone().acquire_owned().await else {
                return;
            };
            let first = match carried.take() {
                Some(first) => first,
                None => tokio::select! {
                    _ = stop.cancelled() => return,
                    next = proposals.recv() => match next {
                        Some(first) => first,
                        None => return,
                    },
                },
            };
            if let Some(next_due) = last_sent.map(|sent| sent + MESSAGE_INTERVAL) {
                if Instant::now() < next_due {
                    tokio::time::sleep_until(next_due).await;
                }
            }
            last_sent = Some(Instant::now());
            let mut text = message::opening(&this.origin);
            let mut reqs = Vec::new();
            let mut next = Some(first);
            while let Some(proposal) = next.take() {
                let req = next_req;
                let encoded = message::proposal(req, &proposal.input);
                let room = this.max_payload.saturating_sub(message::CLOSING.len() + 1);
                if text.len() + 1 + encoded.len() > room {
                    if reqs.is_empty() {
                        let refusal = too_large(encoded.len(), this.max_payload);
                        let _ = proposal
                            .reply
                            .send(Applied::refused(&proposal.input, refusal));
                        break;
                    }
                    // It starts the next message.
                    carried = Some(proposal);
                    break;
                }
                next_req += 1;
                if !reqs.is_empty() {
                    text.push(b',');
                }
                text.extend(encoded);
                this.waiting.file(req, proposal.reply);
                reqs.push(req);
                if reqs.len() < MAX_PROPOSALS_PER_MESSAGE {
                    next = proposals.try_recv().ok();
                }
            }
            if reqs.is_empty() {
                continue;
            }
            text.extend_from_slice(message::CLOSING);
            let id = format!("{}-{}", this.origin, reqs[0]);
            let payload = Bytes::from(text);
            // Sent here, in the order proposed, so a connection's pipelined publishes
            // reach the stream in their order; only the acknowledgement is waited apart.
            let first = this.publish(&id, payload.clone()).await;
            let sender = this.clone();
            let confirmed = async move {
                sender.confirm(first, id, payload, &reqs).await;
                drop(slot);
            };
            if opened {
                tokio::spawn(confirmed);
            } else {
                confirmed.await;
                opened = true;
            }
        }
    }

    async fn publish(
        &self,
        id: &str,
        payload: Bytes,
    ) -> Result<async_nats::jetstream::context::PublishAckFuture, String> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        self.js
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
            .map_err(|e| e.to_string())
    }

    /// Waits for the stream to acknowledge a message, sending it again (same message id,
    /// so it is stored once) until the timeout passes; then its waiters are forgotten
    /// (dropping their ways back answers them `unavailable`).
    ///
    /// A message sent again may be stored after messages proposed later: a connection's
    /// pipelined publishes keep their order except across such a fault.
    async fn confirm(
        &self,
        first: Result<async_nats::jetstream::context::PublishAckFuture, String>,
        id: String,
        payload: Bytes,
        reqs: &[u64],
    ) {
        let deadline = Instant::now() + self.timeout;
        let mut first = Some(first);
        loop {
            let attempt = match first.take() {
                Some(sent) => sent,
                None => self.publish(&id, payload.clone()).await,
            };
            let acked = match attempt {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match acked {
                Ok(()) => return,
                Err(e) if Instant::now() + RESEND_DELAY < deadline => {
                    tracing::debug!(error = %e, message = %id, "the stream did not take a message; sending it again");
                    tokio::time::sleep(RESEND_DELAY).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, message = %id, proposals = reqs.len(), "the stream did not take a message within the timeout; its publishers are answered `unavailable`");
                    for req in reqs {
                        drop(self.waiting.take(*req));
                    }
                    self.skip(reqs).await;
                    return;
                }
            }
        }
    }

    /// Tells the nodes that `reqs` will not come (or, if they still do, come late), so
    /// they stop holding this origin's later messages for them. Sent again (one id, so
    /// stored once) until stored or the timeout passes once more; should it never be, the
    /// nodes stop waiting after `order::HOLD` of stream time.
    async fn skip(&self, reqs: &[u64]) {
        let (Some(&first), Some(&last)) = (reqs.first(), reqs.last()) else {
            return;
        };
        let id = format!("{}-skip-{first}", self.origin);
        let payload = Bytes::from(message::skip(&self.origin, first, last));
        let deadline = Instant::now() + self.timeout;
        loop {
            let sent = match self.publish(&id, payload.clone()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => return,
                Err(_) if Instant::now() + RESEND_DELAY < deadline => {
                    tokio::time::sleep(RESEND_DELAY).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, first, last, "the skip of the requests given up was not stored; the nodes stop waiting for them after the hold");
                    return;
                }
            }
        }
    }
}

fn too_large(bytes: usize, max_payload: usize) -> HubError {
    HubError::new(
        ErrorCode::TooLarge,
        format!(
            "this request's events take {bytes} bytes as a stream message, more than the NATS \
             server's max_payload of {max_payload}; send fewer events per request"
        ),
    )
}
