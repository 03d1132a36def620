//! `since` replays and snapshots, sent a chunk at a time as the outbox has room, so a
//! reader paces them and they never overflow its queue; then the subscription goes live.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use super::connection::{Connection, Ending};
use crate::hub::fanout::{selects, GoLive};
use crate::hub::retention::Record;
use crate::ids::Seq;
use crate::ingest::protocol::{close, SubscribeRequest};
use crate::ingest::wire::WireFrame;

/// Replayed records examined per step, and sent per step at most (or a quarter of a
/// smaller outbox); keeps one replay from starving the connection's live traffic.
const REPLAY_SCAN_BUDGET: usize = 4096;

const REPLAY_CHUNK: usize = 256;

/// Frames one replay step sends at most.
pub(super) fn replay_chunk(capacity: usize) -> usize {
    (capacity / 4).clamp(1, REPLAY_CHUNK)
}

/// The room in the outbox a replay step waits for: its chunk, and as much again for the
/// last stretch that going live queues at once (or for the connection's live events).
/// So a replay is paced by its reader and never overflows the outbox itself.
pub(super) fn replay_room(capacity: usize) -> usize {
    (2 * replay_chunk(capacity)).min(capacity)
}

/// Snapshot frames (up to 1000 actions, about half a MiB each) queued at most at once: a
/// snapshot waits until its earlier frames have nearly left, so what it holds in memory
/// is a few frames, not the whole state.
pub(super) const SNAPSHOT_FRAMES_QUEUED: usize = 2;

/// A `since` replay in progress, or a snapshot and the replay after it.
pub(super) struct Replay {
    pub(super) req: SubscribeRequest,
    /// The last seq examined.
    pub(super) cursor: Seq,
    /// A snapshot subscription's snapshot, sent ahead of its replay.
    pub(super) snapshot: Option<Snapshot>,
}

/// A snapshot on its way to the connection.
pub(super) enum Snapshot {
    /// Being built on a blocking thread.
    Building(oneshot::Receiver<Vec<WireFrame>>),
    /// Built; its frames leave a few at a time, as the outbox drains.
    Ready(VecDeque<WireFrame>),
}

impl Replay {
    pub(super) fn building(&self) -> bool {
        matches!(self.snapshot, Some(Snapshot::Building(_)))
    }
}

/// Completes when the first replay's snapshot is built; never when it is not building.
pub(super) async fn snapshot_built(
    replays: &mut VecDeque<Replay>,
) -> Result<Vec<WireFrame>, oneshot::error::RecvError> {
    match replays.front_mut().and_then(|r| r.snapshot.as_mut()) {
        Some(Snapshot::Building(built)) => built.await,
        _ => std::future::pending().await,
    }
}

impl Connection {
    /// The first replay's snapshot is built: its frames go out ahead of the replay.
    pub(super) fn snapshot_ready(
        &mut self,
        built: Result<Vec<WireFrame>, oneshot::error::RecvError>,
    ) -> Result<(), Ending> {
        let Ok(frames) = built else {
            // The build's thread failed: the hub cannot keep its promise to this client.
            return Err(Ending::Close(
                close::INTERNAL,
                "the snapshot could not be built",
            ));
        };
        if let Some(replay) = self.replays.front_mut() {
            replay.snapshot = Some(Snapshot::Ready(frames.into()));
        }
        Ok(())
    }

    /// Sends the next frames of the oldest replay: its snapshot's, then a chunk of the
    /// history; when it has caught up with the fan-out, makes its subscription live. Runs
    /// only when the outbox has room ([`replay_room`], or for a snapshot nearly all of it).
    pub(super) fn step_replay(&mut self) -> Result<(), Ending> {
        let hub = self.hub.clone();
        let chunk = replay_chunk(hub.config().queue_capacity);
        let Some(replay) = self.replays.front_mut() else {
            return Ok(());
        };
        if let Some(Snapshot::Ready(frames)) = &mut replay.snapshot {
            let next: Vec<WireFrame> = frames
                .drain(..SNAPSHOT_FRAMES_QUEUED.min(frames.len()))
                .collect();
            if frames.is_empty() {
                replay.snapshot = None;
            }
            return self.write(next);
        }
        let (topics, filter) = (replay.req.topics, replay.req.filter.clone());
        let viewer = self.principal.token().map(|grant| grant.customer);
        let keep = |r: &Record| selects(topics, &filter, r, hub.state());
        let fell_behind = || {
            Ending::Close(
                close::SLOW_CONSUMER,
                "replay fell behind the retained history",
            )
        };
        let target = hub.fanout().watermark();
        let cursor = replay.cursor;
        let scanned = hub.with_history(|history| {
            history.covers(cursor).then(|| {
                let (records, last) = history.scan(cursor, target, REPLAY_SCAN_BUDGET, chunk, keep);
                (records, last, history.count_between(last, target) < chunk)
            })
        });
        let Some((records, last, caught_up)) = scanned else {
            return Err(fell_behind());
        };
        replay.cursor = last;
        let (sub, cursor) = (replay.req.sub.clone(), replay.cursor);
        if replay.req.once && !records.is_empty() {
            hub.fanout().unsubscribe(self.id, &sub);
            self.replays.retain(|r| r.req.sub != sub);
            return self.write(records[0].frame_for(viewer));
        }
        // Queued before the subscription goes live, so before any live event of it.
        self.write(records.iter().filter_map(|r| r.frame_for(viewer)))?;
        if !caught_up {
            return Ok(());
        }
        self.replays.pop_front();
        let went = hub.fanout().go_live(self.id, &sub, |watermark| {
            hub.with_history(|history| {
                history.covers(cursor).then(|| {
                    let (tail, _) = history.scan(cursor, watermark, usize::MAX, usize::MAX, keep);
                    tail.iter().filter_map(|r| r.frame_for(viewer)).collect()
                })
            })
        });
        match went {
            GoLive::FellBehind => Err(fell_behind()),
            GoLive::Live | GoLive::Gone => {
                self.outbox.flush();
                Ok(())
            }
        }
    }
}
