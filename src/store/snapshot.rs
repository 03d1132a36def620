//! Snapshots: the whole state as of one seq, in `<data-dir>/snapshots/<seq>.snap`, so a
//! restart replays only the log after it.
//!
//! A snapshot is written by a background thread while ingest goes on: the sequencer lock
//! is held only to read the seq and copy the per-map counters; the walk reads the state
//! as of that seq through copy-on-write preimages (see `hub::state`). The file is written to
//! a temp name, synced, renamed and the directory synced, so a crash leaves the old
//! snapshot or the new one, never half of one; a failed attempt removes its temp file and
//! the next waits longer (see [`retry_delay`]). The newest two are kept; log segments that
//! neither the older one nor the retained history needs are deleted after a snapshot.
//! After a snapshot that follows an anonymization or erasure, the log is compacted and
//! only that snapshot is kept (see [`forget_on_disk`]), so within one snapshot interval
//! no file in the data directory holds what was forgotten.
//!
//! Format (version 1): magic, version (u32), seq, (from version 4) how many visitor
//! changes logged after that seq the state holds (u32), epoch, time written, the per-map
//! counters, then chunks (tag 4, byte length u64) of tagged entities (1 customer,
//! 2 profile, 3 action, 5 customer with client info, 6 profile with company, 7 company) in the encoding of [`crate::store::codec`], then 0 (end), then a crc32 of
//! everything before it. Chunks let start-up decode on several threads.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::clock::now_millis;
use crate::hub::segments::Segment;
use crate::hub::state::{
    decode_membership, encode_membership, Action, ClientInfo, Company, Customer, HubState,
    MapCounts, Profile, SnapshotItem,
};
use crate::hub::Hub;
use crate::ids::{CustomerId, Seq, VisitorId};
use crate::store::codec::{Dec, DecodeError, Enc};
use crate::store::wal;

const MAGIC: &[u8; 8] = b"AHUBSNP\0";
/// The snapshot format this release writes; a higher one on disk is refused.
/// Format 2 added the customers' client info (`CUSTOMER_WITH_CLIENT`); format 3 the
/// companies (`COMPANY`), a profile's membership (`PROFILE_WITH_COMPANY`), a page view's
/// exit time (an activity kind of its own, see `hub::state`'s encoding) and the segment
/// definitions (`SEGMENTS`); format 4 how many visitor changes logged after the seq the
/// state holds (`Loaded::changes_after`). Formats 1 to 3 read as ever.
pub const FORMAT_VERSION: u32 = 4;
/// Entity tags, and the chunk that holds them.
const END: u8 = 0;
const CUSTOMER: u8 = 1;
const PROFILE: u8 = 2;
const ACTION: u8 = 3;
const CHUNK: u8 = 4;
const CUSTOMER_WITH_CLIENT: u8 = 5;
const PROFILE_WITH_COMPANY: u8 = 6;
const COMPANY: u8 = 7;
/// The segment definitions (format 3): the next segment number, then each definition.
const SEGMENTS: u8 = 8;
/// A chunk is closed once it holds this much (small in unit tests, to make many).
const CHUNK_BYTES: usize = if cfg!(test) { 2048 } else { 4 << 20 };
/// Threads that decode chunks at start-up (the log is read beside them).
const LOAD_THREADS: usize = 2;
/// Longest wait for the log to be durable up to a snapshot's seq before giving it up.
const LOG_CATCH_UP: Duration = Duration::from_secs(30);
/// Snapshots kept: the newest, and one to fall back to if the newest is damaged.
const KEEP: usize = 2;

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path} was written by a newer actionhub (snapshot format {found}, this release reads \
         up to {FORMAT_VERSION}); refusing to start, nothing was changed"
    )]
    FutureFormat { path: PathBuf, found: u32 },
    #[error("{path} is damaged: {why}")]
    Corrupt { path: PathBuf, why: String },
}

/// A snapshot read back.
pub struct Loaded {
    pub seq: Seq,
    /// How many of the visitor changes logged after `seq` (they share its place in the
    /// log) the state holds; None from a format before 4, which did not say.
    pub changes_after: Option<u32>,
    pub epoch: String,
    pub state: HubState,
    pub path: PathBuf,
}

/// What writing one snapshot took.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub seq: Seq,
    pub bytes: u64,
    pub entities: u64,
    /// Time the sequencer lock was held to start it (the ingest pause).
    pub lock_held: Duration,
    pub took: Duration,
}

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// The snapshot files, newest first, with their seqs.
pub fn list(data_dir: &Path) -> io::Result<Vec<(Seq, PathBuf)>> {
    let mut out = crate::store::wal::files_by_seq(&dir(data_dir), ".snap")?;
    out.sort_by(|a, b| b.cmp(a));
    Ok(out)
}

/// The format version a snapshot file declares, if its header is readable.
pub fn version_of(path: &Path) -> Option<u32> {
    let bytes = fs::read(path).ok()?;
    (bytes.len() >= 12 && &bytes[..8] == MAGIC)
        .then(|| u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")))
}

/// Writes a snapshot of `hub`'s state as of its latest seq.
pub fn take(hub: &Hub, data_dir: &Path) -> io::Result<Written> {
    let started = Instant::now();
    let begun = hub.begin_snapshot();
    let (seq, lock_held) = (begun.seq, begun.lock_held);
    let result = write(hub, data_dir, seq, begun.changes_after, &begun.maps);
    hub.state().end_snapshot();
    let (bytes, entities) = result?;
    Ok(Written {
        seq,
        bytes,
        entities,
        lock_held,
        took: started.elapsed(),
    })
}

fn write(
    hub: &Hub,
    data_dir: &Path,
    seq: Seq,
    changes_after: u32,
    maps: &crate::hub::state::SnapshotMaps,
) -> io::Result<(u64, u64)> {
    let dir = dir(data_dir);
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{:020}.snap", seq.0));
    write_to(hub, &path, seq, changes_after, maps)
}

/// Writes the state as of `seq`, a snapshot begun with [`Hub::begin_snapshot`], as the
/// file `path` (through a temp file renamed once whole), holding `changes_after` of the
/// visitor changes logged after `seq`. A data directory's snapshots and a cluster's shared
/// ones are written by this one function.
pub fn write_to(
    hub: &Hub,
    path: &Path,
    seq: Seq,
    changes_after: u32,
    maps: &crate::hub::state::SnapshotMaps,
) -> io::Result<(u64, u64)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let written = write_file(hub, dir, path, &tmp, (seq, changes_after), maps);
    if written.is_err() {
        // A failed attempt takes its temp file with it: on a full disk each one would
        // otherwise hold on to the space the next one needs.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Writes the snapshot to `tmp`, then publishes it as `path`.
fn write_file(
    hub: &Hub,
    dir: &Path,
    path: &Path,
    tmp: &Path,
    (seq, changes_after): (Seq, u32),
    maps: &crate::hub::state::SnapshotMaps,
) -> io::Result<(u64, u64)> {
    let mut out = Checked {
        file: BufWriter::with_capacity(1 << 20, File::create(tmp)?),
        crc: crc32fast::Hasher::new(),
        bytes: 0,
    };
    let mut e = Enc::default();
    e.buf.extend_from_slice(MAGIC);
    e.u32(FORMAT_VERSION);
    e.u64(seq.0);
    e.u32(changes_after);
    e.str(hub.epoch());
    e.i64(now_millis());
    e.u32(maps.len() as u32);
    for (key, counts) in maps {
        MapCounts::encode(key, counts, &mut e);
    }
    out.put(&mut e)?;
    let mut entities = 0u64;
    // Entities go in chunks of a few MiB, each with its length, so a loader can decode
    // the chunks on several threads.
    let mut chunk = Enc::default();
    let flush = |chunk: &mut Enc, out: &mut Checked| -> io::Result<()> {
        if chunk.buf.is_empty() {
            return Ok(());
        }
        let mut head = Enc::default();
        head.u8(CHUNK);
        head.u64(chunk.buf.len() as u64);
        out.put(&mut head)?;
        out.put(chunk)
    };
    hub.state().walk_snapshot(&mut |item| {
        entities += 1;
        let c = &mut chunk;
        match item {
            SnapshotItem::Customer(id, customer) => {
                let with_client = !customer.client.is_empty();
                c.u8(if with_client {
                    CUSTOMER_WITH_CLIENT
                } else {
                    CUSTOMER
                });
                c.uuid(id.0);
                customer.encode(c);
                if with_client {
                    customer.client.encode(c);
                }
            }
            SnapshotItem::Profile(id, profile) => {
                c.u8(match profile.company {
                    Some(_) => PROFILE_WITH_COMPANY,
                    None => PROFILE,
                });
                c.uuid(id.0);
                profile.encode(c);
                if let Some(company) = &profile.company {
                    encode_membership(company, c);
                }
            }
            SnapshotItem::Company(id, company) => {
                c.u8(COMPANY);
                company.encode(id, c);
            }
            SnapshotItem::Action(action) => {
                c.u8(ACTION);
                action.encode(c);
            }
            SnapshotItem::Segments(next, defs) => {
                c.u8(SEGMENTS);
                c.u64(next);
                c.u32(defs.len() as u32);
                for segment in defs {
                    c.str(&serde_json::to_string(segment).expect("a segment serializes"));
                }
            }
        }
        if chunk.buf.len() >= CHUNK_BYTES {
            flush(&mut chunk, &mut out)?;
        }
        Ok::<(), io::Error>(())
    })?;
    flush(&mut chunk, &mut out)?;
    e.u8(END);
    out.put(&mut e)?;
    // The snapshot may not name a seq the log does not hold durably: after a power loss
    // the log could end before it, and replay after the snapshot would have a silent gap.
    // So the pipeline is asked to sync up to it (whatever the fsync policy), and the file
    // is published only then.
    hub.log_status().wait_durable(seq, LOG_CATCH_UP)?;
    let crc = out.crc.clone().finalize();
    out.file.write_all(&crc.to_le_bytes())?;
    let file = out.file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    wal::sync_dir(dir)?;
    Ok((out.bytes + 4, entities))
}

/// A file writer that checksums what it writes.
struct Checked {
    file: BufWriter<File>,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl Checked {
    fn put(&mut self, e: &mut Enc) -> io::Result<()> {
        self.crc.update(&e.buf);
        self.file.write_all(&e.buf)?;
        self.bytes += e.buf.len() as u64;
        e.buf.clear();
        Ok(())
    }
}

/// Reads a snapshot file.
pub fn load(path: &Path) -> Result<Loaded, SnapshotError> {
    let bytes = fs::read(path).map_err(|source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    })?;
    let corrupt = |why: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        why,
    };
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(corrupt("the header is missing or damaged".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version > FORMAT_VERSION {
        return Err(SnapshotError::FutureFormat {
            path: path.to_owned(),
            found: version,
        });
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(corrupt("its checksum does not match".into()));
    }
    decode(&body[12..], version)
        .map_err(|e| corrupt(e.to_string()))
        .map(|(seq, changes_after, epoch, state)| Loaded {
            seq,
            changes_after,
            epoch,
            state,
            path: path.to_owned(),
        })
}

type Decoded = (Seq, Option<u32>, String, HubState);

fn decode(body: &[u8], version: u32) -> Result<Decoded, DecodeError> {
    let mut d = Dec::new(body);
    let seq = Seq(d.u64()?);
    let changes_after = if version >= 4 { Some(d.u32()?) } else { None };
    let epoch = d.str()?.to_string();
    let _written_at = d.i64()?;
    let n = d.u32()?;
    let maps = (0..n)
        .map(|_| MapCounts::decode(&mut d))
        .collect::<Result<_, _>>()?;
    // Entities go straight into the maps, sized from the file (an action is ~180 bytes),
    // from several threads, a chunk at a time.
    let state = HubState::restoring(maps, body.len() / 180);
    let mut chunks = Vec::new();
    loop {
        match d.u8()? {
            END => break,
            CHUNK => {
                let len = usize::try_from(d.u64()?).map_err(|_| DecodeError("chunk length"))?;
                chunks.push(d.bytes(len)?);
            }
            _ => return Err(DecodeError("unknown section tag")),
        }
    }
    if !d.is_empty() {
        return Err(DecodeError("bytes after the end"));
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..LOAD_THREADS)
            .map(|i| {
                let (state, chunks) = (&state, &chunks);
                scope.spawn(move || {
                    chunks
                        .iter()
                        .skip(i)
                        .step_by(LOAD_THREADS)
                        .try_for_each(|chunk| decode_chunk(state, chunk))
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a chunk decoder does not panic"))
    })?;
    // Members follow from the profiles and the definitions, so a snapshot holds none.
    state.rebuild_segment_members();
    Ok((seq, changes_after, epoch, state))
}

fn decode_chunk(state: &HubState, chunk: &[u8]) -> Result<(), DecodeError> {
    let mut d = Dec::new(chunk);
    while !d.is_empty() {
        match d.u8()? {
            CUSTOMER => state.restore_customer(CustomerId(d.uuid()?), Customer::decode(&mut d)?),
            CUSTOMER_WITH_CLIENT => {
                let id = CustomerId(d.uuid()?);
                let mut customer = Customer::decode(&mut d)?;
                customer.client = ClientInfo::decode(&mut d)?;
                state.restore_customer(id, customer)
            }
            PROFILE => state.restore_profile(VisitorId(d.uuid()?), Profile::decode(&mut d)?),
            PROFILE_WITH_COMPANY => {
                let id = VisitorId(d.uuid()?);
                let mut profile = Profile::decode(&mut d)?;
                profile.company = Some(decode_membership(&mut d)?);
                state.restore_profile(id, profile)
            }
            COMPANY => {
                let (id, company) = Company::decode(&mut d)?;
                state.restore_company(id, company)
            }
            ACTION => state.restore_action(Action::decode(&mut d)?),
            SEGMENTS => {
                let next = d.u64()?;
                let defs = (0..d.u32()?)
                    .map(|_| {
                        serde_json::from_str::<Segment>(d.str()?)
                            .map_err(|_| DecodeError("an unreadable segment definition"))
                    })
                    .collect::<Result<_, _>>()?;
                state.restore_segments(next, defs)
            }
            _ => return Err(DecodeError("unknown entity tag")),
        }
    }
    Ok(())
}

/// Deletes all but the newest [`KEEP`] snapshots, then the log segments that hold only
/// events at or before both the older kept snapshot and the retained history's start.
pub fn prune(data_dir: &Path, retained_from: Seq) -> io::Result<()> {
    let snapshots = list(data_dir)?;
    for (_, path) in snapshots.iter().skip(KEEP) {
        fs::remove_file(path)?;
    }
    let Some((oldest_kept, _)) = snapshots[..snapshots.len().min(KEEP)].last() else {
        return Ok(());
    };
    // Every event after `needed_from - 1` must stay in the log.
    let needed_from = Seq(oldest_kept.0 + 1).min(retained_from);
    let segments = wal::segments(&data_dir.join("wal"))?;
    for pair in segments.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first <= needed_from {
            fs::remove_file(path)?;
        }
    }
    Ok(())
}

/// How long the snapshot thread waits before trying again after `failures` failures in a
/// row: each walk of the whole state costs, and on a full disk it cannot succeed until
/// space returns, so the delay doubles up to [`MAX_RETRY_DELAY`].
pub fn retry_delay(failures: u32) -> Duration {
    let doubled = FIRST_RETRY_DELAY.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_RETRY_DELAY)
}

const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Writes snapshots in the background every `snapshot_interval` (when anything changed)
/// and every `snapshot_every_events` events, until `stop` says so or is dropped. Returns
/// the seq of the last snapshot written (or `last` if none was).
pub fn run(hub: Arc<Hub>, data_dir: PathBuf, stop: Receiver<()>, mut last: Seq) -> Seq {
    let mut since = Instant::now();
    let mut failures = 0u32;
    let mut retry_at = Instant::now();
    loop {
        match stop.recv_timeout(Duration::from_millis(100)) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return last,
        }
        let latest = hub.latest_seq();
        // An anonymization or erasure is due too: its compaction follows a snapshot.
        let due = (since.elapsed() >= hub.config().snapshot_interval
            && (latest > last || hub.has_forgotten()))
            || latest.0.saturating_sub(last.0) >= hub.config().snapshot_every_events;
        if !due || Instant::now() < retry_at {
            continue;
        }
        since = Instant::now();
        match take_and_prune(&hub, &data_dir) {
            Ok(written) => {
                hub.metrics()
                    .snapshot_seconds
                    .observe(since.elapsed().as_secs_f64());
                last = written.seq;
                failures = 0;
            }
            Err(e) => {
                hub.metrics().snapshot_failures.inc();
                failures += 1;
                let delay = retry_delay(failures);
                retry_at = Instant::now() + delay;
                warn!(
                    error = %e,
                    failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "writing a snapshot failed; the log keeps everything, trying again later"
                )
            }
        }
    }
}

/// Writes a snapshot, logs it, compacts the log for the anonymizations and erasures
/// before it, and prunes what it makes unnecessary.
pub fn take_and_prune(hub: &Hub, data_dir: &Path) -> io::Result<Written> {
    // Taken before the snapshot begins, so every one of them is in it.
    let forgotten = hub.take_forgotten();
    let written = match take(hub, data_dir) {
        Ok(written) => written,
        Err(e) => {
            hub.return_forgotten(forgotten);
            return Err(e);
        }
    };
    info!(
        seq = written.seq.0,
        bytes = written.bytes,
        entities = written.entities,
        lock_held_us = written.lock_held.as_micros() as u64,
        took_ms = written.took.as_millis() as u64,
        "snapshot written"
    );
    if !forgotten.is_empty() {
        if let Err(e) = forget_on_disk(hub, data_dir, &forgotten, written.seq) {
            hub.return_forgotten(forgotten);
            return Err(e);
        }
        info!(
            changes = forgotten.len(),
            "the log no longer holds what was forgotten"
        );
    }
    let retained_from = hub.with_history(|h| h.first_seq());
    prune(data_dir, retained_from)?;
    Ok(written)
}

/// Makes the data directory forget what `forgotten` forgot: the log is compacted (its
/// closed segments here, the newest by the pipeline, or here too once it has stopped),
/// and every snapshot but the one at `kept`, which
/// holds the state after all of them, is deleted, since the older ones hold the visitors
/// as they were. Until this is done, a restart still forgets them (the changes are in the
/// log and are replayed); this is what empties the files.
///
/// Why rewrite rather than encrypt each visitor's fields under a key erasure destroys
/// (crypto-shredding): the log's frames are the delivered bytes, read back by replay and
/// served to `since` subscribers without decoding; encrypting them would put a key lookup
/// and a decryption on every one of those paths, and a key store that must itself be
/// erased durably, while the rewrite costs one pass over the log per snapshot interval
/// with an anonymization or erasure in it, and keeps the log format as it was.
fn forget_on_disk(
    hub: &Hub,
    data_dir: &Path,
    forgotten: &[(Seq, crate::hub::state::AdminOp)],
    kept: Seq,
) -> io::Result<()> {
    // The closed segments are rewritten here, off the pipeline; only the newest one, which
    // the pipeline appends to, is left to it, with the changes the older ones did not hold.
    let wal_dir = data_dir.join("wal");
    let newest = wal::segments(&wal_dir)?.last().map(|(first, _)| *first);
    if let Some(newest) = newest {
        let (left, _) = wal::compact(&wal_dir, forgotten, ..newest)?;
        if !left.is_empty()
            && !hub
                .log_status()
                .compact(left.clone(), newest, LOG_CATCH_UP)?
        {
            wal::compact(&wal_dir, &left, newest..)?;
        }
    }
    for (seq, path) in list(data_dir)? {
        if seq != kept {
            fs::remove_file(path)?;
        }
    }
    wal::sync_dir(&dir(data_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: PathBuf) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_written_snapshot_loads_back_the_same_state() {
        use crate::ids::{ActionId, ActionMapId, SessionId};
        use crate::ingest::event::Event;
        let data = tempfile::tempdir().unwrap();
        let config = Arc::new(crate::Config::ephemeral(data.path()));
        let (hub, pipeline) = Hub::start(config, Box::new(crate::store::log::MemoryOnly));
        let map = ActionMapId::new_random();
        let mut actions = Vec::new();
        let mut customers = Vec::new();
        for i in 0..200 {
            let (customer, session) = (CustomerId::new_random(), SessionId::new_random());
            let action = ActionId::new_random();
            let mut events = vec![serde_json::json!({
                "actionId": action.to_string(), "actionState": "offered",
                "actionMediaType": "webchat", "actionMapId": map.to_string(),
                "actionMapVersion": 1, "customerId": customer.to_string(),
                "sessionId": session.to_string(), "data": {"i": i},
            })];
            if i % 3 == 0 {
                events.push(serde_json::json!({
                    "type": "signin", "customerId": customer.to_string(),
                    "sessionId": session.to_string(), "userId": format!("u{}", i % 7),
                    "traits": {"i": i},
                }));
            }
            let events = events.into_iter().map(Event::from_json).collect();
            for result in hub.publish(events).await {
                result.unwrap();
            }
            actions.push(action);
            customers.push(customer);
        }
        let written = take(&hub, data.path()).unwrap();
        let loaded = load(&list(data.path()).unwrap()[0].1).unwrap();
        assert_eq!(
            (loaded.seq, &loaded.epoch),
            (written.seq, &hub.epoch().to_string())
        );
        assert_eq!(loaded.state.action_count(), actions.len());
        for a in &actions {
            assert_eq!(
                format!("{:?}", loaded.state.action(*a)),
                format!("{:?}", hub.state().action(*a))
            );
        }
        for c in &customers {
            assert_eq!(
                format!("{:?}", loaded.state.customer(*c)),
                format!("{:?}", hub.state().customer(*c))
            );
            assert_eq!(loaded.state.linked_users(*c), hub.state().linked_users(*c));
        }
        assert_eq!(loaded.state.map_counts(), hub.state().map_counts());
        assert_eq!(loaded.changes_after, Some(0));

        // The same file as format 3 wrote it (no count of visitor changes after its seq)
        // reads back the same state, and says it does not know the count.
        let path = &list(data.path()).unwrap()[0].1;
        let bytes = fs::read(path).unwrap();
        let mut older = bytes[..8].to_vec();
        older.extend_from_slice(&3u32.to_le_bytes());
        older.extend_from_slice(&bytes[12..20]);
        older.extend_from_slice(&bytes[24..bytes.len() - 4]);
        older.extend_from_slice(&crc32fast::hash(&older).to_le_bytes());
        fs::write(path, &older).unwrap();
        let old = load(path).unwrap();
        assert_eq!((old.seq, old.changes_after), (written.seq, None));
        assert_eq!(old.state.action_count(), actions.len());
        for c in &customers {
            assert_eq!(
                format!("{:?}", old.state.customer(*c)),
                format!("{:?}", hub.state().customer(*c))
            );
        }
        hub.close_pipeline();
        pipeline.join();
    }

    /// A log whose syncs can be watched: it remembers the newest seq appended and the
    /// newest one synced, and syncs only when asked (like `--fsync never`).
    struct WatchedLog {
        appended: Seq,
        synced: Arc<std::sync::atomic::AtomicU64>,
    }

    impl crate::store::log::Log for WatchedLog {
        fn append(&mut self, records: &[Arc<crate::hub::retention::Record>]) -> io::Result<()> {
            self.appended = records.last().map_or(self.appended, |r| r.seq);
            Ok(())
        }

        fn append_admin(&mut self, _op: &crate::hub::state::AdminOp) -> io::Result<()> {
            Ok(())
        }

        fn sync(&mut self) -> io::Result<()> {
            self.synced
                .store(self.appended.0, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_snapshot_is_published_only_once_the_log_is_durable_up_to_its_seq() {
        use crate::ingest::event::Event;
        let data = tempfile::tempdir().unwrap();
        let config = Arc::new(crate::Config::ephemeral(data.path()));
        let synced = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let log = WatchedLog {
            appended: Seq(0),
            synced: synced.clone(),
        };
        let (hub, pipeline) = Hub::start(config, Box::new(log));
        for _ in 0..5 {
            let event = Event::from_json(serde_json::json!({
                "type": "page", "customerId": CustomerId::new_random().to_string(),
                "sessionId": crate::ids::SessionId::new_random().to_string(),
                "page": {"url": "https://example.test/"},
            }));
            hub.publish_one(event).await.unwrap();
        }
        let hub2 = hub.clone();
        let dir = data.path().to_owned();
        let written = tokio::task::spawn_blocking(move || take(&hub2, &dir))
            .await
            .unwrap()
            .unwrap();
        assert!(written.seq.0 >= 5);
        assert!(
            synced.load(std::sync::atomic::Ordering::SeqCst) >= written.seq.0,
            "the snapshot at seq {} was published before the log was synced up to it",
            written.seq
        );
        hub.close_pipeline();
        pipeline.join();
    }

    #[test]
    fn failed_snapshots_are_retried_ever_later_up_to_a_cap() {
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }

    #[test]
    fn prune_keeps_two_snapshots_and_every_segment_they_or_retention_need() {
        let data = tempfile::tempdir().unwrap();
        for seq in [100u64, 200, 300] {
            touch(dir(data.path()).join(format!("{seq:020}.snap")));
        }
        // Segments hold 1-99, 100-149, 150-249, 250-...
        for first in [1u64, 100, 150, 250] {
            touch(data.path().join("wal").join(format!("{first:020}.wal")));
        }
        // The older kept snapshot is 200: events from 201 must stay, and retention
        // starts at 120, so the segment holding 120 stays too.
        prune(data.path(), Seq(120)).unwrap();
        assert_eq!(
            names(&dir(data.path())),
            [
                "00000000000000000200.snap".to_string(),
                "00000000000000000300.snap".to_string()
            ]
        );
        assert_eq!(
            names(&data.path().join("wal")),
            [
                "00000000000000000100.wal".to_string(),
                "00000000000000000150.wal".to_string(),
                "00000000000000000250.wal".to_string()
            ]
        );
        // When retention starts later, the snapshot decides: 201 is in the segment of 150.
        prune(data.path(), Seq(1000)).unwrap();
        assert_eq!(
            names(&data.path().join("wal")),
            [
                "00000000000000000150.wal".to_string(),
                "00000000000000000250.wal".to_string()
            ]
        );
    }
}
