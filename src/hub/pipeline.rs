//! The pipeline: the thread behind the sequencer.
//!
//! It takes a pass of batches in seq order, appends them to the [`Log`], fans them out,
//! and only then completes the publishes, so an acknowledged event is logged, queued to
//! every matching live subscription, and visible to every later read. Then it writes each
//! receiving connection's outbox once for the whole pass. Under load it holds those writes
//! back while more work is already waiting (up to [`MAX_WRITE_DELAY`]), so several passes
//! leave in one write. The writes never wait for a socket (see [`crate::edge::outbox`]).
//!
//! A full disk is waited out here: the step that failed is retried with a growing delay
//! while the hub refuses publishes (see `LogStatus::is_full`); any other log error aborts.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::hub::fanout::Written;
use crate::hub::retention::Record;
use crate::hub::state::AdminOp;
use crate::hub::Hub;
use crate::ids::Seq;
use crate::store::log::{is_disk_full, Log};

/// How often an idle pipeline calls [`Log::tick`].
const PIPELINE_TICK: Duration = Duration::from_millis(10);
/// Longest the pipeline holds back a delivery's write while more work keeps coming, to
/// write a connection's frames of several passes at once. An idle pipeline writes at once.
const MAX_WRITE_DELAY: Duration = Duration::from_millis(5);

/// Work for the pipeline thread.
pub(super) struct Batch {
    pub(super) records: Vec<Arc<Record>>,
    /// A change that is not an event; such a batch holds no records.
    pub(super) admin: Option<Arc<AdminOp>>,
    pub(super) done: Option<oneshot::Sender<()>>,
    /// Room in the pipeline, given back once the pass that takes this batch is through
    /// (the applier's room for a whole stream message, see [`Hub::apply_ordered`]).
    pub(super) room: Option<OwnedSemaphorePermit>,
    /// When it was sent, for the publish-to-acknowledgement latency.
    pub(super) sent_at: Instant,
}

/// The pipeline thread, joined at shutdown.
pub struct Pipeline(pub(super) Option<JoinHandle<()>>);

impl Hub {
    /// The pipeline thread's loop: takes a pass of batches in seq order, appends them to
    /// the log, fans them out, completes the publishes, then writes the receiving
    /// connections' outboxes (held back up to [`MAX_WRITE_DELAY`] while more work waits).
    pub(super) fn run_pipeline(&self, rx: std_mpsc::Receiver<Batch>, mut log: Box<dyn Log>) {
        let log = &mut *log;
        let mut records: Vec<Arc<Record>> = Vec::new();
        let mut dones = Vec::new();
        let mut rooms = Vec::new();
        let mut written = Written::default();
        // When the oldest delivery not yet written was queued.
        let mut holding_since: Option<Instant> = None;
        // The newest seq handed to the log.
        let mut appended = self.log_status.durable();
        // While the disk is full and nothing waits to be logged: when to see again whether
        // it has room, and how long to wait after that.
        let mut full_retry = FullRetry::default();
        // Set when the hub stopped while the disk was full: nothing more may be logged
        // after what was not, so everything still queued is answered `unavailable`.
        let mut abandoned = false;
        loop {
            // The others run first: on a busy core they are what brings the next pass, and
            // a pass found waiting needs no wake-up.
            std::thread::yield_now();
            let waiting = match rx.try_recv() {
                Ok(batch) => Some(batch),
                Err(std_mpsc::TryRecvError::Empty) => None,
                Err(std_mpsc::TryRecvError::Disconnected) => break,
            };
            // Under load, writes wait for the next pass (up to MAX_WRITE_DELAY), so that a
            // connection's frames of several passes leave in one write.
            let overdue = holding_since.is_some_and(|since| since.elapsed() >= MAX_WRITE_DELAY);
            if waiting.is_none() || overdue {
                written.write_all();
                holding_since = None;
            }
            let first = match waiting {
                Some(batch) => batch,
                // Wake up now and then even when idle, so the log can sync on a timer.
                None => match rx.recv_timeout(PIPELINE_TICK) {
                    Ok(batch) => batch,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        if abandoned {
                            continue;
                        }
                        if self.log_status.is_full() {
                            // Started on a full disk: see now and then whether it has room.
                            if full_retry.due() {
                                match log.prepare() {
                                    Ok(()) => {
                                        self.log_writable();
                                        full_retry = FullRetry::default();
                                    }
                                    Err(e) => self.log_full_or_abort("preparing the log", e),
                                }
                            }
                            continue;
                        }
                        let synced =
                            self.log_or_wait("syncing the log", log, &mut written, |log| {
                                log.tick()?;
                                self.synced_if_wanted(log, appended)
                            });
                        abandoned = !synced;
                        self.log_status.compact_if_wanted(log);
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut logged = 0;
            // The pass's first batch is its oldest; its wait is the pass's longest.
            let oldest = first.sent_at;
            let appending = Instant::now();
            for batch in take_pass(first, &rx) {
                records.extend(batch.records);
                dones.extend(batch.done);
                rooms.extend(batch.room);
                if let Some(op) = batch.admin {
                    // Logged after the events committed before it and before those after.
                    abandoned = abandoned
                        || !self.log_or_wait("appending to the log", log, &mut written, |log| {
                            log.append(&records[logged..])
                        })
                        || !self.log_or_wait("appending to the log", log, &mut written, |log| {
                            log.append_admin(&op)
                        });
                    logged = records.len();
                }
            }
            abandoned = abandoned
                || !self.log_or_wait("appending to the log", log, &mut written, |log| {
                    log.append(&records[logged..])
                });
            if abandoned {
                // Not logged, so neither delivered nor acknowledged: dropping the
                // completions answers the publishers `unavailable`.
                records.clear();
                dones.clear();
                rooms.clear();
                continue;
            }
            let metrics = self.metrics();
            if !records.is_empty() {
                metrics
                    .log_append_seconds
                    .observe(appending.elapsed().as_secs_f64());
                metrics.pipeline_pass_events.observe(records.len() as f64);
            }
            if let Some(last) = records.last() {
                appended = last.seq;
            }
            abandoned = !self.log_or_wait("syncing the log", log, &mut written, |log| {
                self.synced_if_wanted(log, appended)
            });
            // Between appends, so the rewrite never races one (see `Log::compact`).
            self.log_status.compact_if_wanted(log);
            self.fanout.deliver(&records, &self.state, &mut written);
            records.clear();
            if !dones.is_empty() {
                metrics
                    .publish_ack_seconds
                    .observe(oldest.elapsed().as_secs_f64());
            }
            for done in dones.drain(..) {
                let _ = done.send(());
            }
            rooms.clear();
            if !written.is_empty() {
                holding_since.get_or_insert_with(Instant::now);
            }
        }
        written.write_all();
        if abandoned {
            // Seqs were handed out that the log does not hold: the reservation on disk
            // stays ahead of them (a clean flush would bring it back to the last logged).
            if let Err(e) = log.sync() {
                tracing::error!(error = %e, "syncing the log at shutdown failed");
            }
        } else {
            match log.flush() {
                Ok(()) => self.log_status.mark_durable(appended),
                Err(e) => tracing::error!(error = %e, "flushing the log at shutdown failed"),
            }
        }
        self.log_status.close();
    }

    /// [`LogStatus::sync_if_wanted`](crate::store::log::LogStatus::sync_if_wanted),
    /// timing the sync when there was one.
    fn synced_if_wanted(&self, log: &mut dyn Log, appended: Seq) -> std::io::Result<()> {
        let (before, started) = (self.log_status.durable(), Instant::now());
        self.log_status.sync_if_wanted(log, appended)?;
        if self.log_status.durable() != before {
            let seconds = started.elapsed().as_secs_f64();
            self.metrics().log_sync_seconds.observe(seconds);
        }
        Ok(())
    }

    /// Runs `step` on the log until it succeeds. A full disk is waited out, retrying with a
    /// growing delay while the hub refuses publishes; any other error aborts. Returns false
    /// when the hub is shutting down while the disk is still full: `step` did not happen.
    fn log_or_wait(
        &self,
        what: &str,
        log: &mut dyn Log,
        written: &mut Written,
        mut step: impl FnMut(&mut dyn Log) -> std::io::Result<()>,
    ) -> bool {
        let mut retry = FullRetry::default();
        loop {
            match step(log) {
                Ok(()) => {
                    self.log_writable();
                    return true;
                }
                Err(e) => self.log_full_or_abort(what, e),
            }
            // What was delivered before the disk filled must not wait for it.
            written.write_all();
            while !retry.due() {
                if self.in_flight.is_closed() {
                    return false;
                }
                std::thread::sleep(PIPELINE_TICK);
            }
        }
    }

    /// The disk is full: publishes are refused until the log can write again (said loudly
    /// once). Any other error aborts.
    pub fn log_full_or_abort(&self, what: &str, e: std::io::Error) {
        if !is_disk_full(&e) {
            or_abort(what, Err(e));
            return;
        }
        if self.log_status.set_full(true) {
            self.metrics.log_writable.set(0);
            tracing::error!(
                error = %e,
                "{what} failed: THE DISK IS FULL. The hub is read-only: publishes are refused \
                 with `unavailable` until space is freed, then accepted again by themselves; \
                 reads and subscriptions keep working"
            );
        }
    }

    /// The log wrote again after a full disk: publishes are accepted again.
    fn log_writable(&self) {
        if self.log_status.set_full(false) {
            self.metrics.log_writable.set(1);
            tracing::info!("the disk has room again: publishes are accepted");
        }
    }
}

impl Pipeline {
    /// Waits for the pipeline thread to finish its queue (after [`Hub::close_pipeline`]).
    pub fn join(mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// The hub cannot acknowledge what it could not log, nor go on as if it had.
fn or_abort(what: &str, result: std::io::Result<()>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "{what} failed; the hub cannot go on safely");
        std::process::abort();
    }
}

/// When the pipeline next tries a log that found the disk full: after 100 ms, doubling up
/// to 5 s, so a freed disk is noticed soon and a full one is not hammered.
struct FullRetry {
    at: Instant,
    delay: Duration,
}

impl Default for FullRetry {
    fn default() -> Self {
        FullRetry {
            at: Instant::now() + FIRST_FULL_RETRY,
            delay: FIRST_FULL_RETRY,
        }
    }
}

impl FullRetry {
    /// Whether it is time to try again; if so, the next try waits twice as long.
    fn due(&mut self) -> bool {
        if Instant::now() < self.at {
            return false;
        }
        self.delay = (self.delay * 2).min(MAX_FULL_RETRY);
        self.at = Instant::now() + self.delay;
        true
    }
}

const FIRST_FULL_RETRY: Duration = Duration::from_millis(100);
const MAX_FULL_RETRY: Duration = Duration::from_secs(5);

/// Records one pipeline pass takes at most (one log append and one fan-out pass serve
/// them all); a pass may end a batch beyond it, never split one.
const MAX_PASS_RECORDS: usize = 4096;

/// `first` and whatever else is already waiting, in order, up to [`MAX_PASS_RECORDS`]:
/// a batch is taken off the queue only when this pass will handle it.
fn take_pass(first: Batch, rx: &std_mpsc::Receiver<Batch>) -> Vec<Batch> {
    let mut records = first.records.len();
    let mut pass = vec![first];
    while records < MAX_PASS_RECORDS {
        let Ok(batch) = rx.try_recv() else { break };
        records += batch.records.len();
        pass.push(batch);
    }
    pass
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first_seq: u64, len: u64) -> Batch {
        Batch {
            records: (first_seq..first_seq + len)
                .map(|seq| Arc::new(Record::erased(Seq(seq), 0)))
                .collect(),
            admin: None,
            done: None,
            room: None,
            sent_at: Instant::now(),
        }
    }

    /// Every queued batch is handled by some pass, in order, none dropped at a pass's end.
    #[test]
    fn passes_take_every_queued_batch_in_order() {
        let (tx, rx) = std_mpsc::channel();
        for i in 0..10 {
            tx.send(batch(i * 1000 + 1, 1000)).unwrap();
        }
        drop(tx);
        let mut seen = Vec::new();
        let mut passes = 0;
        while let Ok(first) = rx.recv() {
            let pass = take_pass(first, &rx);
            let records: usize = pass.iter().map(|b| b.records.len()).sum();
            assert!(
                records <= MAX_PASS_RECORDS + 1000,
                "a pass ends at its limit"
            );
            seen.extend(pass.into_iter().flat_map(|b| b.records).map(|r| r.seq.0));
            passes += 1;
        }
        assert_eq!(seen, (1..=10_000).collect::<Vec<_>>());
        assert!(passes >= 2, "the limit splits the queue into passes");
    }

    /// The room an applier takes for a stream message comes back once the pipeline is
    /// through it: messages that together need far more room than there is all apply.
    #[tokio::test]
    async fn the_room_taken_for_ordered_inputs_comes_back() {
        use crate::error::{ErrorCode, HubError};
        use crate::hub::inputs::Input;
        let data = tempfile::tempdir().unwrap();
        let config = Arc::new(crate::Config::ephemeral(data.path()));
        let (hub, pipeline) = Hub::start(config, Box::new(crate::store::log::MemoryOnly));
        // Each message takes more than half of the room, so none can start until the one
        // before has given its room back.
        let weight = super::super::MAX_IN_FLIGHT_EVENTS / 2 + 1;
        for message in 0..4 {
            let refused = (0..weight)
                .map(|_| Err(HubError::new(ErrorCode::InvalidEvent, "refused")))
                .collect();
            let inputs = vec![(Input::Publish(refused), None), (Input::Tick, None)];
            let applied = tokio::time::timeout(
                Duration::from_secs(10),
                hub.apply_ordered(inputs, 1_000 * message),
            )
            .await
            .unwrap_or_else(|_| panic!("message {message} never found room in the pipeline"));
            assert!(applied, "the pipeline is open");
        }
        hub.close_pipeline();
        pipeline.join();
    }
}
