//! What the generator publishes and who should receive it: the customers, the lifecycle
//! events each publisher cycles through, and how many deliveries each event must cause.
//!
//! Pure data and arithmetic; no IO, no protocol framing.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Index of a customer in [`Customers`]; what subscribers and publishers pass around
/// instead of the 36-character id.
pub(crate) type CustomerIndex = u32;

/// One customer of the run, with the one session all its events use (so the hub starts a
/// session for it once, and never ends one in the middle of a step).
#[derive(Debug, Clone)]
pub(crate) struct Customer {
    pub(crate) id: Uuid,
    pub(crate) session_id: Uuid,
}

/// The run's customers and how many subscribers each event of theirs must reach.
#[derive(Debug)]
pub(crate) struct Customers {
    list: Vec<Customer>,
    /// customerId as the hub delivers it (lower-case hyphenated) -> index.
    by_id: HashMap<String, CustomerIndex>,
    /// Deliveries one event of customer `i` must cause: its subscribers plus the firehose.
    fanout: Vec<u64>,
}

impl Customers {
    /// Fresh random customers, with `subscribers` spread round-robin over them.
    pub(crate) fn new(count: usize, subscribers: usize, firehose: usize) -> Self {
        let list: Vec<Customer> = (0..count)
            .map(|_| Customer {
                id: Uuid::new_v4(),
                session_id: Uuid::new_v4(),
            })
            .collect();
        let by_id = list
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.to_string(), i as CustomerIndex))
            .collect();
        let fanout = (0..count)
            .map(|i| (subscribers_of(i, count, subscribers) + firehose) as u64)
            .collect();
        Customers {
            list,
            by_id,
            fanout,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn get(&self, index: CustomerIndex) -> &Customer {
        &self.list[index as usize]
    }

    /// The customer a subscriber follows: subscribers are dealt round-robin.
    pub(crate) fn of_subscriber(&self, subscriber: usize) -> CustomerIndex {
        (subscriber % self.list.len()) as CustomerIndex
    }

    /// The index of a delivered event's customerId, if it is one of ours.
    pub(crate) fn index_of(&self, customer_id: &str) -> Option<CustomerIndex> {
        self.by_id.get(customer_id).copied()
    }

    /// Deliveries one accepted event of this customer must cause.
    pub(crate) fn fanout(&self, index: CustomerIndex) -> u64 {
        self.fanout[index as usize]
    }
}

/// How many of `subscribers`, dealt round-robin over `customers`, follow customer `i`.
fn subscribers_of(i: usize, customers: usize, subscribers: usize) -> usize {
    subscribers / customers + usize::from(i < subscribers % customers)
}

/// The webchat states one action goes through, in order; after the last a new action starts.
const CYCLE: [&str; 5] = ["offered", "accepted", "started", "engaged", "ended"];

/// One action map for the whole run: the hub groups its statistics by map and version.
const ACTION_MAP_VERSION: u32 = 3;

/// The lifecycle event as published (PROTOCOL.md section 3, the hub's own field names).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LifecycleEvent {
    pub(crate) action_id: Uuid,
    pub(crate) action_state: &'static str,
    pub(crate) action_media_type: &'static str,
    pub(crate) action_map_id: Uuid,
    pub(crate) action_map_version: u32,
    pub(crate) customer_id: Uuid,
    pub(crate) customer_id_type: &'static str,
    pub(crate) session_id: Uuid,
    /// The client's idempotency key, so a publish can be retried safely (the soak sets it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) event_id: Option<String>,
    pub(crate) data: EventData,
}

/// The enrichment every generated event carries: when it was sent, so a receiver can
/// measure publish-to-deliver latency on the same clock, and, for a server that numbers
/// nothing itself, the publisher's own count to check order by.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventData {
    pub(crate) sent_at_micros: u64,
    /// Which publisher sent the event (only with order stamps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) publisher: Option<u32>,
    /// 1, 2, 3, ... per publisher and customer (only with order stamps): a server that
    /// keeps one connection's messages in order delivers them in counter order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) counter: Option<u64>,
}

/// One action in progress: its id and the index in [`CYCLE`] of its next state.
#[derive(Debug, Clone, Copy)]
struct ActionProgress {
    id: Uuid,
    next: usize,
}

/// What one publisher publishes next. Each publisher owns its actions (one in progress per
/// customer), so two publishers never race on the same action's transitions, while every
/// customer still gets events from every publisher.
#[derive(Debug)]
pub(crate) struct EventCycle {
    map_id: Uuid,
    /// The customer of the next event; advances round-robin by `stride`.
    cursor: usize,
    /// 1 when the publisher cycles over every customer; the publisher count when it owns
    /// every `stride`-th customer alone (see [`EventCycle::owning`]).
    stride: usize,
    /// The action in progress for each customer, created on first use.
    actions: Vec<Option<ActionProgress>>,
    /// This publisher's index and its events so far per customer, when events carry
    /// order stamps (see [`EventData::counter`]); `None` when the server numbers events.
    order: Option<(u32, Vec<u64>)>,
}

impl EventCycle {
    /// A cycle for publisher `publisher`, starting at its own offset so that publishers
    /// do not all hit the same customer at the same moment.
    pub(crate) fn new(publisher: usize, publishers: usize, customers: usize, map_id: Uuid) -> Self {
        EventCycle {
            map_id,
            cursor: publisher * customers / publishers.max(1),
            stride: 1,
            actions: vec![None; customers],
            order: None,
        }
    }

    /// A cycle over the customers publisher `publisher` of `publishers` owns alone
    /// (`publisher`, `publisher + publishers`, ...), so one connection publishes all of a
    /// customer's events and their acknowledgements come in the customer's seq order.
    /// Needs `publisher < publishers <= customers`.
    pub(crate) fn owning(
        publisher: usize,
        publishers: usize,
        customers: usize,
        map_id: Uuid,
    ) -> Self {
        EventCycle {
            map_id,
            cursor: publisher,
            stride: publishers.max(1),
            actions: vec![None; customers],
            order: None,
        }
    }

    /// Makes every event carry this publisher's index and a per-customer counter.
    pub(crate) fn with_order_stamps(mut self, publisher: usize) -> Self {
        let customers = self.actions.len();
        self.order = Some((publisher as u32, vec![0; customers]));
        self
    }

    /// The next event to publish and its customer, stamped with the current time.
    pub(crate) fn next_event(&mut self, customers: &Customers) -> (CustomerIndex, LifecycleEvent) {
        let index = self.cursor % self.actions.len();
        // Past the last customer, start again at the first one this cycle covers.
        self.cursor = if index + self.stride < self.actions.len() {
            index + self.stride
        } else {
            index % self.stride
        };
        let progress = self.actions[index].get_or_insert_with(|| ActionProgress {
            id: Uuid::new_v4(),
            next: 0,
        });
        let state = CYCLE[progress.next];
        let action_id = progress.id;
        progress.next += 1;
        if progress.next == CYCLE.len() {
            self.actions[index] = None;
        }
        let customer = customers.get(index as CustomerIndex);
        let (publisher, counter) = match &mut self.order {
            Some((publisher, counters)) => {
                counters[index] += 1;
                (Some(*publisher), Some(counters[index]))
            }
            None => (None, None),
        };
        let event = LifecycleEvent {
            action_id,
            action_state: state,
            action_media_type: "webchat",
            action_map_id: self.map_id,
            action_map_version: ACTION_MAP_VERSION,
            customer_id: customer.id,
            customer_id_type: "cookie",
            session_id: customer.session_id,
            event_id: None,
            data: EventData {
                sent_at_micros: now_micros(),
                publisher,
                counter,
            },
        };
        (index as CustomerIndex, event)
    }
}

/// Microseconds since the Unix epoch, the clock both ends of a latency measurement read.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_counts_subscribers_and_firehose() {
        let customers = Customers::new(3, 7, 2);
        // 7 subscribers over 3 customers: 3, 2, 2.
        assert_eq!(customers.fanout(0), 5);
        assert_eq!(customers.fanout(1), 4);
        assert_eq!(customers.fanout(2), 4);
        let total: usize = (0..7).filter(|&s| customers.of_subscriber(s) == 0).count();
        assert_eq!(total, 3);
    }

    #[test]
    fn each_action_walks_the_webchat_lifecycle_then_a_new_one_starts() {
        let customers = Customers::new(2, 0, 0);
        let mut cycle = EventCycle::new(0, 1, 2, Uuid::new_v4());
        let events: Vec<_> = (0..12).map(|_| cycle.next_event(&customers)).collect();
        let for_customer_0: Vec<_> = events.iter().filter(|(c, _)| *c == 0).collect();
        let states: Vec<_> = for_customer_0.iter().map(|(_, e)| e.action_state).collect();
        assert_eq!(
            states,
            ["offered", "accepted", "started", "engaged", "ended", "offered"]
        );
        assert!(for_customer_0[..5]
            .iter()
            .all(|(_, e)| e.action_id == for_customer_0[0].1.action_id));
        assert_ne!(for_customer_0[5].1.action_id, for_customer_0[0].1.action_id);
    }

    #[test]
    fn an_owning_cycle_covers_only_its_own_customers() {
        let customers = Customers::new(5, 0, 0);
        let mut cycle = EventCycle::owning(1, 2, 5, Uuid::new_v4());
        let order: Vec<_> = (0..5).map(|_| cycle.next_event(&customers).0).collect();
        assert_eq!(order, [1, 3, 1, 3, 1]);
        let mut first = EventCycle::owning(0, 2, 5, Uuid::new_v4());
        let order: Vec<_> = (0..4).map(|_| first.next_event(&customers).0).collect();
        assert_eq!(order, [0, 2, 4, 0]);
    }

    #[test]
    fn order_stamps_count_per_customer() {
        let customers = Customers::new(2, 0, 0);
        let mut cycle = EventCycle::new(1, 2, 2, Uuid::new_v4()).with_order_stamps(1);
        let stamps: Vec<_> = (0..4)
            .map(|_| {
                let (c, e) = cycle.next_event(&customers);
                (c, e.data.publisher, e.data.counter)
            })
            .collect();
        // Publisher 1 of 2 starts at customer 1.
        assert_eq!(
            stamps,
            [
                (1, Some(1), Some(1)),
                (0, Some(1), Some(1)),
                (1, Some(1), Some(2)),
                (0, Some(1), Some(2))
            ]
        );
        let (_, unstamped) = EventCycle::new(0, 1, 2, Uuid::new_v4()).next_event(&customers);
        let json = serde_json::to_string(&unstamped).unwrap();
        assert!(!json.contains("counter"), "{json}");
    }

    #[test]
    fn an_event_is_about_335_bytes() {
        let customers = Customers::new(1, 0, 0);
        let mut cycle = EventCycle::new(0, 1, 1, Uuid::new_v4());
        let (_, event) = cycle.next_event(&customers);
        let len = serde_json::to_vec(&event).unwrap().len();
        assert!((300..=380).contains(&len), "{len} bytes");
    }
}

/// The fields of a delivered event the generator checks, for either target.
#[derive(Deserialize)]
pub(crate) struct EventView<'a> {
    #[serde(rename = "customerId", borrow)]
    pub(crate) customer_id: Option<Cow<'a, str>>,
    pub(crate) data: Option<DataView>,
}

/// The generator's own fields inside `data`: the send time, and (NATS, which has no seq)
/// the publisher's per-customer order stamp.
#[derive(Deserialize)]
pub(crate) struct DataView {
    #[serde(rename = "sentAtMicros")]
    pub(crate) sent_at_micros: Option<u64>,
    pub(crate) publisher: Option<u32>,
    pub(crate) counter: Option<u64>,
}
