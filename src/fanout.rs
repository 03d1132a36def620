//! Fan-out: which connection receives which event.
//!
//! An index finds the subscriptions that can match an event without looking at the others:
//! subscriptions naming customers are filed under each customer, those naming user ids
//! under each user id, and the rest under each topic they cover. The event's frame was
//! serialized once by the sequencer; every receiver gets a clone of the same bytes.
//!
//! Each connection has a bounded outbound queue. Delivery never waits: when a queue is full
//! the connection is dropped from the index and told to close with 4008, and the event goes
//! on to everybody else. Delivery runs on the pipeline thread, in seq order, one batch at a
//! time; the index lock is held per batch and never across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;

use crate::error::HubError;
use crate::ids::{ConnId, CustomerId, Seq};
use crate::protocol::SubId;
use crate::retention::Record;
use crate::state::State;
use crate::topic::{Filter, Topic, TopicSet};

/// The sending half of a connection's outbound queue. Capacity is the configured
/// `queue_capacity`; overflow closes the connection with 4008.
pub type Outbound = mpsc::Sender<Utf8Bytes>;

/// How the fan-out tells a connection it has been dropped.
#[derive(Default)]
pub struct Kill {
    notify: Notify,
    code: AtomicU64,
}

impl Kill {
    /// Marks the connection for closing with `code` and wakes its task.
    pub fn fire(&self, code: u16) {
        self.code.store(code as u64, Ordering::Release);
        self.notify.notify_one();
    }

    /// Waits until fired; returns the close code.
    pub async fn fired(&self) -> u16 {
        self.notify.notified().await;
        self.code.load(Ordering::Acquire) as u16
    }
}

/// Whether a subscription with these topics and filter wants this record. The one
/// matching rule for live delivery, replay and HTTP history.
pub fn selects(topics: TopicSet, filter: &Filter, record: &Record, state: &State) -> bool {
    topics.contains(record.keys.topic)
        && filter.matches(&record.keys, || state.linked_users(record.keys.customer))
}

/// A subscription as the index keeps it.
struct Sub {
    conn: ConnId,
    id: SubId,
    topics: TopicSet,
    filter: Filter,
    /// Events up to this seq are not delivered live (they came in a snapshot or replay, or
    /// predate the subscription).
    start_after: Seq,
    once: bool,
    /// False while a `since` replay runs; live delivery starts when the replay catches up.
    live: bool,
}

struct Conn {
    tx: Outbound,
    kill: Arc<Kill>,
    /// The last seq queued to this connection: one event goes to a connection once,
    /// however many of its subscriptions match.
    last_seq: Seq,
    subs: HashMap<SubId, u64>,
}

#[derive(Default)]
struct Index {
    conns: HashMap<ConnId, Conn>,
    subs: HashMap<u64, Sub>,
    next_sub: u64,
    by_customer: HashMap<CustomerId, Vec<u64>>,
    by_user: HashMap<String, Vec<u64>>,
    by_topic: HashMap<Topic, Vec<u64>>,
}

/// Where a new subscription starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// Live from the fan-out's current position.
    Now,
    /// Live after this seq (a snapshot was taken at it).
    After(Seq),
    /// Not yet live: a replay runs first, then [`Fanout::go_live`].
    Paused,
}

/// Counters the fan-out reports (shared with the metrics registry).
#[derive(Default, Clone)]
pub struct FanoutStats {
    pub deliveries: Counter,
    pub overflows: Counter,
}

/// The subscription index and delivery.
pub struct Fanout {
    index: Mutex<Index>,
    /// The newest seq delivered (queued to every matching connection).
    watermark: AtomicU64,
    pub stats: FanoutStats,
}

/// A subscription's parameters, as the connection hands them over.
pub struct NewSub {
    pub id: SubId,
    pub topics: TopicSet,
    pub filter: Filter,
    pub once: bool,
}

impl Fanout {
    pub fn new(start: Seq, stats: FanoutStats) -> Fanout {
        Fanout {
            index: Mutex::new(Index::default()),
            watermark: AtomicU64::new(start.0),
            stats,
        }
    }

    pub fn watermark(&self) -> Seq {
        Seq(self.watermark.load(Ordering::Acquire))
    }

    pub fn connection_count(&self) -> usize {
        self.index.lock().conns.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.index.lock().subs.len()
    }

    pub fn add_connection(&self, conn: ConnId, tx: Outbound, kill: Arc<Kill>) {
        self.index.lock().conns.insert(
            conn,
            Conn {
                tx,
                kill,
                last_seq: Seq(0),
                subs: HashMap::new(),
            },
        );
    }

    pub fn remove_connection(&self, conn: ConnId) {
        self.index.lock().remove_connection(conn);
    }

    /// Adds a subscription; returns the seq after which it delivers live.
    pub fn subscribe(
        &self,
        conn: ConnId,
        sub: NewSub,
        start: Start,
        max_subs: usize,
    ) -> Result<Seq, HubError> {
        let mut index = self.index.lock();
        let watermark = self.watermark();
        let (start_after, live) = match start {
            Start::Now => (watermark, true),
            Start::After(seq) => (seq, true),
            Start::Paused => (watermark, false),
        };
        index.insert(conn, sub, start_after, live, max_subs)?;
        Ok(start_after)
    }

    pub fn unsubscribe(&self, conn: ConnId, id: &SubId) -> bool {
        self.index.lock().remove_sub_by_id(conn, id)
    }

    /// Whether a subscription still exists (a `once` one may have fired).
    pub fn has_sub(&self, conn: ConnId, id: &SubId) -> bool {
        self.index
            .lock()
            .conns
            .get(&conn)
            .is_some_and(|c| c.subs.contains_key(id))
    }

    /// Ends a paused subscription's replay. Under the index lock, so that no delivery runs
    /// in between, `catch_up` is given the watermark and takes the retained events up to it;
    /// the subscription then goes live after the watermark. Nothing is missed or sent twice.
    /// Returns `None` when the subscription is gone.
    pub fn go_live<T>(
        &self,
        conn: ConnId,
        id: &SubId,
        catch_up: impl FnOnce(Seq) -> T,
    ) -> Option<T> {
        let mut index = self.index.lock();
        let key = *index.conns.get(&conn)?.subs.get(id)?;
        let watermark = self.watermark();
        let caught_up = catch_up(watermark);
        let sub = index.subs.get_mut(&key)?;
        sub.live = true;
        sub.start_after = watermark;
        Some(caught_up)
    }

    /// Delivers a batch of records, in seq order, to every matching connection.
    pub fn deliver(&self, records: &[Arc<Record>], state: &State) {
        let Some(last) = records.last() else { return };
        let mut index = self.index.lock();
        let mut delivered = 0u64;
        let mut dropped: Vec<ConnId> = Vec::new();
        let mut fired: Vec<u64> = Vec::new();
        let mut candidates: Vec<u64> = Vec::new();
        for record in records {
            index.candidates(record, state, &mut candidates);
            for &key in &candidates {
                let Some(sub) = index.subs.get(&key) else {
                    continue;
                };
                if !sub.live
                    || record.seq <= sub.start_after
                    || !selects(sub.topics, &sub.filter, record, state)
                {
                    continue;
                }
                let (conn_id, once) = (sub.conn, sub.once);
                let Some(conn) = index.conns.get_mut(&conn_id) else {
                    continue;
                };
                if conn.last_seq >= record.seq {
                    // Already queued through another subscription: the client's handlers
                    // for this one see it too, so a `once` subscription has fired.
                    if once {
                        fired.push(key);
                    }
                    continue;
                }
                conn.last_seq = record.seq;
                match conn.tx.try_send(record.frame.clone()) {
                    Ok(()) => {
                        delivered += 1;
                        if once {
                            fired.push(key);
                        }
                    }
                    Err(TrySendError::Full(_)) => {
                        conn.kill.fire(4008);
                        dropped.push(conn_id);
                    }
                    Err(TrySendError::Closed(_)) => dropped.push(conn_id),
                }
            }
            for key in fired.drain(..) {
                index.remove_sub(key);
            }
            for conn in dropped.drain(..) {
                if index.remove_connection(conn) {
                    self.stats.overflows.inc();
                }
            }
        }
        self.watermark.store(last.seq.0, Ordering::Release);
        drop(index);
        self.stats.deliveries.inc_by(delivered);
    }
}

impl Index {
    fn insert(
        &mut self,
        conn_id: ConnId,
        sub: NewSub,
        start_after: Seq,
        live: bool,
        max_subs: usize,
    ) -> Result<(), HubError> {
        let conn = self.conns.get_mut(&conn_id).ok_or_else(|| {
            HubError::new(
                crate::error::ErrorCode::Unavailable,
                "connection is closing",
            )
        })?;
        if conn.subs.contains_key(&sub.id) {
            return Err(HubError::bad_request(format!(
                "subscription {} is already active on this connection",
                serde_json::to_string(&sub.id).unwrap_or_default()
            )));
        }
        if conn.subs.len() >= max_subs {
            return Err(HubError::new(
                crate::error::ErrorCode::RateLimited,
                format!("a connection may hold at most {max_subs} subscriptions"),
            ));
        }
        let key = self.next_sub;
        self.next_sub += 1;
        conn.subs.insert(sub.id.clone(), key);
        let entry = Sub {
            conn: conn_id,
            id: sub.id,
            topics: sub.topics,
            filter: sub.filter,
            start_after,
            once: sub.once,
            live,
        };
        self.file(key, &entry);
        self.subs.insert(key, entry);
        Ok(())
    }

    /// Files a subscription under the most selective key it names: its customers, else
    /// its user ids, else its topics.
    fn file(&mut self, key: u64, sub: &Sub) {
        match (&sub.filter.customer_ids, &sub.filter.user_ids) {
            (Some(customers), _) => {
                for c in customers {
                    push_unique(self.by_customer.entry(*c).or_default(), key);
                }
            }
            (None, Some(users)) => {
                for u in users {
                    push_unique(self.by_user.entry(u.clone()).or_default(), key);
                }
            }
            (None, None) => {
                for t in sub.topics.iter() {
                    push_unique(self.by_topic.entry(t).or_default(), key);
                }
            }
        }
    }

    /// Undoes [`Index::file`], dropping lists that become empty.
    fn unfile(&mut self, key: u64, sub: &Sub) {
        fn remove<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<u64>>, k: &K, key: u64) {
            if let Some(list) = map.get_mut(k) {
                list.retain(|x| *x != key);
                if list.is_empty() {
                    map.remove(k);
                }
            }
        }
        match (&sub.filter.customer_ids, &sub.filter.user_ids) {
            (Some(customers), _) => customers
                .iter()
                .for_each(|c| remove(&mut self.by_customer, c, key)),
            (None, Some(users)) => users.iter().for_each(|u| remove(&mut self.by_user, u, key)),
            (None, None) => sub
                .topics
                .iter()
                .for_each(|t| remove(&mut self.by_topic, &t, key)),
        }
    }

    fn remove_sub(&mut self, key: u64) {
        let Some(sub) = self.subs.remove(&key) else {
            return;
        };
        if let Some(conn) = self.conns.get_mut(&sub.conn) {
            conn.subs.remove(&sub.id);
        }
        self.unfile(key, &sub);
    }

    fn remove_sub_by_id(&mut self, conn: ConnId, id: &SubId) -> bool {
        let Some(key) = self.conns.get(&conn).and_then(|c| c.subs.get(id).copied()) else {
            return false;
        };
        self.remove_sub(key);
        true
    }

    /// Removes a connection and its subscriptions; false if it was already gone.
    fn remove_connection(&mut self, conn: ConnId) -> bool {
        let Some(entry) = self.conns.get(&conn) else {
            return false;
        };
        let keys: Vec<u64> = entry.subs.values().copied().collect();
        for key in keys {
            self.remove_sub(key);
        }
        self.conns.remove(&conn);
        true
    }

    /// The subscriptions that may match a record: by topic, by customer, by linked user.
    fn candidates(&self, record: &Record, state: &State, out: &mut Vec<u64>) {
        out.clear();
        if let Some(keys) = self.by_topic.get(&record.keys.topic) {
            out.extend_from_slice(keys);
        }
        for customer in record.keys.customers() {
            if let Some(keys) = self.by_customer.get(&customer) {
                out.extend_from_slice(keys);
            }
        }
        if !self.by_user.is_empty() {
            if let Some(users) = state.linked_users(record.keys.customer) {
                for user in users.iter() {
                    if let Some(keys) = self.by_user.get(user) {
                        out.extend_from_slice(keys);
                    }
                }
            }
        }
    }
}

/// Files a key once; filters never repeat a value (see [`Filter::parse`]), so only the
/// newest entry can already be this key.
fn push_unique(list: &mut Vec<u64>, key: u64) {
    if list.last() != Some(&key) {
        list.push(key);
    }
}
