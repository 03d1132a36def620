//! Fan-out: which connection receives which event.
//!
//! An index finds the subscriptions that can match an event without looking at the others:
//! subscriptions naming customers are filed under each customer, those naming user ids
//! under each user id, and the rest under each topic they cover. The event's frame was
//! serialized once by the sequencer; every receiver gets a clone of the same bytes.
//!
//! Each connection has a bounded outbox (see [`crate::edge::outbox`]). Delivery never waits:
//! when an outbox is full the connection is dropped from the index and told to close with
//! 4008, and the event goes on to everybody else. Delivery runs on the pipeline thread, in
//! seq order, one pass at a time; the index lock is held per pass and never across an
//! `.await`. Delivery only queues: it returns the outboxes it queued to, once each, and the
//! pipeline writes them after the pass, so that a pass's frames for one connection leave
//! in one write.
//!
//! Frames a connection queues about its own subscriptions (`subscribed`, a snapshot, the
//! end of a replay) are queued under the index lock too, so that no live event of that
//! subscription can overtake them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::edge::outbox::{Outbox, Refused};
use crate::error::HubError;
use crate::hub::retention::Record;
use crate::hub::state::HubState;
use crate::ids::{ConnId, CustomerId, Seq, UserId};
use crate::ingest::protocol::{close, SubId};
use crate::ingest::topic::{Filter, Topic, TopicSet};
use crate::ingest::wire::WireFrame;

/// Whether a subscription with these topics and filter wants this record. The one
/// matching rule for live delivery, replay and HTTP history.
pub fn selects(topics: TopicSet, filter: &Filter, record: &Record, state: &HubState) -> bool {
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
    outbox: Arc<Outbox>,
    /// The one customer a browser token's connection acts for: it is sent the frames
    /// [`Record::frame_for`] makes for it, which name no other customer.
    viewer: Option<CustomerId>,
    /// The write round that last listed this connection's outbox (see [`Written`]).
    listed_in: u64,
    /// The last seq queued to this connection: one event goes to a connection once,
    /// however many of its subscriptions match.
    last_seq: Seq,
    subs: HashMap<SubId, u64>,
}

impl Conn {
    /// Queues a connection's own frames (the writing is the connection's). An outbox past
    /// its bound is a slow consumer; one already closing finds out on its own.
    fn queue(&self, frames: Vec<WireFrame>) {
        for frame in frames {
            match self.outbox.push(frame.wire().clone()) {
                Ok(()) => {}
                Err(Refused::Full) => return self.outbox.kill(close::SLOW_CONSUMER),
                Err(Refused::Gone) => return,
            }
        }
    }
}

#[derive(Default)]
struct Index {
    conns: HashMap<ConnId, Conn>,
    subs: HashMap<u64, Sub>,
    next_sub: u64,
    by_customer: HashMap<CustomerId, Vec<u64>>,
    by_user: HashMap<UserId, Vec<u64>>,
    by_topic: HashMap<Topic, Vec<u64>>,
}

/// Where a new subscription starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// Live from the fan-out's current position.
    Now,
    /// Live after this seq (a snapshot was taken at it).
    After(Seq),
    /// Not yet live: a replay of the events after this seq runs first, then
    /// [`Fanout::go_live`].
    Paused(Seq),
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
    /// Woken after each pass, for readers that follow the history rather than being
    /// filed here (the HTTP event stream).
    passes: Notify,
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
            passes: Notify::new(),
            stats,
        }
    }

    pub fn watermark(&self) -> Seq {
        Seq(self.watermark.load(Ordering::Acquire))
    }

    /// Completes after the next pass has been delivered (the watermark moved). Create it
    /// before reading the watermark: it is woken by any pass after its creation.
    pub fn delivered(&self) -> Notified<'_> {
        self.passes.notified()
    }

    pub fn connection_count(&self) -> usize {
        self.index.lock().conns.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.index.lock().subs.len()
    }

    /// Files a connection; `viewer` is the customer a browser token confines it to.
    pub fn add_connection(&self, conn: ConnId, outbox: Arc<Outbox>, viewer: Option<CustomerId>) {
        self.index.lock().conns.insert(
            conn,
            Conn {
                outbox,
                viewer,
                listed_in: 0,
                last_seq: Seq(0),
                subs: HashMap::new(),
            },
        );
    }

    pub fn remove_connection(&self, conn: ConnId) {
        self.index.lock().remove_connection(conn);
    }

    /// Adds a subscription and queues `first(start)` to the connection ahead of any event
    /// the subscription delivers; returns `start`, the seq after which it delivers live.
    pub fn subscribe(
        &self,
        conn: ConnId,
        sub: NewSub,
        start: Start,
        max_subs: usize,
        first: impl FnOnce(Seq) -> Vec<WireFrame>,
    ) -> Result<Seq, HubError> {
        let mut index = self.index.lock();
        let watermark = self.watermark();
        let (start_after, live) = match start {
            Start::Now => (watermark, true),
            Start::After(seq) => (seq, true),
            Start::Paused(since) => (since, false),
        };
        index.insert(conn, sub, start_after, live, max_subs)?;
        if let Some(entry) = index.conns.get(&conn) {
            entry.queue(first(start_after));
        }
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
    /// in between, `catch_up` is given the watermark and returns the retained frames up to
    /// it (`None`: they are no longer retained); they are queued and the subscription goes
    /// live after the watermark, or after its own start when that is ahead (a `since` the
    /// sequencer had given out before the pipeline delivered it), so nothing is missed or
    /// sent twice. A `once` subscription given frames sends the first and ends instead.
    pub fn go_live(
        &self,
        conn: ConnId,
        id: &SubId,
        catch_up: impl FnOnce(Seq) -> Option<Vec<WireFrame>>,
    ) -> GoLive {
        let mut index = self.index.lock();
        let Some(key) = index.conns.get(&conn).and_then(|c| c.subs.get(id).copied()) else {
            return GoLive::Gone;
        };
        let watermark = self.watermark();
        let Some(mut frames) = catch_up(watermark) else {
            return GoLive::FellBehind;
        };
        let Some(sub) = index.subs.get_mut(&key) else {
            return GoLive::Gone;
        };
        let fired = sub.once && !frames.is_empty();
        if fired {
            frames.truncate(1);
        } else {
            sub.live = true;
            sub.start_after = sub.start_after.max(watermark);
        }
        let outbox = index.conns.get(&conn).map(|entry| {
            entry.queue(frames);
            entry.outbox.clone()
        });
        if fired {
            index.remove_sub(key);
        }
        drop(index);
        if let Some(outbox) = outbox {
            outbox.flush();
        }
        GoLive::Live
    }

    /// Queues a pass of records, in seq order, to every matching connection, and lists
    /// in `written` each outbox it queued to, for the caller to write.
    pub fn deliver(&self, records: &[Arc<Record>], state: &HubState, written: &mut Written) {
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
                let pushed = match conn.viewer {
                    None => conn.outbox.push(record.frame.wire().clone()),
                    Some(_) => match record.frame_for(conn.viewer) {
                        Some(frame) => conn.outbox.push(frame.wire().clone()),
                        None => continue,
                    },
                };
                match pushed {
                    Ok(()) => {
                        delivered += 1;
                        if once {
                            fired.push(key);
                        }
                        if conn.listed_in != written.round {
                            conn.listed_in = written.round;
                            written.outboxes.push(conn.outbox.clone());
                        }
                    }
                    Err(Refused::Full) => {
                        conn.outbox.kill(close::SLOW_CONSUMER);
                        self.stats.overflows.inc();
                        dropped.push(conn_id);
                    }
                    Err(Refused::Gone) => dropped.push(conn_id),
                }
            }
            for key in fired.drain(..) {
                index.remove_sub(key);
            }
            for conn in dropped.drain(..) {
                index.remove_connection(conn);
            }
        }
        self.watermark.store(last.seq.0, Ordering::Release);
        drop(index);
        self.passes.notify_waiters();
        self.stats.deliveries.inc_by(delivered);
    }
}

/// The outboxes that deliveries queued to since they were last written, each listed
/// once. One pipeline owns one; the rounds it counts tell a listed outbox from one that
/// was listed in an earlier round (and written since).
pub struct Written {
    round: u64,
    outboxes: Vec<Arc<Outbox>>,
}

impl Default for Written {
    fn default() -> Written {
        // Round 0 is what a new connection was "last listed in": never.
        Written {
            round: 1,
            outboxes: Vec::new(),
        }
    }
}

impl Written {
    pub fn is_empty(&self) -> bool {
        self.outboxes.is_empty()
    }

    /// Writes every listed outbox (what its socket takes now) and starts a new round.
    pub fn write_all(&mut self) {
        for outbox in self.outboxes.drain(..) {
            outbox.flush();
        }
        self.round += 1;
    }
}

/// How [`Fanout::go_live`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum GoLive {
    /// Caught up and live (or, for a `once` subscription, fired and ended).
    Live,
    /// The subscription is gone (unsubscribed meanwhile).
    Gone,
    /// The frames it needed are no longer retained.
    FellBehind,
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

    /// Removes a connection and its subscriptions, if it is still here.
    fn remove_connection(&mut self, conn: ConnId) {
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        let keys: Vec<u64> = entry.subs.values().copied().collect();
        for key in keys {
            self.remove_sub(key);
        }
        self.conns.remove(&conn);
    }

    /// The subscriptions that may match a record: by topic, by customer, by linked user.
    fn candidates(&self, record: &Record, state: &HubState, out: &mut Vec<u64>) {
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
