//! One sink's task: it reads the retained history after its cursor, like the HTTP event
//! stream, up to what the fan-out has delivered, keeps what the sink's topics and `where`
//! select (the one matching rule, [`selects`]), and posts it in batches, signed, until the
//! receiver acknowledges each with a 2xx.
//!
//! It holds at most one batch (`batch_size` items, which share their frames with the
//! history), so a slow or dead receiver costs one batch and a cursor, and never slows the
//! hub, its publishers or another sink: nothing is queued for a sink, it reads when it is
//! ready. A batch that fails is retried as it is (same items, same `webhook-id`) with
//! exponential backoff and full jitter, until it is acknowledged or the sink is paused.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cluster::sinks::SharedEntry;
use crate::edge::sinks::spec::SinkSpec;
use crate::edge::sinks::store::{self, Cursors, SinkFile};
use crate::hub::fanout::selects;
use crate::hub::retention::Record;
use crate::hub::Hub;
use crate::ids::Seq;
use crate::metrics::SinkLabel;

/// Records examined per read of the history (one short hold of its lock).
const SCAN_BUDGET: usize = 4096;
/// The first retry's delay at most; each failure doubles it up to the configured cap.
const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// How every sink delivers: the HTTP client and the retry and pause rules, from the
/// configuration.
pub struct Delivery {
    /// One client for every sink: a timeout per request, no redirects followed (a sink
    /// posts only to its configured URL).
    pub client: reqwest::Client,
    pub timeout: Duration,
    pub backoff_max: Duration,
    /// Consecutive failures of one batch after which the sink is paused.
    pub max_failures: u32,
    /// How long one batch may keep failing before the sink is paused.
    pub max_retry: Duration,
    /// Where each sink's cursor is kept.
    pub cursors: Cursors,
}

/// Where a sink stands, as `GET /v1/sinks` shows it.
#[derive(Clone, Debug)]
pub struct Status {
    /// Every event up to here was acknowledged by the receiver (or not selected).
    pub cursor: Seq,
    pub epoch: String,
    pub paused: bool,
    /// The HTTP status of the last answer; none before the first, or when the last
    /// attempt had none (a timeout, a refused connection).
    pub last_status: Option<u16>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub delivered_events: u64,
    /// In a cluster, the node delivering the sink (none on a single node, or before a
    /// node has taken it).
    pub node: Option<String>,
    /// In a cluster, the end of the batch being delivered, as the bucket keeps it (see
    /// `SharedEntry::in_flight`); not shown.
    pub in_flight: Option<Seq>,
}

/// A sink: its definition, its status, and what stops and resumes its task.
pub struct Sink {
    pub id: String,
    pub spec: SinkSpec,
    /// Defined in the config file (which alone may remove it), or made by the API.
    pub from_file: bool,
    /// A leaf lock, held only to read or write the status, never across an `.await`.
    status: Mutex<Status>,
    resumed: Notify,
    /// Ends the task: the hub is shutting down, or the sink was deleted.
    pub(super) stop: CancellationToken,
    /// In a cluster, whether this node's task delivers the sink (its status is then this
    /// node's own, not the bucket's).
    delivering: std::sync::atomic::AtomicBool,
    label: SinkLabel,
}

/// One item of a batch: an event's frame, or the gap where events fell out of retention
/// before the sink could deliver them.
enum Item {
    Event(Arc<Record>),
    Gap { from: Seq, to: Seq },
}

impl Item {
    /// The seqs the item stands for, first and last.
    fn span(&self) -> (Seq, Seq) {
        match self {
            Item::Event(record) => (record.seq, record.seq),
            Item::Gap { from, to } => (*from, *to),
        }
    }
}

/// The batch being filled or delivered.
struct Batch {
    items: Vec<Item>,
    /// When the first item was taken: the batch goes at `linger` after it at the latest.
    started: Option<Instant>,
}

impl Sink {
    pub fn new(id: String, spec: SinkSpec, from_file: bool, file: &SinkFile) -> Sink {
        let label = SinkLabel {
            sink: spec.name.clone(),
        };
        Sink {
            id,
            spec,
            from_file,
            status: Mutex::new(Status {
                cursor: Seq(file.cursor),
                epoch: file.epoch.clone(),
                paused: file.paused,
                last_status: None,
                consecutive_failures: 0,
                last_error: None,
                delivered_events: 0,
                node: None,
                in_flight: None,
            }),
            resumed: Notify::new(),
            stop: CancellationToken::new(),
            delivering: std::sync::atomic::AtomicBool::new(false),
            label,
        }
    }

    pub fn is_delivering(&self) -> bool {
        self.delivering.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn set_delivering(&self, delivering: bool) {
        self.delivering
            .store(delivering, std::sync::atomic::Ordering::Release);
    }

    pub fn status(&self) -> Status {
        self.status.lock().clone()
    }

    pub fn label(&self) -> &SinkLabel {
        &self.label
    }

    /// The file that keeps this sink's place (and an API sink's definition).
    pub fn file(&self) -> SinkFile {
        let status = self.status.lock();
        SinkFile {
            id: self.id.clone(),
            cursor: status.cursor.0,
            epoch: status.epoch.clone(),
            paused: status.paused,
            definition: (!self.from_file).then(|| self.spec.to_stored()),
        }
    }

    /// A sink as the cluster's bucket keeps it.
    pub fn from_shared(entry: &SharedEntry, spec: SinkSpec) -> Sink {
        let file = SinkFile {
            id: entry.id.clone(),
            cursor: entry.cursor,
            epoch: entry.epoch.clone(),
            paused: entry.paused,
            definition: None,
        };
        let sink = Sink::new(entry.id.clone(), spec, entry.from_file, &file);
        sink.adopt(entry, false);
        sink
    }

    /// What the cluster's bucket keeps of this sink.
    pub fn shared_entry(&self) -> SharedEntry {
        let status = self.status.lock();
        SharedEntry {
            id: self.id.clone(),
            from_file: self.from_file,
            definition: self.spec.to_stored(),
            cursor: status.cursor.0,
            epoch: status.epoch.clone(),
            paused: status.paused,
            node: status.node.clone(),
            last_status: status.last_status,
            consecutive_failures: status.consecutive_failures,
            last_error: status.last_error.clone(),
            delivered_events: status.delivered_events,
            in_flight: status.in_flight.map(|end| end.0),
        }
    }

    /// Takes in the status another node wrote to the bucket. While this node delivers the
    /// sink its own status is the truth, and only a resume asked on another node is taken.
    pub fn adopt(&self, entry: &SharedEntry, delivering_here: bool) {
        let mut status = self.status.lock();
        let resumed = status.paused && !entry.paused;
        if delivering_here {
            if resumed {
                status.paused = false;
                status.consecutive_failures = 0;
            }
        } else {
            *status = Status {
                cursor: Seq(entry.cursor),
                epoch: entry.epoch.clone(),
                paused: entry.paused,
                last_status: entry.last_status,
                consecutive_failures: entry.consecutive_failures,
                last_error: entry.last_error.clone(),
                delivered_events: entry.delivered_events,
                node: entry.node.clone(),
                in_flight: entry.in_flight.map(Seq),
            };
        }
        drop(status);
        if resumed {
            self.resumed.notify_one();
        }
    }

    /// Takes a paused sink up again where it stopped; false when it was not paused.
    pub fn resume(&self) -> bool {
        let mut status = self.status.lock();
        if !status.paused {
            return false;
        }
        status.paused = false;
        status.consecutive_failures = 0;
        drop(status);
        self.resumed.notify_one();
        true
    }

    fn is_paused(&self) -> bool {
        self.status.lock().paused
    }
}

/// Runs `sink` until it is stopped.
pub async fn run(sink: Arc<Sink>, hub: Arc<Hub>, delivery: Arc<Delivery>) {
    let mut cursor = start_cursor(&sink, &hub, &delivery).await;
    let mut batch = Batch {
        items: Vec::new(),
        started: None,
    };
    // A batch another node had in flight when this one took the sink over: it is filled
    // up to its recorded end and no further, and sent without waiting for its linger, so
    // it is the same batch under the same `webhook-id`.
    let mut resend = sink.status().in_flight.filter(|end| *end > cursor);
    loop {
        // Registered before the watermark is read, so a pass that lands in between still
        // wakes the sink.
        let delivered = pin!(hub.fanout().delivered());
        let watermark = hub.fanout().watermark();
        let upto = resend.map_or(watermark, |end| end.min(watermark));
        let target = fill(&sink, &hub, &mut batch, &mut cursor, upto);
        let due = batch
            .started
            .map(|started| started + sink.spec.linger)
            .filter(|_| !batch.items.is_empty() && resend.is_none());
        let ready = match resend {
            Some(end) => cursor >= end,
            None => {
                batch.items.len() >= sink.spec.batch_size
                    || due.is_some_and(|due| due <= Instant::now())
            }
        };
        if ready {
            resend = None;
            if batch.items.is_empty() {
                continue;
            }
            if !deliver(&sink, &hub, &delivery, &batch, cursor).await {
                return;
            }
            batch.items.clear();
            batch.started = None;
            continue;
        }
        if cursor < target {
            continue;
        }
        let linger = async {
            match due {
                Some(due) => sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = delivered => {}
            () = linger => {}
            () = sink.stop.cancelled() => return,
        }
    }
}

/// The cursor the task starts from: the file's, or in a new epoch (history was lost) the
/// head, after a gap record that says so.
async fn start_cursor(sink: &Arc<Sink>, hub: &Hub, delivery: &Delivery) -> Seq {
    let status = sink.status();
    if status.epoch == hub.epoch() {
        return status.cursor;
    }
    let head = hub.fanout().watermark();
    warn!(sink = %sink.spec.name, old_epoch = %status.epoch, epoch = %hub.epoch(),
        "the sink's cursor belongs to another history of seqs; it goes on from the head after a gap record");
    let gap = Batch {
        items: vec![Item::Gap {
            from: status.cursor.next(),
            to: head,
        }],
        started: None,
    };
    {
        let mut status = sink.status.lock();
        status.epoch = hub.epoch().to_owned();
    }
    deliver(sink, hub, delivery, &gap, head).await;
    head
}

/// Adds to `batch` what the history holds after `cursor` up to `target` that the sink
/// selects, until the batch is full; a stretch no longer retained becomes a gap item.
/// Moves `cursor` to the last seq examined and answers `target`.
fn fill(sink: &Sink, hub: &Hub, batch: &mut Batch, cursor: &mut Seq, target: Seq) -> Seq {
    let spec = &sink.spec;
    while *cursor < target && batch.items.len() < spec.batch_size {
        let room = spec.batch_size - batch.items.len();
        let keep = |r: &Record| selects(spec.topic_set, &spec.filter, r, hub.state());
        let after = *cursor;
        let read = hub.with_history(|history| {
            let lost = after < history.last_seq() && after.next() < history.first_seq();
            match lost {
                true => Err(Seq(history.first_seq().0 - 1)),
                false => Ok(history.scan(after, target, SCAN_BUDGET, room, keep)),
            }
        });
        let before = batch.items.len();
        match read {
            Err(to) => {
                hub.metrics().sink_gaps.get_or_create(&sink.label).inc();
                batch.items.push(Item::Gap {
                    from: after.next(),
                    to,
                });
                *cursor = to;
            }
            Ok((records, last)) => {
                // Nothing examined means nothing is retained up to the target (seqs skip
                // after an unclean restart): the sink has caught up with it.
                *cursor = if last == after { target } else { last };
                batch.items.extend(records.into_iter().map(Item::Event));
            }
        }
        if before == 0 && !batch.items.is_empty() {
            batch.started = Some(Instant::now());
        }
    }
    target
}

/// The request body: a JSON array of the items, each event exactly its `event` frame.
fn body(batch: &Batch, epoch: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        2 + batch
            .items
            .iter()
            .map(|item| match item {
                Item::Event(r) => r.frame.len() + 1,
                Item::Gap { .. } => 80,
            })
            .sum::<usize>(),
    );
    out.push(b'[');
    for (i, item) in batch.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match item {
            Item::Event(record) => out.extend_from_slice(record.frame.as_str().as_bytes()),
            Item::Gap { from, to } => {
                let gap = json!({"type": "gap", "from": from.0, "to": to.0, "epoch": epoch});
                out.extend_from_slice(gap.to_string().as_bytes());
            }
        }
    }
    out.push(b']');
    out
}

/// A batch's `webhook-id`: the sink and the seqs of its first and last items, so that a
/// retry of the same batch carries the same id and a different batch never does.
fn webhook_id(sink: &Sink, batch: &Batch) -> String {
    let first = batch.items.first().map_or(Seq(0), |i| i.span().0);
    let last = batch.items.last().map_or(Seq(0), |i| i.span().1);
    format!("msg_{}_{}_{}", sink.id, first.0, last.0)
}

/// Why an attempt failed, for the status.
struct Failure {
    status: Option<u16>,
    error: String,
}

/// Delivers `batch` until the receiver acknowledges it, then moves the sink's cursor to
/// `end` (the last seq examined for it) and keeps that in its file. False when the sink
/// was stopped first.
async fn deliver(sink: &Sink, hub: &Hub, delivery: &Delivery, batch: &Batch, end: Seq) -> bool {
    let body = bytes::Bytes::from(body(batch, hub.epoch()));
    let id = webhook_id(sink, batch);
    let metrics = hub.metrics();
    if matches!(delivery.cursors, Cursors::Shared(_)) {
        // Recorded before the first attempt, so a node that was fenced off stops before it
        // posts a batch of its own, and the node taking over resends this one whole.
        sink.status.lock().in_flight = Some(end);
        if !persist(sink, delivery).await {
            return false;
        }
    }
    let mut first_failure: Option<Instant> = None;
    loop {
        if sink.is_paused() && !wait_resumed(sink).await {
            return false;
        }
        let attempt = post(sink, delivery, &id, body.clone());
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = sink.stop.cancelled() => return false,
        };
        match outcome {
            Ok(status) => {
                let events = batch
                    .items
                    .iter()
                    .filter(|i| matches!(i, Item::Event(_)))
                    .count() as u64;
                {
                    let mut s = sink.status.lock();
                    s.cursor = end;
                    s.in_flight = None;
                    s.last_status = Some(status);
                    s.consecutive_failures = 0;
                    s.last_error = None;
                    s.delivered_events += events;
                }
                metrics.sink_batches_acked.get_or_create(&sink.label).inc();
                metrics
                    .sink_events_delivered
                    .get_or_create(&sink.label)
                    .inc_by(events);
                return persist(sink, delivery).await;
            }
            Err(failure) => {
                metrics.sink_failures.get_or_create(&sink.label).inc();
                let started = *first_failure.get_or_insert_with(Instant::now);
                let failures = {
                    let mut s = sink.status.lock();
                    s.last_status = failure.status;
                    s.last_error = Some(failure.error.clone());
                    s.consecutive_failures += 1;
                    s.consecutive_failures
                };
                debug!(sink = %sink.spec.name, %id, failures, error = %failure.error, "webhook delivery failed");
                if failures >= delivery.max_failures || started.elapsed() >= delivery.max_retry {
                    sink.status.lock().paused = true;
                    first_failure = None;
                    warn!(sink = %sink.spec.name, failures, error = %failure.error,
                        "webhook sink paused after repeated failures; POST /v1/sinks/{}/resume takes it up again", sink.id);
                    if !persist(sink, delivery).await {
                        return false;
                    }
                    continue;
                }
                // Other nodes show the shared status, so a cluster keeps each failure too.
                if matches!(delivery.cursors, Cursors::Shared(_)) && !persist(sink, delivery).await
                {
                    return false;
                }
                let cap = BACKOFF_MIN
                    .saturating_mul(1 << (failures - 1).min(20))
                    .min(delivery.backoff_max);
                // Full jitter: receivers coming back are not hit by every sink at once.
                let delay = Duration::from_millis(fastrand::u64(0..=cap.as_millis() as u64));
                tokio::select! {
                    () = sleep(delay) => {}
                    () = sink.stop.cancelled() => return false,
                }
            }
        }
    }
}

/// Waits until the sink is resumed; false when it was stopped first.
async fn wait_resumed(sink: &Sink) -> bool {
    loop {
        let resumed = sink.resumed.notified();
        if !sink.is_paused() {
            info!(sink = %sink.spec.name, "webhook sink resumed");
            return true;
        }
        tokio::select! {
            () = resumed => {}
            () = sink.stop.cancelled() => return false,
        }
    }
}

/// One signed POST of the batch; the HTTP status of a 2xx answer.
async fn post(
    sink: &Sink,
    delivery: &Delivery,
    id: &str,
    body: bytes::Bytes,
) -> Result<u16, Failure> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let signature = sink.spec.secret.sign(id, timestamp, &body);
    let sent = delivery
        .client
        .post(sink.spec.url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
        Ok(response) => Err(Failure {
            status: Some(response.status().as_u16()),
            error: format!("the receiver answered {}", response.status()),
        }),
        Err(e) if e.is_timeout() => Err(Failure {
            status: None,
            error: format!("no answer within {:?}", delivery.timeout),
        }),
        Err(e) => Err(Failure {
            status: None,
            error: format!("the request failed: {}", error_chain(&e)),
        }),
    }
}

/// An error and its causes on one line (reqwest's own message names only the request).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Keeps the sink's place: writes its file, or its entry in the cluster's bucket. A
/// failure to write is logged, not fatal: the kept cursor stays behind, so a restart (or
/// the next node) delivers again what followed it, and at least once still holds. False
/// only in a cluster, when another node moved the sink on or it was deleted: this
/// node's delivery of it stops.
pub(super) async fn persist(sink: &Sink, delivery: &Delivery) -> bool {
    match &delivery.cursors {
        Cursors::Files(dir) => {
            let (dir, file) = (dir.clone(), sink.file());
            let written = tokio::task::spawn_blocking(move || store::write(&dir, &file)).await;
            if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
                warn!(sink = %sink.spec.name, error = %e, "cannot write the sink's cursor file");
            }
            true
        }
        Cursors::Shared(shared) => shared.keep(sink.shared_entry()).await,
    }
}
