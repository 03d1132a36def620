//! Shared snapshots: the state and the retained history as of one stream message, kept in
//! a JetStream object store (`<stream>-snapshots`), so that a node with an empty data
//! directory joins, and a killed one comes back, when the stream no longer reaches back to
//! its first message (it is bounded by age, and purged after a visitor is forgotten).
//!
//! The node holding the sweeper's lease asks its applier for one every
//! `--snapshot-interval`, and once more at a clean stop. The applier takes it between two messages, where it alone
//! decides, so state, history and stream position agree: it begins a state snapshot
//! (copy-on-write, as a single node's), takes the list of retained records (shared, not
//! copied), and notes the stream sequence and the time the next message may not go back
//! before. A blocking task then writes the state in the data directory's snapshot format
//! under `<data-dir>/cluster/` and uploads it with what is new of the history and, last,
//! `latest`, which names them; older objects are deleted after it. The history goes up in
//! pieces (log segments of a seq range each), each once: a snapshot names again the
//! pieces the writer's last one named and adds one with the records after them, until
//! an anonymization or erasure rewrites retained records (the next snapshot writes the
//! history whole, and the pieces that held the data are deleted with the old snapshot),
//! the lease moves to another writer, or there are [`MAX_CHUNKS`] pieces. A node starting
//! up reads `latest`, downloads the state and the pieces, leaves out the records
//! retention had passed, and reads the stream after its position.
//!
//! `latest` also carries where each origin's messages stood ([`super::order`]): which
//! request comes next and what is held, also part of what a node decides with.
//!
//! The history is part of what a node decides with (a retried eventId is a duplicate
//! while its event is retained), so it travels with the state and is taken in exactly as
//! it was, never aged again by the loading node's clock.
//!
//! After an anonymization or erasure, the first shared snapshot that follows it purges the
//! stream below its position, so the inputs that carried the forgotten data leave NATS
//! within one snapshot interval; the snapshot itself holds only what the change left.
//!
//! Two writers for a moment (the lease moving while a holder is paused) each write a
//! consistent pair; `latest` names whichever finished last, and a writer deletes and
//! purges only while `latest` names its own snapshot.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::object_store::{self, ObjectStore};
use async_nats::jetstream::stream::{StorageType, Stream};
use async_nats::jetstream::Context;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::clock::Millis;
use crate::cluster::order::Origins;
use crate::config::Config;
use crate::hub::retention::Record;
use crate::hub::state::SnapshotMaps;
use crate::hub::Hub;
use crate::ids::Seq;
use crate::store::recovery::Restored;
use crate::store::{snapshot, wal};

/// The object that names the newest snapshot.
const LATEST: &str = "latest";

/// The object store bucket of a stream's snapshots, `<stream>-snapshots`. The first
/// snapshot writer makes it, not a starting node: a replicated bucket takes a leader
/// election to make, which a node joining a cluster need not wait for.
#[derive(Clone)]
pub(super) struct Bucket {
    js: Context,
    wanted: object_store::Config,
    store: Arc<tokio::sync::OnceCell<ObjectStore>>,
}

impl Bucket {
    pub(super) fn new(js: &Context, config: &Config) -> Bucket {
        Bucket {
            js: js.clone(),
            wanted: object_store::Config {
                bucket: format!("{}-snapshots", config.nats_stream),
                description: Some("actionhub's shared snapshots: state and history".into()),
                storage: StorageType::File,
                num_replicas: config.nats_replicas,
                ..Default::default()
            },
            store: Arc::default(),
        }
    }

    /// The bucket if some node made it.
    async fn existing(&self) -> Option<ObjectStore> {
        if let Some(store) = self.store.get() {
            return Some(store.clone());
        }
        let store = self.js.get_object_store(&self.wanted.bucket).await.ok()?;
        Some(self.store.get_or_init(|| async { store }).await.clone())
    }

    /// The bucket, made when missing.
    async fn made(&self) -> Result<ObjectStore, Failure> {
        if let Some(store) = self.existing().await {
            return Ok(store);
        }
        let store = match self.js.create_object_store(self.wanted.clone()).await {
            Ok(store) => store,
            // Another node may have made it meanwhile.
            Err(created) => self
                .js
                .get_object_store(&self.wanted.bucket)
                .await
                .map_err(|_| format!("the snapshot bucket could not be made: {created}"))?,
        };
        Ok(self.store.get_or_init(|| async { store }).await.clone())
    }
}

/// What `latest` says.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Latest {
    epoch: String,
    /// The last stream message the snapshot includes.
    stream_sequence: u64,
    /// The hub's last seq as of that message.
    seq: u64,
    /// The time of that message as the applier kept it (never going back).
    time: Millis,
    state: String,
    /// The history as one segment (snapshots of earlier releases); see `chunks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history: Option<String>,
    /// The history in pieces, oldest first, without gaps between them; the records
    /// before `history_from` are past retention and left out when it is loaded.
    #[serde(default)]
    chunks: Vec<Chunk>,
    #[serde(default)]
    history_from: u64,
    /// Where each origin's messages stood (absent in snapshots of earlier releases).
    #[serde(default)]
    origins: Origins,
}

/// A piece of the shared history: the records with seqs `first..=last`, one log segment.
/// Written once and never changed; later snapshots name it again until retention has
/// passed it, the history is rewritten (an anonymization or erasure), or the pieces are
/// folded into one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chunk {
    name: String,
    first: u64,
    last: u64,
}

/// Pieces a snapshot's history may be made of, at most: past it, the next snapshot writes
/// the whole history as one again, so a node starting up downloads a bounded number.
const MAX_CHUNKS: usize = 16;

/// The pieces of the history this node's last shared snapshot named.
#[derive(Debug, Clone)]
struct Uploaded {
    /// The history's rewrite count when they were written.
    rewrites: u64,
    chunks: Vec<Chunk>,
}

/// Which pieces a new snapshot's history keeps, and the seq its new piece starts after:
/// the pieces this node uploaded last time, if the history was not rewritten since and
/// `latest` (whoever wrote it last) still names every one, less those retention has
/// passed (`first` is the oldest retained seq); otherwise none, and the new piece holds
/// it all.
fn plan(
    previous: Option<&Uploaded>,
    named: &[Chunk],
    rewrites: u64,
    first: u64,
) -> (Vec<Chunk>, u64) {
    let kept: Vec<Chunk> = match previous {
        Some(previous)
            if previous.rewrites == rewrites
                && previous.chunks.iter().all(|c| named.contains(c)) =>
        {
            previous
                .chunks
                .iter()
                .filter(|c| c.last >= first)
                .cloned()
                .collect()
        }
        _ => Vec::new(),
    };
    if kept.len() >= MAX_CHUNKS {
        return (Vec::new(), 0);
    }
    let after = kept.last().map_or(0, |c| c.last);
    (kept, after)
}

/// Shared between the lease (which asks for snapshots), the applier (which takes them)
/// and the writer.
#[derive(Default)]
pub(super) struct Snapshots {
    /// A snapshot is asked for; the applier takes it at its next message boundary.
    wanted: AtomicBool,
    /// Wakes an applier waiting for the stream, so a quiet stream is snapshotted too.
    pub(super) wake: Notify,
    /// A snapshot is being written: a state snapshot is one at a time.
    writing: AtomicBool,
    /// An anonymization or erasure was applied since the last snapshot that purged.
    forgot: AtomicBool,
    /// The stream sequence of the last snapshot written or loaded by this node.
    last: AtomicU64,
    /// This node holds the lease, so it writes the snapshots.
    lease_held: AtomicBool,
    /// The history pieces of the last snapshot this node wrote.
    uploaded: parking_lot::Mutex<Option<Uploaded>>,
}

impl Snapshots {
    /// For a node whose state starts at message `start` (0: the stream's beginning).
    pub(super) fn starting_at(start: u64) -> Snapshots {
        Snapshots {
            last: AtomicU64::new(start),
            ..Snapshots::default()
        }
    }

    /// Asks the applier for a snapshot.
    pub(super) fn want(&self) {
        self.wanted.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    pub(super) fn set_lease_held(&self, held: bool) {
        self.lease_held.store(held, Ordering::Release);
    }

    /// At a clean stop: the lease holder writes a last snapshot of everything applied (up
    /// to `applied`), so that nodes started later begin from it; waits for it at most
    /// `deadline`.
    pub(super) async fn write_final(&self, applied: u64, deadline: std::time::Duration) {
        if !self.lease_held.load(Ordering::Acquire) || self.last.load(Ordering::Acquire) >= applied
        {
            return;
        }
        let until = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < until {
            if self.last.load(Ordering::Acquire) >= applied {
                return;
            }
            // Asked again after a write that was already running when this began.
            if !self.writing.load(Ordering::Acquire) {
                self.want();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tracing::warn!(
            applied,
            "the last shared snapshot was not written before the stop"
        );
    }

    /// Notes that something was forgotten: the next snapshot purges the stream below it.
    pub(super) fn forgot(&self) {
        self.forgot.store(true, Ordering::Release);
    }

    /// Called by the applier between messages: whether to take a snapshot now (asked for,
    /// none being written, and the stream moved on since the last one).
    pub(super) fn take_wanted(&self, applied: u64) -> bool {
        if !self.wanted.load(Ordering::Acquire) || self.writing.load(Ordering::Acquire) {
            return false;
        }
        self.wanted.store(false, Ordering::Release);
        if applied <= self.last.load(Ordering::Acquire) {
            return false;
        }
        self.writing.store(true, Ordering::Release);
        true
    }
}

/// A snapshot taken between two messages, to be written and uploaded.
pub(super) struct Capture {
    pub(super) stream_sequence: u64,
    pub(super) seq: Seq,
    pub(super) maps: SnapshotMaps,
    pub(super) history: Vec<Arc<Record>>,
    /// The history's rewrite count as of `history`.
    pub(super) rewrites: u64,
    pub(super) time: Millis,
    pub(super) origins: Origins,
}

impl Capture {
    /// Begins a snapshot of `hub` as of the message at `stream_sequence`, which the caller
    /// has just applied and before which it applies nothing else.
    pub(super) fn take(
        hub: &Hub,
        stream_sequence: u64,
        time: Millis,
        origins: &Origins,
    ) -> Capture {
        let begun = hub.begin_snapshot();
        let (seq, maps) = (begun.seq, begun.maps);
        let (history, rewrites) = hub.with_history(|h| (h.iter().cloned().collect(), h.rewrites()));
        Capture {
            stream_sequence,
            seq,
            maps,
            history,
            rewrites,
            time,
            origins: origins.clone(),
        }
    }
}

/// Where this node keeps its copies of shared snapshots: `<data-dir>/cluster/`.
fn local_dir(config: &Config) -> PathBuf {
    config.data_dir.join("cluster")
}

/// Writes `capture` and uploads it, then (while `latest` names it) deletes older
/// snapshots and, when something was forgotten, purges the stream below it.
pub(super) async fn write(
    hub: Arc<Hub>,
    bucket: Bucket,
    stream: Stream,
    snapshots: Arc<Snapshots>,
    capture: Capture,
) {
    let started = Instant::now();
    let purge = snapshots.forgot.swap(false, Ordering::AcqRel);
    let at = capture.stream_sequence;
    let previous = snapshots.uploaded.lock().clone();
    let result = async {
        let (store, written) = write_and_upload(hub, &bucket, capture, previous).await?;
        finish(&store, &stream, &written.latest, purge).await?;
        Ok::<_, Failure>(written)
    }
    .await;
    match result {
        Ok(Written {
            latest,
            pieces,
            bytes,
        }) => {
            *snapshots.uploaded.lock() = Some(pieces);
            snapshots.last.fetch_max(at, Ordering::AcqRel);
            tracing::info!(
                stream_sequence = at,
                seq = latest.seq,
                history_pieces = latest.chunks.len(),
                uploaded_bytes = bytes,
                purged = purge,
                took_ms = started.elapsed().as_millis() as u64,
                "wrote the shared snapshot"
            );
        }
        Err(e) => {
            if purge {
                snapshots.forgot();
            }
            tracing::warn!(error = %e, stream_sequence = at, "writing the shared snapshot failed; the next interval tries again");
        }
    }
    snapshots.writing.store(false, Ordering::Release);
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// What one snapshot write put in the bucket.
struct Written {
    latest: Latest,
    /// The history pieces `latest` names, for the next write to build on.
    pieces: Uploaded,
    /// Bytes uploaded: the state and the new piece.
    bytes: u64,
}

/// Writes the state (ending the walk the capture began, whatever happens) and the new
/// piece of the history, and uploads both to the bucket, made when missing; answers the
/// bucket and what was written.
async fn write_and_upload(
    hub: Arc<Hub>,
    bucket: &Bucket,
    capture: Capture,
    previous: Option<Uploaded>,
) -> Result<(ObjectStore, Written), Failure> {
    let dir = local_dir(hub.config());
    let at = capture.stream_sequence;
    let Capture {
        seq,
        maps,
        history,
        rewrites,
        time,
        origins,
        ..
    } = capture;
    let state_file = {
        let (dir, hub) = (dir.clone(), hub.clone());
        tokio::task::spawn_blocking(move || {
            let written = write_state(&hub, &dir, seq, &maps);
            // The walk is over (or failed): the state stops keeping preimages.
            hub.state().end_snapshot();
            written
        })
        .await??
    };
    let store = bucket.made().await?;
    let named = read_latest(&store)
        .await?
        .map(|latest| latest.chunks)
        .unwrap_or_default();
    let history_from = history.first().map_or(seq.0 + 1, |r| r.seq.0);
    let (mut chunks, after) = plan(previous.as_ref(), &named, rewrites, history_from);
    let fresh: Vec<Arc<Record>> = history.into_iter().filter(|r| r.seq.0 > after).collect();
    let mut bytes = 0;
    if let (Some(first), Some(last)) = (fresh.first(), fresh.last()) {
        let chunk = Chunk {
            name: format!(
                "history-{}-{}-{}",
                first.seq,
                last.seq,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            first: first.seq.0,
            last: last.seq.0,
        };
        let chunk_dir = dir.join("history-new");
        let file = tokio::task::spawn_blocking(move || write_chunk(&chunk_dir, &fresh)).await??;
        bytes += upload(&store, &chunk.name, &file).await?;
        chunks.push(chunk);
    }
    let latest = Latest {
        epoch: hub.epoch().to_owned(),
        stream_sequence: at,
        seq: seq.0,
        time,
        state: format!("state-{at}"),
        history: None,
        chunks: chunks.clone(),
        history_from,
        origins,
    };
    bytes += upload(&store, &latest.state, &state_file).await?;
    let text = serde_json::to_vec(&latest)?;
    store.put(LATEST, &mut text.as_slice()).await?;
    let pieces = Uploaded { rewrites, chunks };
    Ok((
        store,
        Written {
            latest,
            pieces,
            bytes,
        },
    ))
}

/// The state as a file under `dir`.
fn write_state(hub: &Hub, dir: &Path, seq: Seq, maps: &SnapshotMaps) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let state = dir.join("state.snap");
    // No visitor change shares a seq's place here: the stream orders them, and a node
    // starts from the message the snapshot names.
    snapshot::write_to(hub, &state, seq, 0, maps)?;
    Ok(state)
}

/// `records` as one log segment in `dir` (emptied first: it holds nothing else of worth).
fn write_chunk(dir: &Path, records: &[Arc<Record>]) -> std::io::Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    wal::write_segment(dir, records)?;
    wal::segments(dir)?
        .pop()
        .map(|(_, path)| path)
        .ok_or_else(|| std::io::Error::other("the history segment was not written"))
}

/// Uploads the file at `path` as `name`; answers its size.
async fn upload(store: &ObjectStore, name: &str, path: &Path) -> Result<u64, Failure> {
    let mut file = tokio::fs::File::open(path).await?;
    let bytes = file.metadata().await?.len();
    store.put(name, &mut file).await?;
    Ok(bytes)
}

/// After `latest` is written: deletes the older snapshots and, when asked, purges the
/// stream below this one. Both only while `latest` still names this snapshot.
async fn finish(
    store: &ObjectStore,
    stream: &Stream,
    ours: &Latest,
    purge: bool,
) -> Result<(), Failure> {
    match read_latest(store).await? {
        Some(latest) if latest.stream_sequence == ours.stream_sequence => {}
        _ => return Ok(()),
    }
    let mut listed = store.list().await?;
    let mut older = Vec::new();
    while let Some(info) = listed.next().await {
        let info = info?;
        let named = info.name == LATEST
            || info.name == ours.state
            || ours.chunks.iter().any(|c| c.name == info.name);
        if !named {
            older.push(info.name);
        }
    }
    for name in older {
        store.delete(&name).await?;
    }
    if purge {
        // Keeps the messages after the snapshot; those at or before it are in it.
        stream.purge().sequence(ours.stream_sequence + 1).await?;
    }
    Ok(())
}

async fn read_latest(store: &ObjectStore) -> Result<Option<Latest>, Failure> {
    let mut object = match store.get(LATEST).await {
        Ok(object) => object,
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut text = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut text).await?;
    Ok(Some(serde_json::from_slice(&text)?))
}

/// The newest shared snapshot of this epoch, downloaded and read, as the hub starts from
/// it: with the stream sequence it includes and the time its applier had reached.
pub(super) struct Loaded {
    pub(super) restored: Restored,
    pub(super) stream_sequence: u64,
    pub(super) time: Millis,
    pub(super) origins: Origins,
}

/// Reads the newest shared snapshot of `epoch`, if there is one.
pub(super) async fn load(
    bucket: &Bucket,
    config: &Config,
    epoch: &str,
) -> Result<Option<Loaded>, Failure> {
    let Some(store) = bucket.existing().await else {
        return Ok(None);
    };
    let store = &store;
    let Some(latest) = read_latest(store).await? else {
        return Ok(None);
    };
    if latest.epoch != epoch {
        tracing::warn!(found = %latest.epoch, %epoch, "the shared snapshot is of another epoch (the stream was made again); not used");
        return Ok(None);
    }
    let dir = local_dir(config);
    let history_dir = dir.join("history");
    let _ = tokio::fs::remove_dir_all(&history_dir).await;
    tokio::fs::create_dir_all(&history_dir).await?;
    let state_file = dir.join("state.snap");
    download(store, &latest.state, &state_file).await?;
    // Each piece as a segment named by its first seq, so the scan reads them in order.
    match &latest.history {
        Some(one) => download(store, one, &history_dir.join("0.wal")).await?,
        None => {
            for chunk in &latest.chunks {
                let path = history_dir.join(format!("{:020}.wal", chunk.first));
                download(store, &chunk.name, &path).await?;
            }
        }
    }
    let history_from = latest.history_from;
    let loaded = tokio::task::spawn_blocking(move || -> Result<Restored, Failure> {
        let state = snapshot::load(&state_file)?;
        let mut history = Vec::new();
        let scan = wal::scan(&history_dir, |entry| {
            match entry {
                // A kept piece may begin before what is still retained.
                wal::Entry::Event(record) if record.seq.0 >= history_from => {
                    history.push(Arc::new(record));
                }
                _ => {}
            }
        })?;
        if let Some(torn) = scan.torn {
            return Err(format!("the shared history is damaged: {}", torn.why).into());
        }
        Ok(Restored {
            epoch: state.epoch,
            state: state.state,
            last_seq: state.seq,
            history,
            snapshot_seq: state.seq,
            aged_at: None,
        })
    })
    .await??;
    if loaded.last_seq.0 != latest.seq {
        return Err(format!(
            "the shared snapshot's state is at seq {}, and `latest` names seq {}",
            loaded.last_seq, latest.seq
        )
        .into());
    }
    Ok(Some(Loaded {
        restored: loaded,
        stream_sequence: latest.stream_sequence,
        time: latest.time,
        origins: latest.origins,
    }))
}

async fn download(store: &ObjectStore, name: &str, path: &Path) -> Result<(), Failure> {
    let mut object = store.get(name).await?;
    let mut file = tokio::fs::File::create(path).await?;
    tokio::io::copy(&mut object, &mut file).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(name: &str, first: u64, last: u64) -> Chunk {
        Chunk {
            name: name.into(),
            first,
            last,
        }
    }

    fn uploaded(rewrites: u64, chunks: &[Chunk]) -> Uploaded {
        Uploaded {
            rewrites,
            chunks: chunks.to_vec(),
        }
    }

    #[test]
    fn the_pieces_uploaded_before_are_kept_and_the_new_one_follows_them() {
        let (a, b) = (chunk("a", 1, 10), chunk("b", 11, 20));
        let previous = uploaded(3, &[a.clone(), b.clone()]);
        let named = [a.clone(), b.clone()];
        assert_eq!(
            plan(Some(&previous), &named, 3, 1),
            (vec![a, b.clone()], 20)
        );
        // Retention passed the first piece: it is dropped; one it passed in part stays.
        assert_eq!(plan(Some(&previous), &named, 3, 11), (vec![b.clone()], 20));
        assert_eq!(plan(Some(&previous), &named, 3, 15), (vec![b], 20));
    }

    #[test]
    fn a_rewritten_history_or_another_writer_starts_the_pieces_again() {
        let (a, b) = (chunk("a", 1, 10), chunk("b", 11, 20));
        let previous = uploaded(3, &[a.clone(), b.clone()]);
        let nothing = (Vec::new(), 0);
        // Anonymized or erased since: the pieces hold what is no longer so.
        assert_eq!(
            plan(Some(&previous), &[a.clone(), b.clone()], 4, 1),
            nothing
        );
        // `latest` is another writer's: its pieces may be gone.
        assert_eq!(
            plan(Some(&previous), std::slice::from_ref(&a), 3, 1),
            nothing
        );
        assert_eq!(plan(None, &[a, b], 3, 1), nothing);
    }

    #[test]
    fn too_many_pieces_are_folded_into_one() {
        let chunks: Vec<Chunk> = (0..MAX_CHUNKS as u64)
            .map(|i| chunk(&format!("c{i}"), i * 10 + 1, i * 10 + 10))
            .collect();
        let previous = uploaded(0, &chunks);
        assert_eq!(plan(Some(&previous), &chunks, 0, 1), (Vec::new(), 0));
        let fewer = uploaded(0, &chunks[..MAX_CHUNKS - 1]);
        let (kept, after) = plan(Some(&fewer), &chunks, 0, 1);
        assert_eq!(
            (kept.len(), after),
            (MAX_CHUNKS - 1, (MAX_CHUNKS as u64 - 1) * 10)
        );
    }
}
