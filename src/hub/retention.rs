//! The retained event history: the most recent events, bounded by count and by age.
//!
//! It serves `since` replay and `GET /v1/events`. Seqs increase (consecutively, except
//! across an unclean restart that skipped reserved seqs), so a record is found by binary
//! search; a per-customer index of seqs serves customer histories without a scan.
//! Only the sequencer appends (under its lock); readers take the surrounding `RwLock` for
//! short, bounded scans and copy out shared records. What an anonymization or erasure
//! makes of earlier records ([`Forgetting`]) is decided here for every copy of them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::clock::Millis;
use crate::hub::state::AdminOp;
use crate::ids::{CustomerId, Seq, VisitorId};
use crate::ingest::topic::EventKeys;
use crate::ingest::wire::{self, WireFrame};

/// One accepted event, as everything downstream of the sequencer sees it.
#[derive(Debug)]
pub struct Record {
    pub seq: Seq,
    pub timestamp: Millis,
    pub keys: EventKeys,
    /// The client idempotency key, kept to forget it when the record leaves retention.
    pub event_id: Option<Box<str>>,
    /// The complete `event` frame, encoded once (as a WebSocket frame), shared by every
    /// receiver.
    pub frame: WireFrame,
}

impl Record {
    /// What is left of an erased event: its place in the order, nothing about anyone.
    pub fn erased(seq: Seq, timestamp: Millis) -> Record {
        Record {
            seq,
            timestamp,
            keys: EventKeys::erased(),
            event_id: None,
            frame: WireFrame::default(),
        }
    }

    /// Whether this record was erased (reads and replays skip it).
    pub fn is_erased(&self) -> bool {
        self.frame.is_empty()
    }

    /// The record as anonymizing keeps it: its frame rewritten by the one rule
    /// ([`wire::anonymized`]), its seq, time, filter keys and eventId as they were. None
    /// when that changes nothing (an erased record, or one anonymized already).
    pub fn anonymized(&self) -> Option<Record> {
        if self.is_erased() {
            return None;
        }
        let json = wire::anonymized(self.frame.as_str())?;
        (json != self.frame.as_str()).then(|| Record {
            seq: self.seq,
            timestamp: self.timestamp,
            keys: self.keys.clone(),
            event_id: self.event_id.clone(),
            frame: WireFrame::text(&json),
        })
    }

    /// The frame a connection gets for this record: the shared bytes, except that a
    /// connection confined to one customer (`viewer`, a browser token's) gets a
    /// `visitor:merged` event in a copy that names no other customer (see
    /// [`wire::confined_to`]). None: nothing may be sent (a frame that does not read back,
    /// which the hub never writes).
    pub fn frame_for(&self, viewer: Option<CustomerId>) -> Option<WireFrame> {
        match viewer {
            Some(viewer) if self.keys.other_customers.is_some() && !self.is_erased() => {
                wire::confined_to(self.frame.as_str(), viewer).map(|json| WireFrame::text(&json))
            }
            _ => Some(self.frame.clone()),
        }
    }
}

/// What an anonymization or an erasure does to what was recorded before it: the one
/// description the live history, a restart's rebuilt history and the log's compaction all
/// follow. Anonymizing rewrites each record about the visitor's customers as
/// [`Record::anonymized`]; erasing leaves only its seq and time ([`Record::erased`]); both
/// empty the traits of the visitor's earlier attribute updates.
#[derive(Clone, Copy, Debug)]
pub struct Forgetting<'a> {
    visitor: VisitorId,
    customers: &'a [CustomerId],
    erase: bool,
}

impl<'a> Forgetting<'a> {
    /// What `op` forgets, when it is an anonymization or an erasure.
    pub fn of(op: &'a AdminOp) -> Option<Forgetting<'a>> {
        match op {
            AdminOp::Anonymize {
                visitor_id,
                customer_ids,
            } => Some(Forgetting {
                visitor: *visitor_id,
                customers: customer_ids,
                erase: false,
            }),
            AdminOp::Delete {
                visitor_id,
                customer_ids,
            } => Some(Forgetting {
                visitor: *visitor_id,
                customers: customer_ids,
                erase: true,
            }),
            AdminOp::UpdateTraits { .. }
            | AdminOp::Evict { .. }
            | AdminOp::EvictActions { .. }
            | AdminOp::PutSegment { .. }
            | AdminOp::DeleteSegment { .. } => None,
        }
    }

    pub fn customers(&self) -> &'a [CustomerId] {
        self.customers
    }

    pub fn erases(&self) -> bool {
        self.erase
    }

    /// Whether `record` is about one of the visitor's customers.
    pub fn touches(&self, record: &Record) -> bool {
        record.keys.customers().any(|c| self.customers.contains(&c))
    }

    /// What is kept of an earlier `record` of the visitor's, or None when it stays as it
    /// is (it is about someone else, or was forgotten already).
    pub fn record(&self, record: &Record) -> Option<Record> {
        if !self.touches(record) {
            return None;
        }
        match self.erase {
            true => (!record.is_erased()).then(|| Record::erased(record.seq, record.timestamp)),
            false => record.anonymized(),
        }
    }

    /// What is kept of an earlier logged change, or None when it stays as it is: an
    /// attribute update of the visitor (by its id, or by any of its customers' ids, which
    /// it may have had before a merge) keeps its place and loses its traits and company.
    pub fn admin(&self, op: &AdminOp) -> Option<AdminOp> {
        match op {
            AdminOp::UpdateTraits {
                visitor_id,
                traits,
                company,
            } if (!traits.is_empty() || company.is_some())
                && (*visitor_id == self.visitor
                    || self.customers.contains(&visitor_id.first_customer())) =>
            {
                Some(AdminOp::UpdateTraits {
                    visitor_id: *visitor_id,
                    traits: Default::default(),
                    company: None,
                })
            }
            _ => None,
        }
    }
}

/// Aged records one append drops at most (see [`Retention::push`]).
const AGED_PER_PUSH: usize = 16;

/// The bounded history.
pub struct Retention {
    records: VecDeque<Arc<Record>>,
    by_customer: HashMap<CustomerId, VecDeque<Seq>>,
    max_events: usize,
    max_age_ms: Millis,
    /// The seq of the newest event ever appended (0 before the first).
    last_seq: Seq,
    /// How many times retained records were rewritten in place (anonymized, erased):
    /// a copy of the history taken before a rewrite holds what is no longer so.
    rewrites: u64,
}

impl Retention {
    pub fn new(max_events: usize, max_age_ms: Millis) -> Retention {
        Retention {
            records: VecDeque::new(),
            by_customer: HashMap::new(),
            max_events,
            max_age_ms,
            last_seq: Seq(0),
            rewrites: 0,
        }
    }

    /// How many times retained records were rewritten in place since this history began.
    pub fn rewrites(&self) -> u64 {
        self.rewrites
    }

    /// The seq of the oldest retained event; events after `first_seq() - 1` can be replayed.
    pub fn first_seq(&self) -> Seq {
        self.records.front().map_or(self.last_seq.next(), |r| r.seq)
    }

    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The retained records, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Record>> {
        self.records.iter()
    }

    /// Whether every event after `since` is still retained.
    pub fn covers(&self, since: Seq) -> bool {
        since <= self.last_seq && since.next() >= self.first_seq()
    }

    /// Appends the next event; returns the records that fell out (by count or by age).
    pub fn push(&mut self, record: Arc<Record>, now: Millis) -> Vec<Arc<Record>> {
        debug_assert!(record.seq > self.last_seq, "seqs are appended in order");
        self.last_seq = record.seq;
        for customer in record.keys.customers() {
            self.by_customer
                .entry(customer)
                .or_default()
                .push_back(record.seq);
        }
        self.records.push_back(record);
        let mut evicted = Vec::new();
        while self.records.len() > self.max_events {
            evicted.extend(self.pop_front());
        }
        // A few aged records per event; the sweeper takes the rest in chunks, so no
        // single publish pays for a long quiet spell's worth of aging.
        evicted.extend(self.evict_aged(now, AGED_PER_PUSH));
        evicted
    }

    /// Drops up to `max` records older than the age limit, oldest first.
    pub fn evict_aged(&mut self, now: Millis, max: usize) -> Vec<Arc<Record>> {
        // Saturating: a restored history is taken in at the earliest time (nothing aged).
        let cutoff = now.saturating_sub(self.max_age_ms);
        let mut evicted = Vec::new();
        while evicted.len() < max && self.records.front().is_some_and(|r| r.timestamp < cutoff) {
            evicted.extend(self.pop_front());
        }
        evicted
    }

    fn pop_front(&mut self) -> Option<Arc<Record>> {
        let record = self.records.pop_front()?;
        for customer in record.keys.customers() {
            if let Some(seqs) = self.by_customer.get_mut(&customer) {
                seqs.pop_front();
                if seqs.is_empty() {
                    self.by_customer.remove(&customer);
                }
            }
        }
        Some(record)
    }

    /// Continues after `seq` when the history restored from the log ends before it (seqs
    /// that were reserved, or delivered and then lost in a crash, are never reused).
    pub fn skip_to(&mut self, seq: Seq) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// The index of the first record with a seq of at least `seq`. Seqs increase but may
    /// skip (after an unclean stop), so this searches rather than subtracts.
    fn position(&self, seq: Seq) -> usize {
        self.records.partition_point(|r| r.seq < seq)
    }

    /// How many retained records have a seq after `after`, up to and including `upto`
    /// (seqs may skip, so this counts records, not the distance between seqs).
    pub fn count_between(&self, after: Seq, upto: Seq) -> usize {
        self.position(upto.next())
            .saturating_sub(self.position(after.next()))
    }

    /// The record with this seq, if retained.
    pub fn get(&self, seq: Seq) -> Option<&Arc<Record>> {
        self.records
            .get(self.position(seq))
            .filter(|r| r.seq == seq)
    }

    /// Scans records after `after` up to and including `upto`, examining at most `budget`
    /// records, and returns those `keep` accepts (at most `limit`) and the last seq examined.
    pub fn scan(
        &self,
        after: Seq,
        upto: Seq,
        budget: usize,
        limit: usize,
        mut keep: impl FnMut(&Record) -> bool,
    ) -> (Vec<Arc<Record>>, Seq) {
        let start = after.max(Seq(self.first_seq().0.saturating_sub(1)));
        let mut out = Vec::new();
        let mut last = start;
        if self.records.is_empty() {
            return (out, after);
        }
        let from = self.position(start.next());
        for record in self.records.range(from..).take(budget) {
            if record.seq > upto || out.len() >= limit {
                break;
            }
            last = record.seq;
            if !record.is_erased() && keep(record) {
                out.push(record.clone());
            }
        }
        (out, last.max(after))
    }

    /// Every retained record about any of `customers`, in seq order.
    pub fn records_of(&self, customers: &[CustomerId]) -> Vec<Arc<Record>> {
        self.seqs_of(customers)
            .into_iter()
            .filter_map(|seq| self.get(seq).cloned())
            .collect()
    }

    /// The seqs of every retained record about any of `customers`, in order.
    fn seqs_of(&self, customers: &[CustomerId]) -> Vec<Seq> {
        let mut seqs: Vec<Seq> = customers
            .iter()
            .filter_map(|c| self.by_customer.get(c))
            .flat_map(|seqs| seqs.iter().copied())
            .collect();
        seqs.sort();
        seqs.dedup();
        seqs
    }

    /// Replaces every retained record about any of `customers` with what `rewrite` makes
    /// of it (`None` keeps it as it is); with `erase`, the customers also leave the
    /// per-customer index. Returns how many records changed.
    pub fn rewrite_customers(
        &mut self,
        customers: &[CustomerId],
        erase: bool,
        mut rewrite: impl FnMut(&Arc<Record>) -> Option<Arc<Record>>,
    ) -> usize {
        let seqs = self.seqs_of(customers);
        let mut changed = 0;
        for seq in seqs {
            let index = self.position(seq);
            let Some(slot) = self.records.get_mut(index).filter(|r| r.seq == seq) else {
                continue;
            };
            if let Some(replacement) = rewrite(slot) {
                *slot = replacement;
                changed += 1;
            }
        }
        if erase {
            for c in customers {
                self.by_customer.remove(c);
            }
        }
        if changed > 0 {
            self.rewrites += 1;
        }
        changed
    }

    /// A customer's retained events after `after`, at most `limit`.
    pub fn customer_events(
        &self,
        customer: CustomerId,
        after: Seq,
        limit: usize,
    ) -> Vec<Arc<Record>> {
        let Some(seqs) = self.by_customer.get(&customer) else {
            return Vec::new();
        };
        let start = seqs.partition_point(|s| *s <= after);
        seqs.range(start..)
            .filter_map(|s| self.get(*s).filter(|r| !r.is_erased()).cloned())
            .take(limit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::lifecycle::{ActionState, MediaType};
    use crate::ingest::topic::Topic;

    fn record(seq: u64, customer: CustomerId, timestamp: Millis) -> Arc<Record> {
        Arc::new(Record {
            seq: Seq(seq),
            timestamp,
            keys: EventKeys {
                topic: Topic::lifecycle(MediaType::Webchat, ActionState::Offered),
                customer,
                other_customers: None,
                session: None,
                action: None,
                action_map: None,
                action_map_version: None,
                segment: None,
            },
            event_id: None,
            frame: WireFrame::text(&format!("{{\"seq\":{seq}}}")),
        })
    }

    fn seqs(records: &[Arc<Record>]) -> Vec<u64> {
        records.iter().map(|r| r.seq.0).collect()
    }

    #[test]
    fn bounded_by_count_and_age() {
        let c = CustomerId::new_random();
        let mut r = Retention::new(3, 1000);
        for seq in 1..=4 {
            let evicted = r.push(record(seq, c, 100), 100);
            assert_eq!(seqs(&evicted), if seq == 4 { vec![1] } else { vec![] });
        }
        assert_eq!((r.first_seq(), r.last_seq()), (Seq(2), Seq(4)));
        assert!(r.covers(Seq(1)) && r.covers(Seq(4)));
        assert!(!r.covers(Seq(0)), "seq 1 is gone");
        assert!(!r.covers(Seq(5)), "beyond the latest");
        let evicted = r.push(record(5, c, 2000), 2000);
        assert_eq!(seqs(&evicted), vec![2, 3, 4]);
        assert_eq!(r.customer_events(c, Seq(0), 10).len(), 1);
    }

    #[test]
    fn scan_pages_and_filters() {
        let (a, b) = (CustomerId::new_random(), CustomerId::new_random());
        let mut r = Retention::new(100, 1_000_000);
        for seq in 1..=10 {
            r.push(record(seq, if seq % 2 == 0 { a } else { b }, 0), 0);
        }
        let (page, last) = r.scan(Seq(0), Seq(10), usize::MAX, 3, |_| true);
        assert_eq!((seqs(&page), last), (vec![1, 2, 3], Seq(3)));
        let (page, last) = r.scan(Seq(3), Seq(10), usize::MAX, 100, |rec| {
            rec.keys.customer == a
        });
        assert_eq!((seqs(&page), last), (vec![4, 6, 8, 10], Seq(10)));
        let (page, last) = r.scan(Seq(3), Seq(6), usize::MAX, 100, |_| true);
        assert_eq!((seqs(&page), last), (vec![4, 5, 6], Seq(6)));
        let (page, last) = r.scan(Seq(0), Seq(10), 2, 100, |_| true);
        assert_eq!(
            (seqs(&page), last),
            (vec![1, 2], Seq(2)),
            "budget bounds the scan"
        );
        assert_eq!(seqs(&r.customer_events(a, Seq(4), 2)), vec![6, 8]);
    }

    #[test]
    fn rewriting_a_customer_finds_its_records_across_a_seq_gap() {
        let (a, b) = (CustomerId::new_random(), CustomerId::new_random());
        let mut r = Retention::new(100, 1_000_000);
        // Seqs 1-3, then a jump (an unclean restart skipped reserved seqs) to 100-102.
        for (seq, who) in [(1, a), (2, b), (3, a), (100, b), (101, a), (102, b)] {
            r.push(record(seq, who, 0), 0);
        }
        assert_eq!(
            r.count_between(Seq(3), Seq(100)),
            1,
            "records, not seq distance"
        );
        assert_eq!(r.count_between(Seq(0), Seq(102)), 6);
        let erase = |r: &Arc<Record>| Some(Arc::new(Record::erased(r.seq, r.timestamp)));
        assert_eq!(r.rewrite_customers(&[a], true, erase), 3);
        let erased: Vec<u64> = (0..r.len())
            .map(|i| &r.records[i])
            .filter(|rec| rec.is_erased())
            .map(|rec| rec.seq.0)
            .collect();
        assert_eq!(erased, vec![1, 3, 101], "a's records, and only a's");
        assert!(r.customer_events(a, Seq(0), 10).is_empty());
        assert_eq!(seqs(&r.customer_events(b, Seq(0), 10)), vec![2, 100, 102]);
    }
}
