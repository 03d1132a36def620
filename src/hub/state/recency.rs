//! Customers ordered by when they were last seen, and by when their open session was, so
//! the sweeper and the visitor list never scan every customer. Derived from the customers:
//! the fold keeps it up to date, a restore rebuilds it, and it is never snapshotted.

use std::collections::BTreeSet;

use super::{Customer, HubState, SessionInfo};
use crate::clock::Millis;
use crate::ids::CustomerId;

/// The orderings of [`HubState`]'s `recency`.
#[derive(Default)]
pub(super) struct Recency {
    /// (last seen, customer), for every customer.
    seen: BTreeSet<(Millis, CustomerId)>,
    /// (the open session's last event, customer), for customers with an open session.
    open: BTreeSet<(Millis, CustomerId)>,
}

/// The customers of a [`Recency`] set whose time is before `cutoff`, oldest first, at most
/// `max`.
fn idle_before(
    set: &BTreeSet<(Millis, CustomerId)>,
    cutoff: Millis,
    max: usize,
) -> Vec<CustomerId> {
    set.range(..(cutoff, CustomerId(uuid::Uuid::nil())))
        .take(max)
        .map(|(_, id)| *id)
        .collect()
}

/// Where a customer stands in [`Recency`]: its last seen and its open session's.
pub(super) type RecencyKey = (Millis, Option<Millis>);

pub(super) fn recency_key(c: &Customer) -> RecencyKey {
    let open = c
        .current_session
        .and_then(|open| c.sessions.iter().find(|s| s.id == open))
        .map(|s| s.last_seen);
    (c.last_seen, open)
}

impl Recency {
    pub(super) fn update(
        &mut self,
        id: CustomerId,
        before: Option<RecencyKey>,
        after: Option<RecencyKey>,
    ) {
        if before == after {
            return;
        }
        if let Some((seen, open)) = before {
            self.seen.remove(&(seen, id));
            if let Some(open) = open {
                self.open.remove(&(open, id));
            }
        }
        if let Some((seen, open)) = after {
            self.seen.insert((seen, id));
            if let Some(open) = open {
                self.open.insert((open, id));
            }
        }
    }
}

impl HubState {
    /// Open sessions with no event since `cutoff`, the longest idle first, at most `max`.
    /// Read from the recency index: costs what it returns, not the number of customers.
    pub fn idle_sessions(&self, cutoff: Millis, max: usize) -> Vec<(CustomerId, SessionInfo)> {
        let ids = idle_before(&self.recency.lock().open, cutoff, max);
        ids.into_iter()
            .filter_map(|id| {
                let c = self.customers.get(&id)?;
                let open = c.current_session?;
                let s = c.sessions.iter().find(|s| s.id == open)?;
                Some((id, s.clone()))
            })
            .collect()
    }

    /// Customers not seen since `cutoff`, the longest idle first, at most `max`.
    pub fn idle_customers(&self, cutoff: Millis, max: usize) -> Vec<CustomerId> {
        idle_before(&self.recency.lock().seen, cutoff, max)
    }

    /// Up to `max` customers seen before the position `before` (exclusive; `None` from the
    /// newest), most recently seen first, and the position to continue from. Copied out
    /// in chunks, so a reader walking every customer holds the index only briefly.
    pub fn customers_by_recency(
        &self,
        before: Option<(Millis, CustomerId)>,
        max: usize,
    ) -> Vec<(Millis, CustomerId)> {
        let recency = self.recency.lock();
        match before {
            Some(key) => recency.seen.range(..key).rev().take(max).copied().collect(),
            None => recency.seen.iter().rev().take(max).copied().collect(),
        }
    }

    pub(super) fn recency_of(&self, id: CustomerId) -> Option<RecencyKey> {
        self.customers.get(&id).map(|c| recency_key(&c))
    }
}
