//! The write-ahead log: every accepted event, in seq order, in segment files under
//! `<data-dir>/wal/`.
//!
//! A segment is named by the first seq it may hold (`00000000000000000001.wal`), starts
//! with a header (magic and format version) and holds records: length (u32 LE), crc32 of
//! the payload (u32 LE), payload. The payload carries what rebuilding needs without parsing
//! JSON for the retained history (seq, timestamp, eventId, the filter keys) and the event
//! frame, which [`crate::ingest::event::Published::from_frame`] turns back into the event for
//! replay. [`Wal`] is the [`Log`] the pipeline appends to, with the fsync policy; [`scan`]
//! reads a directory back, cutting nothing itself: it reports a torn tail for the caller
//! to cut once the whole data directory is known to be readable.
//!
//! The WAL also keeps the seq reservation (`<data-dir>/seq-reserved`): a crash can lose
//! events a subscriber saw (under `interval` or `never` they may be fanned out before they
//! are on disk), and under every policy a damaged last record is dropped. Before any seq
//! beyond the reserved mark is written (and therefore before it is delivered) the mark is
//! moved forward durably, and a restart after an unclean stop continues after the mark,
//! whatever the policy, so no seq is ever given to two different events.
//!
//! Only damage at the physical end of the newest segment is a torn tail (a write cut short
//! by a crash): when any readable record follows a bad one, the log is corrupt and
//! [`scan`] refuses, naming the file and the offset.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::clock::Millis;
use crate::config::FsyncPolicy;
use crate::hub::retention::{Forgetting, Record};
use crate::hub::state::AdminOp;
use crate::ids::{ActionId, ActionMapId, CustomerId, Seq, SessionId};
use crate::ingest::event::Published;
use crate::ingest::topic::{EventKeys, Topic};
use crate::ingest::wire::WireFrame;
use crate::store::codec::{Dec, DecodeError, Enc};
use crate::store::log::Log;

const MAGIC: &[u8; 8] = b"AHUBWAL\0";
/// The segment format this release writes; a higher one on disk is refused.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: u64 = 12;
/// Length and crc in front of every payload.
const RECORD_HEAD_BYTES: usize = 8;
/// A payload longer than this is corruption, not an event (events are a few KiB at most).
const MAX_PAYLOAD_BYTES: u32 = 64 * 1024 * 1024;
/// Seqs reserved per durable write of the reservation file.
pub const RESERVE_BLOCK: u64 = 100_000;
const RESERVATION_FILE: &str = "seq-reserved";

/// What can go wrong reading a log back.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path} was written by a newer actionhub (log format {found}, this release reads up to \
         {FORMAT_VERSION}); refusing to start, nothing was changed"
    )]
    FutureFormat { path: PathBuf, found: u32 },
    #[error(
        "{path} is corrupt at byte {offset} ({why}), and it is not the newest segment: history \
         after it would be lost. Move the data directory aside (or restore it from a backup) \
         and start again"
    )]
    CorruptMiddle {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error(
        "{path} is corrupt at byte {offset} ({why}), and readable records follow it from byte \
         {resumes}: this is damage, not a write cut short by a crash, and cutting it would lose \
         them. Refusing to start, nothing was changed: move the data directory aside (or \
         restore it from a backup) and start again"
    )]
    CorruptNewest {
        path: PathBuf,
        offset: u64,
        why: String,
        resumes: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A torn end of the newest segment (nothing readable after it), to be cut off.
#[derive(Debug, Clone, PartialEq)]
pub struct TornTail {
    pub path: PathBuf,
    /// Bytes of good data; the file is cut to this length.
    pub keep: u64,
    pub why: String,
}

/// A directory of segments read back.
#[derive(Debug, Default)]
pub struct Scan {
    /// The first seq of the oldest segment (its name), if any.
    pub first_segment: Option<Seq>,
    pub last_seq: Option<Seq>,
    pub records: usize,
    pub torn: Option<TornTail>,
}

/// The segment files of a directory, oldest first, with their first seqs.
pub fn segments(dir: &Path) -> io::Result<Vec<(Seq, PathBuf)>> {
    let mut out = files_by_seq(dir, ".wal")?;
    out.sort();
    Ok(out)
}

/// The files of `dir` named `<seq><suffix>`, in no particular order (none if `dir` is
/// missing). Log segments and snapshots are both named this way.
pub fn files_by_seq(dir: &Path, suffix: &str) -> io::Result<Vec<(Seq, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(seq) = name.strip_suffix(suffix).and_then(|s| s.parse().ok()) {
            out.push((Seq(seq), path));
        }
    }
    Ok(out)
}

/// Reads every record of the segments in `dir`, oldest first, handing each to `each`.
/// Reads only: a torn tail of the newest segment is reported in [`Scan::torn`].
/// One entry of the log: an event, or a visitor change that is not one (see [`AdminOp`]),
/// logged after the event at `after`.
pub enum Entry {
    Event(Record),
    Admin { after: Seq, op: AdminOp },
}

/// The first byte of every payload says which kind of entry it holds.
const KIND_EVENT: u8 = 0;
const KIND_ADMIN: u8 = 1;

pub fn scan(dir: &Path, mut each: impl FnMut(Entry)) -> Result<Scan, WalError> {
    let segments = segments(dir).map_err(io_err(dir))?;
    let mut out = Scan {
        first_segment: segments.first().map(|(s, _)| *s),
        ..Scan::default()
    };
    let count = segments.len();
    for (index, (_, path)) in segments.iter().enumerate() {
        // One buffer per segment; the records' frames are slices of it, not copies.
        let bytes = Bytes::from(fs::read(path).map_err(io_err(path))?);
        let newest = index + 1 == count;
        // Damage is a torn tail only at the physical end of the newest segment: when a
        // readable record follows it, cutting there would lose that record and more.
        let bad = |offset: u64, why: String, previous: Option<Seq>| -> Result<(), WalError> {
            if !newest {
                return Err(WalError::CorruptMiddle {
                    path: path.clone(),
                    offset,
                    why,
                });
            }
            match next_readable(&bytes, offset as usize, previous) {
                Some(resumes) => Err(WalError::CorruptNewest {
                    path: path.clone(),
                    offset,
                    why,
                    resumes: resumes as u64,
                }),
                None => Ok(()),
            }
        };
        if bytes.len() < HEADER_BYTES as usize || &bytes[..8] != MAGIC {
            let why = "the segment header is missing or damaged".to_string();
            bad(0, why.clone(), None)?;
            out.torn = Some(TornTail {
                path: path.clone(),
                keep: 0,
                why,
            });
            break;
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version > FORMAT_VERSION {
            return Err(WalError::FutureFormat {
                path: path.clone(),
                found: version,
            });
        }
        let mut at = HEADER_BYTES as usize;
        while at < bytes.len() {
            match read_entry(&bytes.slice(at..), out.last_seq) {
                Ok((entry, used)) => {
                    if let Entry::Event(record) = &entry {
                        out.last_seq = Some(record.seq);
                        out.records += 1;
                    }
                    each(entry);
                    at += used;
                }
                Err(why) => {
                    bad(at as u64, why.clone(), out.last_seq)?;
                    out.torn = Some(TornTail {
                        path: path.clone(),
                        keep: at as u64,
                        why,
                    });
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// The first offset after `from` where a readable entry starts (whole, its checksum right,
/// and following `previous`), if any. Slow only on a damaged segment.
fn next_readable(bytes: &Bytes, from: usize, previous: Option<Seq>) -> Option<usize> {
    (from + 1..bytes.len()).find(|&at| {
        // Every payload starts with its kind: most offsets are passed over on that alone.
        matches!(
            bytes.get(at + RECORD_HEAD_BYTES),
            Some(&KIND_EVENT | &KIND_ADMIN)
        ) && read_entry(&bytes.slice(at..), previous).is_ok()
    })
}

/// One entry at the front of `bytes`, and how many bytes it took.
fn read_entry(bytes: &Bytes, previous: Option<Seq>) -> Result<(Entry, usize), String> {
    if bytes.len() < RECORD_HEAD_BYTES {
        return Err(format!(
            "a record head is cut short ({} bytes)",
            bytes.len()
        ));
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD_BYTES {
        return Err(format!("a record claims {len} bytes"));
    }
    let end = RECORD_HEAD_BYTES + len as usize;
    if bytes.len() < end {
        return Err(format!(
            "a record of {len} bytes is cut short at {}",
            bytes.len() - RECORD_HEAD_BYTES
        ));
    }
    let payload = bytes.slice(RECORD_HEAD_BYTES..end);
    if crc32fast::hash(&payload) != crc {
        return Err("a record's checksum does not match".into());
    }
    let entry = decode_entry(&payload).map_err(|e| e.to_string())?;
    match &entry {
        Entry::Event(record) if previous.is_some_and(|p| record.seq <= p) => {
            Err(format!("seq {} does not follow {:?}", record.seq, previous))
        }
        Entry::Admin { after, .. } if previous.is_some_and(|p| *after < p) => Err(format!(
            "a change after seq {after} follows seq {:?}",
            previous
        )),
        _ => Ok((entry, end)),
    }
}

fn encode_admin(enc: &mut Enc, after: Seq, op: &AdminOp) {
    let start = enc.buf.len();
    enc.u32(0);
    enc.u32(0);
    enc.u8(KIND_ADMIN);
    enc.u64(after.0);
    enc.str(&serde_json::to_string(op).expect("admin changes serialize"));
    seal(enc, start);
}

/// Fills in the length and checksum of the entry that starts at `start`.
fn seal(enc: &mut Enc, start: usize) {
    let payload = &enc.buf[start + RECORD_HEAD_BYTES..];
    let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
    enc.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    enc.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn decode_entry(payload: &Bytes) -> Result<Entry, DecodeError> {
    match payload.first() {
        Some(&KIND_EVENT) => decode_record(&payload.slice(1..)).map(Entry::Event),
        Some(&KIND_ADMIN) => {
            let mut d = Dec::new(&payload[1..]);
            let after = Seq(d.u64()?);
            let op = serde_json::from_str(d.str()?)
                .map_err(|_| DecodeError("an admin change does not parse"))?;
            Ok(Entry::Admin { after, op })
        }
        _ => Err(DecodeError("unknown entry kind")),
    }
}

fn encode_record(enc: &mut Enc, r: &Record) {
    let start = enc.buf.len();
    enc.u32(0);
    enc.u32(0);
    enc.u8(KIND_EVENT);
    enc.u64(r.seq.0);
    enc.i64(r.timestamp);
    enc.opt_str(r.event_id.as_deref());
    let k = &r.keys;
    enc.str(k.topic.as_str());
    enc.uuid(k.customer.0);
    match &k.other_customers {
        Some(others) => {
            enc.bool(true);
            enc.u32(others.len() as u32);
            for c in others.iter() {
                enc.uuid(c.0);
            }
        }
        None => enc.bool(false),
    }
    enc.opt_uuid(k.session.map(|s| s.0));
    enc.opt_uuid(k.action.map(|a| a.0));
    enc.opt_uuid(k.action_map.map(|m| m.0));
    enc.bool(k.action_map_version.is_some());
    enc.u32(k.action_map_version.unwrap_or(0));
    enc.str(r.frame.as_str());
    seal(enc, start);
}

fn decode_record(payload: &Bytes) -> Result<Record, DecodeError> {
    let mut d = Dec::new(payload);
    let seq = Seq(d.u64()?);
    let timestamp: Millis = d.i64()?;
    let event_id = d.opt_str()?.map(Box::from);
    let topic_name = d.str()?;
    let topic = Topic::all()
        .find(|t| t.as_str() == topic_name)
        .ok_or(DecodeError("unknown topic"))?;
    let customer = CustomerId(d.uuid()?);
    let other_customers = match d.bool()? {
        true => {
            let n = d.u32()? as usize;
            let ids = (0..n)
                .map(|_| d.uuid().map(CustomerId))
                .collect::<Result<Vec<_>, _>>()?;
            Some(ids.into())
        }
        false => None,
    };
    let session = d.opt_uuid()?.map(SessionId);
    let action = d.opt_uuid()?.map(ActionId);
    let action_map = d.opt_uuid()?.map(ActionMapId);
    let has_version = d.bool()?;
    let version = d.u32()?;
    let frame_len = d.u32()? as usize;
    if d.remaining() != frame_len {
        return Err(DecodeError("the frame's length does not match the record"));
    }
    // An erased record (see [`compact`]) keeps no frame at all.
    let frame = match frame_len {
        0 => WireFrame::default(),
        _ => std::str::from_utf8(&payload[payload.len() - frame_len..])
            .map(WireFrame::text)
            .map_err(|_| DecodeError("a frame is not UTF-8"))?,
    };
    // A segment event's segment is read from its frame rather than kept in the record,
    // so the record's layout stays the one every release reads.
    let segment = match topic {
        Topic::SEGMENT_ENTERED | Topic::SEGMENT_LEFT if !frame.is_empty() => {
            Published::from_frame(frame.as_str())
                .map_err(|_| DecodeError("a segment event's frame is unreadable"))?
                .body
                .keys()
                .segment
        }
        _ => None,
    };
    Ok(Record {
        seq,
        timestamp,
        keys: EventKeys {
            topic,
            customer,
            other_customers,
            session,
            action,
            action_map,
            action_map_version: has_version.then_some(version),
            segment,
        },
        event_id,
        frame,
    })
}

/// Anonymizations and erasures, each with the seq it was logged after, in log order.
pub type Forgotten = Vec<(Seq, AdminOp)>;

/// Rewrites the segments in `dir` so that nothing logged before one of `forgotten` (an
/// anonymization or erasure, with the seq it was logged after) still holds what it forgets
/// ([`Forgetting`]): an earlier event of the visitor's becomes its anonymized or erased
/// record, with its seq, its time and the framing (length, crc) every record has, so replay,
/// gap checks and the seq reservation read the log as before; an earlier attribute update
/// loses its traits. The change's own record and everything after it stay as they are.
///
/// Crash-safe segment by segment: each is written whole to a temp file, synced, renamed
/// over the original, and the directory synced ([`write_atomically`]). A crash between two
/// segments leaves some rewritten and some not, which is still right: the change itself
/// stays in the log, and a restart applies it again to the history it rebuilds. Damage
/// in a segment (only a torn tail can be there, and recovery cuts it) is copied as it is.
///
/// Only the segments whose names `within` holds are read, oldest first: the snapshot
/// thread rewrites those before the newest (nobody appends to them any more), and the
/// pipeline, between its appends, the newest ([`Log::compact`]), or anyone once the
/// pipeline has stopped. Returns the changes whose own record these segments did not
/// hold (what comes after them still needs them), and the segments rewritten.
pub fn compact(
    dir: &Path,
    forgotten: &[(Seq, AdminOp)],
    within: impl RangeBounds<Seq>,
) -> io::Result<(Forgotten, Vec<PathBuf>)> {
    // The changes not yet met in the log: each rewrites what comes before its own record.
    let mut ahead: Vec<(Seq, &AdminOp, Forgetting<'_>)> = forgotten
        .iter()
        .filter_map(|(after, op)| Forgetting::of(op).map(|f| (*after, op, f)))
        .collect();
    let mut rewritten = Vec::new();
    for (first, path) in segments(dir)? {
        if ahead.is_empty() {
            break;
        }
        if !within.contains(&first) {
            continue;
        }
        let bytes = Bytes::from(fs::read(&path)?);
        if bytes.len() < HEADER_BYTES as usize || &bytes[..8] != MAGIC {
            continue;
        }
        let mut out = Enc::default();
        out.buf.extend_from_slice(&bytes[..HEADER_BYTES as usize]);
        let mut changed = false;
        let mut previous = None;
        let mut at = HEADER_BYTES as usize;
        while at < bytes.len() {
            let Ok((entry, used)) = read_entry(&bytes.slice(at..), previous) else {
                out.buf.extend_from_slice(&bytes[at..]);
                break;
            };
            let kept = &bytes[at..at + used];
            at += used;
            match entry {
                Entry::Event(record) => {
                    previous = Some(record.seq);
                    let mut replaced: Option<Record> = None;
                    for (after, _, forgetting) in &ahead {
                        if record.seq <= *after {
                            if let Some(r) = forgetting.record(replaced.as_ref().unwrap_or(&record))
                            {
                                replaced = Some(r);
                            }
                        }
                    }
                    match replaced {
                        Some(r) => {
                            encode_record(&mut out, &r);
                            changed = true;
                        }
                        None => out.buf.extend_from_slice(kept),
                    }
                }
                Entry::Admin { after, op } => {
                    if let Some(met) = ahead.iter().position(|(a, o, _)| *a == after && **o == op) {
                        ahead.remove(met);
                        out.buf.extend_from_slice(kept);
                        continue;
                    }
                    let mut replaced: Option<AdminOp> = None;
                    for (_, _, forgetting) in &ahead {
                        if let Some(o) = forgetting.admin(replaced.as_ref().unwrap_or(&op)) {
                            replaced = Some(o);
                        }
                    }
                    match replaced {
                        Some(o) => {
                            encode_admin(&mut out, after, &o);
                            changed = true;
                        }
                        None => out.buf.extend_from_slice(kept),
                    }
                }
            }
        }
        if changed {
            write_atomically(&path, &out.buf)?;
            rewritten.push(path);
        }
    }
    let left = ahead
        .into_iter()
        .map(|(after, op, _)| (after, op.clone()))
        .collect();
    Ok((left, rewritten))
}

/// Cuts a torn tail off, keeping the good records before it.
pub fn cut(torn: &TornTail) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(&torn.path)?;
    if torn.keep < HEADER_BYTES {
        // Not even a header survived: the segment held nothing readable.
        drop(file);
        return fs::remove_file(&torn.path);
    }
    file.set_len(torn.keep)?;
    file.sync_all()
}

/// The reservation file: the highest seq this hub may have handed out. A restart continues
/// after it under every fsync policy; a clean stop brings it back to the last seq logged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reservation {
    pub reserved: Seq,
}

impl Reservation {
    pub fn read(data_dir: &Path) -> io::Result<Option<Reservation>> {
        let text = match fs::read_to_string(data_dir.join(RESERVATION_FILE)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut fields = text.split_whitespace();
        let parsed = (|| {
            if fields.next()? != "actionhub-seq-reserved-v1" {
                return None;
            }
            let reserved = fields.next()?.parse().ok()?;
            // The third word ("synced" after a clean stop, "unsynced" while running) is
            // for releases that trusted the log under `--fsync always`; this one does not
            // need it.
            fields.next()?;
            Some(Reservation {
                reserved: Seq(reserved),
            })
        })();
        parsed.map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{RESERVATION_FILE} is damaged: {text:?}"),
            )
        })
    }

    /// `clean`: every seq up to the mark is logged and synced (a clean stop), so an older
    /// release reading the file continues right after it.
    fn write(&self, data_dir: &Path, clean: bool) -> io::Result<()> {
        let text = format!(
            "actionhub-seq-reserved-v1 {} {}\n",
            self.reserved.0,
            if clean { "synced" } else { "unsynced" }
        );
        write_atomically(&data_dir.join(RESERVATION_FILE), text.as_bytes())
    }
}

/// Writes a file so that a crash leaves either the old or the new content: temp file,
/// fsync, rename, fsync the directory. A failed write removes its temp file: on a full
/// disk it would hold on to space, and nothing ever reads it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `records` as one log segment in `dir` (named by the first one's seq), the
/// format [`scan`] reads: how a cluster's shared snapshot carries the retained history.
/// Returns the file's size.
pub fn write_segment(dir: &Path, records: &[Arc<Record>]) -> io::Result<u64> {
    let first = records.first().map_or(Seq(0), |r| r.seq);
    let path = dir.join(format!("{:020}.wal", first.0));
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut out = io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        let mut enc = Enc::default();
        let mut size = HEADER_BYTES;
        for record in records {
            encode_record(&mut enc, record);
            if enc.buf.len() >= 1 << 20 {
                out.write_all(&enc.buf)?;
                size += enc.buf.len() as u64;
                enc.buf.clear();
            }
        }
        out.write_all(&enc.buf)?;
        size += enc.buf.len() as u64;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(size)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Makes renames and new files in a directory durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The write-ahead log the pipeline appends to.
///
/// Opening it writes nothing, so a hub starts on a full disk; the first append (or
/// [`Log::prepare`]) creates the segment it needs and reserves seqs. Each append is all or
/// nothing: a batch starts a new segment only before its first record (never spans two),
/// and a failed write or sync cuts the segment back to where the batch began, so a retry
/// after a full disk never leaves a half record in the middle of the log.
pub struct Wal {
    data_dir: PathBuf,
    dir: PathBuf,
    /// The open segment; `None` until the first append creates one (the newest segment on
    /// disk was full, or there was none).
    file: Option<File>,
    /// Bytes in the open segment; a new segment starts when this passes `max_segment_bytes`.
    size: u64,
    max_segment_bytes: u64,
    policy: FsyncPolicy,
    interval: Duration,
    /// Written since the last fdatasync.
    dirty: bool,
    last_sync: Instant,
    /// The mark as it is on disk: moved only once the file says so.
    reservation: Reservation,
    last_seq: Seq,
    buf: Enc,
}

impl Wal {
    /// Opens the log for appending after `last_seq`: the newest segment when it has room
    /// (else the first append starts a new one). Writes nothing.
    pub fn open(
        data_dir: &Path,
        last_seq: Seq,
        policy: FsyncPolicy,
        interval: Duration,
        max_segment_bytes: u64,
    ) -> io::Result<Wal> {
        let dir = data_dir.join("wal");
        fs::create_dir_all(&dir)?;
        let max_segment_bytes = max_segment_bytes.max(HEADER_BYTES + 1);
        let (file, size) = match segments(&dir)?.pop() {
            Some((_, path)) if fs::metadata(&path)?.len() < max_segment_bytes => {
                let file = OpenOptions::new().append(true).open(&path)?;
                let size = file.metadata()?.len();
                (Some(file), size)
            }
            _ => (None, 0),
        };
        Ok(Wal {
            data_dir: data_dir.to_owned(),
            dir,
            file,
            size,
            max_segment_bytes,
            policy,
            interval,
            dirty: false,
            last_sync: Instant::now(),
            reservation: Reservation { reserved: last_seq },
            last_seq,
            buf: Enc::default(),
        })
    }

    /// Gets ready for a batch of seqs `first..=last` (`last` < `first` for an admin change):
    /// a segment with room, and the reservation mark well past `last`.
    fn begin_batch(&mut self, first: Seq, last: Seq) -> io::Result<()> {
        if self.file.is_none() || self.size >= self.max_segment_bytes {
            self.roll(first)?;
        }
        self.reserve_past(last)
    }

    /// Moves the reservation mark well past `seq` when `seq` comes near it.
    fn reserve_past(&mut self, seq: Seq) -> io::Result<()> {
        if seq.0 + RESERVE_BLOCK / 2 > self.reservation.reserved.0 {
            let moved = Reservation {
                reserved: Seq(seq.0 + RESERVE_BLOCK),
            };
            moved.write(&self.data_dir, false)?;
            self.reservation = moved;
        }
        Ok(())
    }

    fn roll(&mut self, first: Seq) -> io::Result<()> {
        // Synced under every policy: a sync asked for later (for a snapshot) covers only the
        // open segment.
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        self.file = Some(new_segment(&self.dir, first)?);
        self.size = HEADER_BYTES;
        self.dirty = false;
        Ok(())
    }

    /// Writes the encoded batch, and syncs it when `sync`; on any error, cuts the segment
    /// back to where the batch began, so the batch is either whole in the log or not in it.
    fn write_batch(&mut self, sync: bool) -> io::Result<()> {
        let before = self.size;
        let file = self.file.as_mut().expect("begin_batch opened a segment");
        let written = file.write_all(&self.buf.buf).and_then(|()| match sync {
            true => file.sync_data(),
            false => Ok(()),
        });
        let len = self.buf.buf.len() as u64;
        self.buf.buf.clear();
        match written {
            Ok(()) => {
                self.size += len;
                self.dirty = !sync;
                if sync {
                    self.last_sync = Instant::now();
                }
                Ok(())
            }
            Err(e) => {
                // Shrinking needs no space; if even that fails the log cannot be trusted.
                file.set_len(before)?;
                file.seek(SeekFrom::Start(before))?;
                self.dirty = true;
                Err(e)
            }
        }
    }

    fn sync_file(&mut self) -> io::Result<()> {
        if let Some(file) = self.file.as_ref().filter(|_| self.dirty) {
            file.sync_data()?;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }
}

fn new_segment(dir: &Path, first: Seq) -> io::Result<File> {
    let path = dir.join(format!("{:020}.wal", first.0));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let written = file
        .write_all(&header)
        .and_then(|()| file.sync_all())
        .and_then(|()| sync_dir(dir));
    if written.is_err() {
        // A segment without its whole header would be read as a torn tail; not leaving it
        // keeps the directory as it was.
        let _ = fs::remove_file(&path);
    }
    written.map(|()| file)
}

impl Log for Wal {
    fn append(&mut self, records: &[Arc<Record>]) -> io::Result<()> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(());
        };
        self.begin_batch(first.seq, last.seq)?;
        for record in records {
            encode_record(&mut self.buf, record);
        }
        let sync = match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval => self.last_sync.elapsed() >= self.interval,
            FsyncPolicy::Never => false,
        };
        self.write_batch(sync)?;
        self.last_seq = last.seq;
        Ok(())
    }

    fn append_admin(&mut self, op: &AdminOp) -> io::Result<()> {
        self.begin_batch(self.last_seq.next(), self.last_seq)?;
        encode_admin(&mut self.buf, self.last_seq, op);
        // An erasure is acknowledged only once it would survive a crash, whatever the
        // policy for events: a deleted visitor must not come back.
        self.write_batch(true)
    }

    fn prepare(&mut self) -> io::Result<()> {
        self.begin_batch(self.last_seq.next(), self.last_seq)
    }

    fn compact(&mut self, forgotten: &[(Seq, AdminOp)], from: Seq) -> io::Result<()> {
        compact(&self.dir, forgotten, from..)?;
        // The open segment is the newest; if it was rewritten, its name is a new file now,
        // so appends go on there.
        if self.file.is_some() {
            if let Some((_, path)) = segments(&self.dir)?.pop() {
                let file = OpenOptions::new().append(true).open(&path)?;
                self.size = file.metadata()?.len();
                self.file = Some(file);
                self.dirty = false;
            }
        }
        Ok(())
    }

    fn tick(&mut self) -> io::Result<()> {
        if self.policy == FsyncPolicy::Interval && self.last_sync.elapsed() >= self.interval {
            self.sync_file()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_file()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sync_file()?;
        // A clean stop: everything handed out is on disk, so the next start continues
        // right after the last seq instead of skipping the reserved block.
        let clean = Reservation {
            reserved: self.last_seq,
        };
        clean.write(&self.data_dir, true)?;
        self.reservation = clean;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::lifecycle::{ActionState, MediaType};

    fn record(seq: u64, event_id: Option<&str>) -> Arc<Record> {
        Arc::new(Record {
            seq: Seq(seq),
            timestamp: 1_700_000_000_000 + seq as i64,
            keys: EventKeys {
                topic: Topic::lifecycle(MediaType::Webchat, ActionState::Offered),
                customer: CustomerId::new_random(),
                other_customers: seq
                    .is_multiple_of(2)
                    .then(|| vec![CustomerId::new_random()].into()),
                session: Some(SessionId::new_random()),
                action: Some(ActionId::new_random()),
                action_map: None,
                action_map_version: Some(3),
                segment: None,
            },
            event_id: event_id.map(Box::from),
            frame: WireFrame::text(&format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "x".repeat(50))),
        })
    }

    fn read(dir: &Path) -> (Vec<Arc<Record>>, Scan) {
        let mut out = Vec::new();
        let scan = scan(&dir.join("wal"), |entry| {
            if let Entry::Event(r) = entry {
                out.push(Arc::new(r))
            }
        })
        .unwrap();
        (out, scan)
    }

    fn same(a: &Record, b: &Record) -> bool {
        a.seq == b.seq
            && a.timestamp == b.timestamp
            && a.event_id == b.event_id
            && a.frame == b.frame
            && a.keys.topic == b.keys.topic
            && a.keys.customer == b.keys.customer
            && a.keys.other_customers == b.keys.other_customers
            && a.keys.session == b.keys.session
            && a.keys.action == b.keys.action
            && a.keys.action_map == b.keys.action_map
            && a.keys.action_map_version == b.keys.action_map_version
    }

    fn write(dir: &Path, seqs: std::ops::RangeInclusive<u64>, segment: u64) -> Vec<Arc<Record>> {
        let mut wal = Wal::open(
            dir,
            Seq(seqs.start() - 1),
            FsyncPolicy::Always,
            Duration::ZERO,
            segment,
        )
        .unwrap();
        let records: Vec<_> = seqs
            .map(|s| record(s, (s % 3 == 0).then_some("e")))
            .collect();
        for chunk in records.chunks(7) {
            wal.append(chunk).unwrap();
        }
        wal.flush().unwrap();
        records
    }

    /// Compaction erases what was logged before an erasure about its customers, in the
    /// closed segments and then the newest, and keeps every seq, every other record, the
    /// erasure itself and what came after it.
    #[test]
    fn compaction_forgets_only_what_came_before_the_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut written = write(dir.path(), 1..=20, 1024);
        let customers = vec![
            written[4].keys.customer,
            written[11].keys.customer,
            CustomerId::new_random(),
        ];
        let op = AdminOp::Delete {
            visitor_id: crate::ids::VisitorId::of_first_customer(customers[0]),
            customer_ids: customers.clone(),
        };
        let mut wal = Wal::open(
            dir.path(),
            Seq(20),
            FsyncPolicy::Always,
            Duration::ZERO,
            1024,
        )
        .unwrap();
        wal.append_admin(&op).unwrap();
        drop(wal);
        written.extend(write(dir.path(), 21..=40, 1024));
        // An event after the erasure about one of its customers is new, and stays.
        let template = record(41, None);
        let later = Arc::new(Record {
            seq: template.seq,
            timestamp: template.timestamp,
            keys: EventKeys {
                customer: customers[2],
                ..template.keys.clone()
            },
            event_id: None,
            frame: template.frame.clone(),
        });
        let mut wal = Wal::open(
            dir.path(),
            Seq(40),
            FsyncPolicy::Always,
            Duration::ZERO,
            1024,
        )
        .unwrap();
        wal.append(std::slice::from_ref(&later)).unwrap();
        wal.flush().unwrap();
        written.push(later);

        let wal_dir = dir.path().join("wal");
        let newest = segments(&wal_dir).unwrap().last().unwrap().0;
        let forgotten = vec![(Seq(20), op.clone())];
        let (left, rewritten) = compact(&wal_dir, &forgotten, ..newest).unwrap();
        assert!(
            left.is_empty(),
            "the erasure's own record is in a closed segment"
        );
        assert_eq!(
            rewritten.len(),
            2,
            "the segments of seqs 5 and 12: {rewritten:?}"
        );
        let (again, _) = compact(&wal_dir, &forgotten, newest..).unwrap();
        assert_eq!(again, forgotten, "the newest segment does not hold it");

        let mut admins = Vec::new();
        let mut records = Vec::new();
        let scan = scan(&wal_dir, |entry| match entry {
            Entry::Event(r) => records.push(r),
            Entry::Admin { after, op } => admins.push((after, op)),
        })
        .unwrap();
        assert!(scan.torn.is_none());
        assert_eq!(admins, forgotten, "the erasure stays in the log");
        assert_eq!(records.len(), written.len());
        for (read, was) in records.iter().zip(&written) {
            match read.seq.0 {
                5 | 12 => {
                    assert!(read.is_erased(), "seq {} is erased", read.seq);
                    assert_eq!((read.seq, read.timestamp), (was.seq, was.timestamp));
                    assert!(read.event_id.is_none());
                }
                _ => assert!(same(read, was), "seq {} is as it was", read.seq),
            }
        }
        let temp = fs::read_dir(&wal_dir)
            .unwrap()
            .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "tmp"));
        assert!(!temp, "every rewrite renamed its temp file");
    }

    #[test]
    fn records_read_back_across_segments_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut written = write(dir.path(), 1..=50, 1024);
        written.extend(write(dir.path(), 51..=60, 1024));
        let (records, scan) = read(dir.path());
        assert!(scan.torn.is_none());
        assert!(
            segments(&dir.path().join("wal")).unwrap().len() > 3,
            "rolled over"
        );
        assert_eq!(records.len(), written.len());
        assert!(records.iter().zip(&written).all(|(a, b)| same(a, b)));
        assert_eq!(scan.last_seq, Some(Seq(60)));
        let reservation = Reservation::read(dir.path()).unwrap().unwrap();
        assert_eq!(
            reservation.reserved,
            Seq(60),
            "a clean stop reserves nothing ahead"
        );
    }

    #[test]
    fn a_torn_tail_is_reported_and_cut_at_the_last_good_record() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1..=20, 1 << 20);
        let (_, path) = segments(&dir.path().join("wal")).unwrap().pop().unwrap();
        let full = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 5)
            .unwrap();
        let (records, scan) = read(dir.path());
        assert_eq!(records.len(), 19);
        let torn = scan.torn.expect("the tail is torn");
        cut(&torn).unwrap();
        let (records, scan) = read(dir.path());
        assert_eq!((records.len(), scan.torn), (19, None));
        // Appending after the cut continues cleanly.
        write(dir.path(), 20..=21, 1 << 20);
        assert_eq!(read_len(dir.path()), 21);
    }

    fn read_len(dir: &Path) -> usize {
        read(dir).0.len()
    }

    #[test]
    fn a_bad_crc_ends_the_newest_segment_but_is_an_error_in_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1..=40, 1024);
        let segs = segments(&dir.path().join("wal")).unwrap();
        let flip = |path: &Path| {
            let mut bytes = fs::read(path).unwrap();
            let at = bytes.len() - 3;
            bytes[at] ^= 0x40;
            fs::write(path, bytes).unwrap();
        };
        flip(&segs.last().unwrap().1);
        let (records, scan) = read(dir.path());
        assert!(scan.torn.is_some() && records.len() < 40 && !records.is_empty());
        flip(&segs[0].1);
        let err = super::scan(&dir.path().join("wal"), |_| {}).unwrap_err();
        assert!(matches!(err, WalError::CorruptMiddle { .. }), "{err}");
    }

    #[test]
    fn a_bad_record_followed_by_readable_ones_in_the_newest_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1..=20, 1 << 20);
        let (_, path) = segments(&dir.path().join("wal")).unwrap().pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let second = HEADER_BYTES as usize
            + RECORD_HEAD_BYTES
            + u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        bytes[second + RECORD_HEAD_BYTES + 3] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let err = super::scan(&dir.path().join("wal"), |_| {}).unwrap_err();
        match err {
            WalError::CorruptNewest { offset, .. } => assert_eq!(offset, second as u64),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_future_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1..=3, 1 << 20);
        let (_, path) = segments(&dir.path().join("wal")).unwrap().pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[8] = 9;
        fs::write(&path, &bytes).unwrap();
        let err = super::scan(&dir.path().join("wal"), |_| {}).unwrap_err();
        assert!(
            matches!(err, WalError::FutureFormat { found: 9, .. }),
            "{err}"
        );
    }

    #[test]
    fn the_reservation_runs_ahead_of_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(
            dir.path(),
            Seq(0),
            FsyncPolicy::Never,
            Duration::ZERO,
            1 << 20,
        )
        .unwrap();
        wal.append(&[record(1, None), record(2, None)]).unwrap();
        let reservation = Reservation::read(dir.path()).unwrap().unwrap();
        assert!(reservation.reserved.0 >= 2 + RESERVE_BLOCK / 2);
    }
}
