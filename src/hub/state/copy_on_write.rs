//! Snapshots: copy-on-write preimages.
//!
//! A snapshot at seq S must hold the state exactly as of S while the sequencer goes on
//! changing it. `begin_snapshot` (under the sequencer lock) records S; from then on, the
//! first change to a customer, profile or action not yet visited by the snapshot walk saves
//! the value it had at S (its "preimage") before changing it. Every entity carries the seq
//! of its last change (`stamp`), so "had it changed since S" is one comparison. The walk
//! visits each map's keys in sorted order; for each key, under the `cow` lock, it takes the
//! preimage if one was saved, else the live value if its stamp is <= S (an entity created
//! after S has neither and is skipped), and then records that it has passed that key, so no
//! later change saves a preimage it no longer needs. Entities removed before the walk
//! collected the keys are left in the preimage table and written at the end. No lock is
//! held while an entity is encoded, and the sequencer waits at most for one entity's clone.
//!
//! Restoring is here too: a state is rebuilt from the entities a snapshot walk wrote.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::Ordering;

use dashmap::DashMap;

use super::recency::recency_key;
use super::{Action, Company, Customer, HubState, Profile, SnapshotMaps};
use crate::hub::segments::{Segment, Segments};
use crate::ids::{ActionId, ChannelUserId, CompanyId, CustomerId, Seq, VisitorId};

/// Which keys of a map the snapshot walk has passed.
#[derive(Clone)]
enum Walked<K> {
    NotYet,
    Upto(K),
    All,
}

struct Preimages<K, V> {
    saved: HashMap<K, V>,
    walked: Walked<K>,
}

impl<K: Ord + Hash + Clone, V> Preimages<K, V> {
    fn new() -> Self {
        Preimages {
            saved: HashMap::new(),
            walked: Walked::NotYet,
        }
    }

    /// Whether a change to `key` must save its preimage first.
    fn wants(&self, key: &K) -> bool {
        let ahead = match &self.walked {
            Walked::NotYet => true,
            Walked::Upto(passed) => key > passed,
            Walked::All => false,
        };
        ahead && !self.saved.contains_key(key)
    }
}

pub(super) struct CopyOnWrite {
    at: Seq,
    customers: Preimages<CustomerId, Customer>,
    profiles: Preimages<VisitorId, Profile>,
    actions: Preimages<ActionId, Action>,
    companies: Preimages<CompanyId, Company>,
    /// The segment definitions as of `at`: a thousand at most, copied whole at the start.
    segments: (u64, Vec<Segment>),
}

/// One entity of a snapshot, handed to the writer.
pub enum SnapshotItem<'a> {
    Customer(CustomerId, &'a Customer),
    Profile(VisitorId, &'a Profile),
    Action(&'a Action),
    Company(&'a CompanyId, &'a Company),
    /// Every segment definition and the number the next one gets (members are derived
    /// from the profiles, so a snapshot does not hold them).
    Segments(u64, &'a [Segment]),
}

fn customer_stamp(c: &Customer) -> Seq {
    c.stamp
}

fn profile_stamp(p: &Profile) -> Seq {
    p.stamp
}

fn action_stamp(a: &Action) -> Seq {
    a.last().seq
}

fn company_stamp(c: &Company) -> Seq {
    c.stamp
}

impl HubState {
    /// Saves the preimage of `key` if a snapshot needs it. Must be called with no entry of
    /// any map held (the snapshot walk takes `cow`, then a map entry).
    fn save<K, V>(
        &self,
        map: &DashMap<K, V>,
        key: K,
        table: fn(&mut CopyOnWrite) -> &mut Preimages<K, V>,
        stamp: fn(&V) -> Seq,
    ) where
        K: Ord + Hash + Clone,
        V: Clone,
    {
        if !self.snapshot_running() {
            return;
        }
        let mut cow = self.cow.lock();
        let Some(cow) = cow.as_mut() else {
            return;
        };
        let at = cow.at;
        let table = table(cow);
        if table.wants(&key) {
            if let Some(value) = map.get(&key).filter(|v| stamp(v) <= at) {
                let value = value.clone();
                table.saved.insert(key, value);
            }
        }
    }

    pub(super) fn save_customer(&self, id: CustomerId) {
        self.save(&self.customers, id, |c| &mut c.customers, customer_stamp);
    }

    pub(super) fn save_profile(&self, id: VisitorId) {
        self.save(&self.profiles, id, |c| &mut c.profiles, profile_stamp);
    }

    pub(super) fn save_action(&self, id: ActionId) {
        self.save(&self.actions, id, |c| &mut c.actions, action_stamp);
    }

    pub(super) fn save_company(&self, id: &CompanyId) {
        self.save(
            &self.companies,
            id.clone(),
            |c| &mut c.companies,
            company_stamp,
        );
    }

    /// A company to change for the event at `seq`, its preimage saved first.
    pub(super) fn company_mut(
        &self,
        id: &CompanyId,
        seq: Seq,
    ) -> Option<dashmap::mapref::one::RefMut<'_, CompanyId, Company>> {
        self.save_company(id);
        let mut c = self.companies.get_mut(id)?;
        c.stamp = seq;
        Some(c)
    }

    /// A customer to change for the event at `seq`, its preimage saved first.
    pub(super) fn customer_mut(
        &self,
        id: CustomerId,
        seq: Seq,
    ) -> Option<dashmap::mapref::one::RefMut<'_, CustomerId, Customer>> {
        self.save_customer(id);
        let mut c = self.customers.get_mut(&id)?;
        c.stamp = seq;
        Some(c)
    }

    /// A profile to change for the event at `seq`, its preimage saved first.
    pub(super) fn profile_mut(
        &self,
        id: VisitorId,
        seq: Seq,
    ) -> Option<dashmap::mapref::one::RefMut<'_, VisitorId, Profile>> {
        self.save_profile(id);
        let mut p = self.profiles.get_mut(&id)?;
        p.stamp = seq;
        Some(p)
    }

    /// Starts a snapshot as of `at`, the latest applied seq. Called under the sequencer
    /// lock, so no event is half applied; it copies only the per-map counters (a handful
    /// of entries) and returns them.
    pub fn begin_snapshot(&self, at: Seq) -> SnapshotMaps {
        *self.cow.lock() = Some(CopyOnWrite {
            at,
            customers: Preimages::new(),
            profiles: Preimages::new(),
            actions: Preimages::new(),
            companies: Preimages::new(),
            segments: self.segments.read().definitions(),
        });
        self.cow_on.store(true, Ordering::Release);
        self.maps.lock().clone()
    }

    /// Walks the state as of the snapshot's seq, handing every entity to `emit`. Runs on
    /// the snapshot thread, concurrently with the sequencer.
    pub fn walk_snapshot<E>(
        &self,
        emit: &mut impl FnMut(SnapshotItem<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.walk(
            &self.customers,
            |c| &mut c.customers,
            customer_stamp,
            &mut |k, v| emit(SnapshotItem::Customer(*k, v)),
        )?;
        self.walk(
            &self.profiles,
            |c| &mut c.profiles,
            profile_stamp,
            &mut |k, v| emit(SnapshotItem::Profile(*k, v)),
        )?;
        self.walk(
            &self.actions,
            |c| &mut c.actions,
            action_stamp,
            &mut |_, v| emit(SnapshotItem::Action(v)),
        )?;
        self.walk(
            &self.companies,
            |c| &mut c.companies,
            company_stamp,
            &mut |k, v| emit(SnapshotItem::Company(k, v)),
        )?;
        let segments = {
            let mut cow = self.cow.lock();
            std::mem::take(&mut cow.as_mut().expect("a snapshot is running").segments)
        };
        if segments.1.is_empty() && segments.0 == 0 {
            return Ok(());
        }
        emit(SnapshotItem::Segments(segments.0, &segments.1))
    }

    fn walk<K, V, E>(
        &self,
        map: &DashMap<K, V>,
        table: fn(&mut CopyOnWrite) -> &mut Preimages<K, V>,
        stamp: fn(&V) -> Seq,
        emit: &mut impl FnMut(&K, &V) -> Result<(), E>,
    ) -> Result<(), E>
    where
        K: Ord + Hash + Clone,
        V: Clone,
    {
        // Collect the keys first: no map shard is held while anything is encoded.
        let mut keys: Vec<K> = map.iter().map(|e| e.key().clone()).collect();
        keys.sort_unstable();
        for key in keys {
            let value = {
                let mut cow = self.cow.lock();
                let cow = cow.as_mut().expect("a snapshot is running");
                let at = cow.at;
                let table = table(cow);
                let value = table
                    .saved
                    .remove(&key)
                    .or_else(|| map.get(&key).filter(|v| stamp(v) <= at).map(|v| v.clone()));
                table.walked = Walked::Upto(key.clone());
                value
            };
            if let Some(value) = value {
                emit(&key, &value)?;
            }
        }
        let removed = {
            let mut cow = self.cow.lock();
            let table = table(cow.as_mut().expect("a snapshot is running"));
            table.walked = Walked::All;
            std::mem::take(&mut table.saved)
        };
        for (key, value) in removed {
            emit(&key, &value)?;
        }
        Ok(())
    }

    /// Whether a snapshot is being written (between begin and end).
    pub(super) fn snapshot_running(&self) -> bool {
        self.cow_on.load(Ordering::Acquire)
    }

    /// Ends the snapshot: changes stop saving preimages.
    pub fn end_snapshot(&self) {
        self.cow_on.store(false, Ordering::Release);
        *self.cow.lock() = None;
    }

    /// An empty state about to be filled from a snapshot, with room for about `actions`
    /// actions.
    pub fn restoring(maps: SnapshotMaps, actions: usize) -> HubState {
        let state = HubState {
            actions: DashMap::with_capacity(actions),
            ..HubState::default()
        };
        *state.maps.lock() = maps;
        state
    }

    pub fn restore_customer(&self, id: CustomerId, c: Customer) {
        self.recency.lock().update(id, None, Some(recency_key(&c)));
        self.customers.insert(id, c);
    }

    /// Restores a profile, and the user ids and channel ids that point to it (the indexes
    /// are derived from the profiles, so a snapshot does not hold them).
    pub fn restore_profile(&self, id: VisitorId, p: Profile) {
        for user in p.user_ids.iter() {
            self.users.insert(user.clone(), id);
        }
        self.index_channels(id, ChannelUserId::all_in(&p.channels));
        self.profiles.insert(id, p);
    }

    pub fn restore_company(&self, id: CompanyId, c: Company) {
        self.companies.insert(id, c);
    }

    /// Restores the segment definitions; their members follow from the profiles once
    /// every entity is in ([`HubState::rebuild_segment_members`]).
    pub fn restore_segments(&self, next: u64, defs: Vec<Segment>) {
        *self.segments.write() = Segments::restored(next, defs);
    }

    pub fn restore_action(&self, a: Action) {
        self.actions.insert(a.latest.action_id, a);
    }
}
