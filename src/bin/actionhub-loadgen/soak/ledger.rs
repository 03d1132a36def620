//! The soak's delivery checks for one customer, in bounded memory.
//!
//! A customer's events are published by one connection, so their acknowledged seqs come
//! in rising order. The ledger keeps those seqs only until every subscriber ("follower")
//! of the customer has passed them, so a run of tens of millions of events holds no more
//! than the lag between the slowest follower and the newest acknowledgement.
//!
//! A follower may see an event before its publisher reads the acknowledgement (fan-out
//! comes first), so what a follower saw beyond the acknowledged seqs waits in its own
//! short queue until the acknowledgement arrives. Pure: no IO, no clock.

use std::collections::VecDeque;

/// What the checks found in one call; zero when everything matched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Faults {
    /// Acknowledged events a follower will never see: it has already seen a later one
    /// (or the run ended, or it gave up reconnecting).
    pub(crate) lost: u64,
    /// Events a follower saw that were never acknowledged at that place in the order.
    pub(crate) unexpected: u64,
    /// Acknowledgements whose seq did not rise above the customer's previous one.
    pub(crate) ack_order: u64,
}

impl Faults {
    pub(crate) fn any(&self) -> bool {
        *self != Faults::default()
    }

    fn add(&mut self, other: Faults) {
        self.lost += other.lost;
        self.unexpected += other.unexpected;
        self.ack_order += other.ack_order;
    }
}

/// One customer's acknowledged seqs and how far each of its followers has got.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// Acknowledged seqs some follower has not passed yet, oldest first.
    acked: VecDeque<u64>,
    /// How many acknowledged seqs were trimmed off the front of `acked`, so that
    /// `base + i` numbers `acked[i]` for the whole run.
    base: u64,
    /// The newest acknowledged seq (0: none yet).
    last_acked: u64,
    followers: Vec<Follower>,
}

#[derive(Debug, Default)]
struct Follower {
    /// The number (as in `Ledger::base`) of the next acknowledged seq this follower must see.
    next: u64,
    /// Seqs it saw that are not acknowledged yet, in the order seen.
    ahead: VecDeque<u64>,
    /// It stopped (gave up reconnecting): everything from here on is lost to it.
    abandoned: bool,
}

impl Ledger {
    pub(crate) fn new(followers: usize) -> Self {
        Ledger {
            acked: VecDeque::new(),
            base: 0,
            last_acked: 0,
            followers: (0..followers).map(|_| Follower::default()).collect(),
        }
    }

    /// Records the acknowledgement of `seq`, an event every follower must see.
    pub(crate) fn acked(&mut self, seq: u64) -> Faults {
        let mut faults = Faults::default();
        if seq <= self.last_acked {
            faults.ack_order += 1;
            return faults;
        }
        self.last_acked = seq;
        self.acked.push_back(seq);
        for f in 0..self.followers.len() {
            if self.followers[f].abandoned {
                faults.lost += 1;
            } else if !self.followers[f].ahead.is_empty() {
                faults.add(self.reconcile(f));
            }
        }
        self.trim();
        faults
    }

    /// Records that follower `follower` received `seq` (the caller has already checked
    /// that its seqs rise).
    pub(crate) fn seen(&mut self, follower: usize, seq: u64) -> Faults {
        if self.followers[follower].abandoned {
            return Faults::default();
        }
        self.followers[follower].ahead.push_back(seq);
        let faults = self.reconcile(follower);
        self.trim();
        faults
    }

    /// The follower stops for good: what it has not seen is lost, now and from now on.
    pub(crate) fn abandon(&mut self, follower: usize) -> Faults {
        let faults = self.settle(follower);
        self.followers[follower].abandoned = true;
        self.trim();
        faults
    }

    /// Acknowledged events some follower has not seen yet, plus seen ones not yet
    /// acknowledged: zero once every delivery is accounted for.
    pub(crate) fn pending(&self) -> u64 {
        let end = self.end();
        self.followers
            .iter()
            .filter(|f| !f.abandoned)
            .map(|f| end - f.next + f.ahead.len() as u64)
            .sum()
    }

    /// Acknowledged seqs held in memory.
    pub(crate) fn held(&self) -> usize {
        self.acked.len()
    }

    /// The run is over: whatever a follower has not seen is lost, whatever it saw
    /// unacknowledged is unexpected.
    pub(crate) fn finish(&mut self) -> Faults {
        let mut faults = Faults::default();
        for f in 0..self.followers.len() {
            if !self.followers[f].abandoned {
                faults.add(self.settle(f));
            }
        }
        self.trim();
        faults
    }

    /// The number one past the newest acknowledged seq.
    fn end(&self) -> u64 {
        self.base + self.acked.len() as u64
    }

    /// Counts follower `f`'s outstanding seqs as lost or unexpected and clears them.
    fn settle(&mut self, f: usize) -> Faults {
        let end = self.end();
        let follower = &mut self.followers[f];
        let faults = Faults {
            lost: end - follower.next,
            unexpected: follower.ahead.len() as u64,
            ack_order: 0,
        };
        follower.next = end;
        follower.ahead.clear();
        faults
    }

    /// Matches follower `f`'s seen seqs against the acknowledged ones, as far as both go.
    fn reconcile(&mut self, f: usize) -> Faults {
        let mut faults = Faults::default();
        let (base, end) = (self.base, self.end());
        let follower = &mut self.followers[f];
        while let Some(&seen) = follower.ahead.front() {
            if follower.next == end {
                break;
            }
            let expected = self.acked[(follower.next - base) as usize];
            if expected == seen {
                follower.ahead.pop_front();
                follower.next += 1;
            } else if expected < seen {
                // Seqs rise on the follower's side, so `expected` can no longer come.
                faults.lost += 1;
                follower.next += 1;
            } else {
                faults.unexpected += 1;
                follower.ahead.pop_front();
            }
        }
        faults
    }

    /// Drops the acknowledged seqs every live follower has passed.
    fn trim(&mut self) {
        let passed = self
            .followers
            .iter()
            .filter(|f| !f.abandoned)
            .map(|f| f.next)
            .min()
            .unwrap_or(self.end());
        while self.base < passed {
            self.acked.pop_front();
            self.base += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: Faults = Faults {
        lost: 0,
        unexpected: 0,
        ack_order: 0,
    };

    #[test]
    fn deliveries_before_and_after_their_ack_both_match_and_memory_is_released() {
        let mut ledger = Ledger::new(2);
        assert_eq!(ledger.seen(0, 5), CLEAN, "seen before its ack");
        assert_eq!(ledger.acked(5), CLEAN);
        assert_eq!(ledger.pending(), 1, "follower 1 has not seen 5 yet");
        assert_eq!(ledger.seen(1, 5), CLEAN, "seen after its ack");
        assert_eq!(ledger.acked(9), CLEAN);
        assert_eq!(ledger.seen(0, 9), CLEAN);
        assert_eq!(ledger.seen(1, 9), CLEAN);
        assert_eq!((ledger.pending(), ledger.held()), (0, 0));
        assert_eq!(ledger.finish(), CLEAN);
    }

    #[test]
    fn a_skipped_event_is_lost_once_a_later_one_arrives() {
        let mut ledger = Ledger::new(1);
        for seq in [3, 4, 6] {
            ledger.acked(seq);
        }
        assert_eq!(ledger.seen(0, 3), CLEAN);
        let faults = ledger.seen(0, 6);
        assert_eq!(faults.lost, 1, "4 was skipped");
        assert_eq!(ledger.pending(), 0);
    }

    #[test]
    fn what_never_arrived_is_lost_at_the_end() {
        let mut ledger = Ledger::new(2);
        ledger.acked(1);
        ledger.acked(2);
        ledger.seen(0, 1);
        ledger.seen(0, 2);
        ledger.seen(1, 1);
        assert_eq!(ledger.held(), 1, "2 is kept for follower 1");
        assert_eq!(ledger.finish().lost, 1);
    }

    #[test]
    fn an_event_seen_but_never_acknowledged_is_unexpected() {
        let mut ledger = Ledger::new(1);
        ledger.acked(2);
        assert_eq!(ledger.seen(0, 1).unexpected, 1, "1 sits before the acked 2");
        assert_eq!(ledger.seen(0, 2), CLEAN);
        ledger.seen(0, 7);
        assert_eq!(ledger.finish().unexpected, 1, "7 was never acknowledged");
    }

    #[test]
    fn acks_must_rise() {
        let mut ledger = Ledger::new(1);
        ledger.acked(4);
        assert_eq!(ledger.acked(4).ack_order, 1);
        assert_eq!(ledger.acked(3).ack_order, 1);
    }

    #[test]
    fn an_abandoned_follower_loses_what_it_missed_and_holds_nothing_back() {
        let mut ledger = Ledger::new(2);
        ledger.acked(1);
        ledger.seen(0, 1);
        assert_eq!(ledger.abandon(1).lost, 1);
        assert_eq!(ledger.held(), 0);
        let faults = ledger.acked(2);
        assert_eq!(faults.lost, 1, "the abandoned follower misses 2 too");
        ledger.seen(0, 2);
        assert_eq!((ledger.pending(), ledger.held()), (0, 0));
        assert_eq!(ledger.finish(), CLEAN);
    }
}
