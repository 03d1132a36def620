//! Each origin's messages applied in the order it proposed them, whatever order the
//! stream stored them in.
//!
//! A proposer keeps several messages in flight, and one the stream did not acknowledge is
//! sent again (a leader election, say), so it may be stored after messages proposed later:
//! a connection's pipelined `offered` then `accepted` would reach the stream swapped, and
//! the `accepted` be refused as one node never would. The request numbers of an origin's
//! proposals count up without a hole, message after message, so every node sees the same
//! thing: a message whose first request is past the next one expected came early. It is
//! held until the messages before it arrive, then applied after them; every node holds and
//! releases at the same stream messages, so every node still decides alike.
//!
//! What fills a hole that nothing will fill:
//! - a proposer that gives up on a message (after its timeout) says so with a skip, a
//!   message of no proposals naming the requests it gave up, so what was held behind it is
//!   applied at once;
//! - a held message waits [`HOLD`] of stream time at most (its proposer died, or its skip
//!   was lost), then is applied as if the hole were filled by nothing;
//! - a message that comes after its successors were applied (stored late, past its skip or
//!   its hold) is applied when it comes, as it always was.
//!
//! An origin seen for the first time starts at its first message: a proposer sends its
//! first message alone and waits for the stream's acknowledgement before sending more,
//! so nothing of its own can overtake it. Origins quiet for [`FORGET_AFTER`] with nothing
//! held are forgotten (a process that stopped); one that speaks again starts afresh.
//!
//! This state is part of what a node decides with, so the shared snapshot carries it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// The longest a message waits, in stream time, for the messages its origin proposed
/// before it: longer than a proposer's give-up (`--nats-timeout`, 10 s by default) plus a
/// resend, so a message still being sent again is waited for. A constant, not a setting:
/// every node must release at the same message.
pub(super) const HOLD: Millis = 30_000;
/// An origin with nothing held and no message for this long (stream time) is forgotten.
pub(super) const FORGET_AFTER: Millis = 3_600_000;
/// How often (stream time) held messages are checked against [`HOLD`] and quiet origins
/// against [`FORGET_AFTER`].
const CHECK_EVERY: Millis = 1_000;

/// Where each origin stands. Serialized into the shared snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Origins {
    origins: BTreeMap<String, Origin>,
    /// The stream time of the next check for expired holds and quiet origins.
    next_check: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Origin {
    /// The request number the next message in order starts at.
    next: u64,
    /// The stream time of its last message.
    last_seen: Millis,
    /// Messages that came early, by their first request number.
    held: BTreeMap<u64, Held>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Held {
    /// The message's last request number.
    last: u64,
    /// The stream time it arrived at.
    since: Millis,
    /// The message as stored, read again when it is applied.
    payload: String,
}

/// A message to apply now, in the order given.
#[derive(Debug, PartialEq)]
pub(super) enum Ready {
    /// The message that just arrived.
    Arrived,
    /// A message held earlier, as stored.
    Held(String),
}

impl Origins {
    /// Files a message of `origin` covering requests `first..=last` that arrived at stream
    /// time `now`, and answers what to apply now, in order: holds that expired, then this
    /// message (unless it came early and is held), then what it let through.
    pub(super) fn arrive(
        &mut self,
        origin: &str,
        (first, last): (u64, u64),
        payload: &[u8],
        now: Millis,
    ) -> Vec<Ready> {
        let mut ready = self.check(now);
        // Looked up before it is inserted: the name is copied only for a new origin.
        if !self.origins.contains_key(origin) {
            let start = Origin {
                next: first,
                last_seen: now,
                held: BTreeMap::new(),
            };
            self.origins.insert(origin.to_owned(), start);
        }
        let state = self.origins.get_mut(origin).expect("inserted above");
        state.last_seen = now;
        if first > state.next {
            state.held.insert(
                first,
                Held {
                    last,
                    since: now,
                    payload: String::from_utf8_lossy(payload).into_owned(),
                },
            );
            return ready;
        }
        ready.push(Ready::Arrived);
        // A late message (its successors already applied) leaves the position as it is.
        if first == state.next {
            state.next = last + 1;
            state.drain(&mut ready);
        }
        ready
    }

    /// At most every [`CHECK_EVERY`]: applies the holds past [`HOLD`] (an origin's oldest
    /// first, then what follows it) and forgets origins quiet past [`FORGET_AFTER`].
    fn check(&mut self, now: Millis) -> Vec<Ready> {
        let mut ready = Vec::new();
        if now < self.next_check {
            return ready;
        }
        self.next_check = now.saturating_add(CHECK_EVERY);
        for state in self.origins.values_mut() {
            while let Some((&first, held)) = state.held.first_key_value() {
                if held.since.saturating_add(HOLD) > now {
                    break;
                }
                // Nothing came for the hole before it: it is taken as filled.
                state.next = first;
                state.drain(&mut ready);
            }
        }
        self.origins.retain(|_, state| {
            !state.held.is_empty() || state.last_seen.saturating_add(FORGET_AFTER) > now
        });
        ready
    }

    /// Messages held now, over every origin.
    pub(super) fn held(&self) -> usize {
        self.origins.values().map(|o| o.held.len()).sum()
    }
}

impl Origin {
    /// Applies the held messages that follow on from `next` without a hole.
    fn drain(&mut self, ready: &mut Vec<Ready>) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let held = entry.remove();
            // One that starts below `next` overlaps what was applied: applied all the same,
            // as a late message is.
            self.next = self.next.max(held.last + 1);
            ready.push(Ready::Held(held.payload));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(text: &str) -> Ready {
        Ready::Held(text.to_owned())
    }

    #[test]
    fn messages_in_order_are_applied_as_they_come() {
        let mut o = Origins::default();
        assert_eq!(o.arrive("a", (1, 3), b"m1", 0), [Ready::Arrived]);
        assert_eq!(o.arrive("a", (4, 4), b"m2", 1), [Ready::Arrived]);
        // Another origin has its own numbers.
        assert_eq!(o.arrive("b", (1, 2), b"n1", 2), [Ready::Arrived]);
        assert_eq!(o.held(), 0);
    }

    #[test]
    fn an_early_message_waits_for_the_one_before_it() {
        let mut o = Origins::default();
        assert_eq!(o.arrive("a", (1, 1), b"m1", 0), [Ready::Arrived]);
        assert_eq!(o.arrive("a", (5, 6), b"m3", 10), []);
        assert_eq!(o.arrive("a", (3, 4), b"m2b", 20), []);
        assert_eq!(o.held(), 2);
        // The hole is filled: it, then both held, in their order.
        assert_eq!(
            o.arrive("a", (2, 2), b"m2a", 30),
            [Ready::Arrived, held("m2b"), held("m3")]
        );
        assert_eq!(o.held(), 0);
        assert_eq!(o.arrive("a", (7, 7), b"m4", 40), [Ready::Arrived]);
    }

    #[test]
    fn a_skip_lets_through_what_waited_behind_it() {
        let mut o = Origins::default();
        o.arrive("a", (1, 1), b"m1", 0);
        assert_eq!(o.arrive("a", (4, 4), b"m3", 10), []);
        // The proposer gave up on requests 2 and 3.
        assert_eq!(
            o.arrive("a", (2, 3), b"skip", 20),
            [Ready::Arrived, held("m3")]
        );
        // The message it gave up on, stored after all: late, applied when it comes.
        assert_eq!(o.arrive("a", (2, 3), b"m2", 30), [Ready::Arrived]);
        assert_eq!(o.arrive("a", (5, 5), b"m4", 40), [Ready::Arrived]);
    }

    #[test]
    fn a_hold_ends_after_hold_of_stream_time() {
        let mut o = Origins::default();
        o.arrive("a", (1, 1), b"m1", 0);
        assert_eq!(o.arrive("a", (3, 3), b"m3", 1_000), []);
        assert_eq!(o.arrive("a", (4, 4), b"m4", 2_000), []);
        // Any origin's message moves the stream's time on.
        assert_eq!(
            o.arrive("b", (1, 1), b"n1", 1_000 + HOLD - 1),
            [Ready::Arrived]
        );
        assert_eq!(
            o.arrive("b", (2, 2), b"n2", 1_000 + HOLD + CHECK_EVERY),
            [held("m3"), held("m4"), Ready::Arrived]
        );
        assert_eq!(o.held(), 0);
        assert_eq!(o.arrive("a", (2, 2), b"m2", 40_000), [Ready::Arrived]);
        assert_eq!(o.arrive("a", (5, 5), b"m5", 40_001), [Ready::Arrived]);
    }

    #[test]
    fn a_quiet_origin_is_forgotten_and_starts_afresh() {
        let mut o = Origins::default();
        o.arrive("a", (1, 5), b"m1", 0);
        o.arrive("b", (1, 1), b"n1", FORGET_AFTER + CHECK_EVERY);
        assert!(!o.origins.contains_key("a"));
        // Back after a pause: taken from where it now is.
        assert_eq!(
            o.arrive("a", (9, 9), b"m2", FORGET_AFTER + 2 * CHECK_EVERY),
            [Ready::Arrived]
        );
    }

    #[test]
    fn the_state_survives_a_snapshot_and_decides_the_same_after_it() {
        let mut live = Origins::default();
        live.arrive("a", (1, 1), b"m1", 0);
        live.arrive("a", (3, 3), b"m3 \"quoted\"", 5);
        let text = serde_json::to_string(&live).unwrap();
        let mut restored: Origins = serde_json::from_str(&text).unwrap();
        assert_eq!(restored, live);
        assert_eq!(
            restored.arrive("a", (2, 2), b"m2", 9),
            live.arrive("a", (2, 2), b"m2", 9)
        );
        assert_eq!(restored, live);
    }
}
