//! The channel index: which visitor each channel user id names (`GET
//! /v1/visitors/by-channel/{channel}/{id}`, and the claims an identity event makes).
//!
//! It is derived from the profiles' `channels` and holds exactly their pairs: a
//! (channel, id) pair is in at most one profile, and points to it. Only the fold changes it,
//! through the functions here, in the same step as the profile; a restore rebuilds it from
//! the profiles (`restore_profile`), so a snapshot never holds it. Like every change, the
//! index is touched with no profile entry held.

use serde_json::{Map, Value};

use super::HubState;
use crate::ids::{ChannelUserId, Seq, VisitorId};

impl HubState {
    /// The visitor a channel user id names.
    pub fn channel_owner(&self, id: &ChannelUserId) -> Option<VisitorId> {
        self.channels.get(id).map(|v| *v)
    }

    /// Gives a profile an event's channel ids, newest id per channel. The id a channel had
    /// before no longer names the visitor.
    pub(super) fn add_channels(&self, visitor: VisitorId, channels: &Map<String, Value>, seq: Seq) {
        let replaced: Vec<ChannelUserId> = {
            let Some(mut p) = self.profile_mut(visitor, seq) else {
                return;
            };
            let mut replaced = Map::new();
            for (channel, user) in channels {
                match p.channels.insert(channel.clone(), user.clone()) {
                    Some(old) if old != *user => {
                        replaced.insert(channel.clone(), old);
                    }
                    _ => {}
                }
            }
            ChannelUserId::all_in(&replaced).collect()
        };
        self.unindex_channels(visitor, replaced);
        self.index_channels(visitor, ChannelUserId::all_in(channels));
    }

    /// Points channel ids that moved to another profile (a merge) at it.
    pub(super) fn index_channels(
        &self,
        visitor: VisitorId,
        ids: impl IntoIterator<Item = ChannelUserId>,
    ) {
        for id in ids {
            self.channels.insert(id, visitor);
        }
    }

    /// Forgets channel ids that `visitor` no longer holds (an entry another visitor owns
    /// is left alone).
    pub(super) fn unindex_channels(
        &self,
        visitor: VisitorId,
        ids: impl IntoIterator<Item = ChannelUserId>,
    ) {
        for id in ids {
            self.channels.remove_if(&id, |_, owner| *owner == visitor);
        }
    }

    /// Every entry of the index, sorted: for tests that compare it with the profiles.
    #[cfg(test)]
    pub(super) fn channel_index(&self) -> Vec<(ChannelUserId, VisitorId)> {
        let mut all: Vec<_> = self
            .channels
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        all.sort();
        all
    }
}
