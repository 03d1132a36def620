//! The limits of what one visitor profile holds: user ids, customers, and the size of its
//! traits and channels (docs/protocol.md, "Limits"). The sequencer asks before it commits
//! a change that would grow a profile, and refuses the change that would pass a limit, so
//! the fold never has to.

use serde_json::{Map, Value};

use super::HubState;
use crate::ids::{CustomerId, UserId, VisitorId};
use crate::ingest::event::{CompanyInfo, VisitorEvent, VisitorKind};

/// Most user ids one profile links. What a browser can make a profile hold is bounded, so
/// one token cannot grow the hub, and every identify costs the same however old the
/// profile is (docs/protocol.md, "Limits").
pub const MAX_USER_IDS_PER_PROFILE: usize = 32;
/// Most customers (browsers) one profile holds, merges included.
pub const MAX_CUSTOMERS_PER_PROFILE: usize = 100;
/// Largest a profile's `traits`, and its `channels`, may grow, as JSON.
pub const MAX_PROFILE_OBJECT_BYTES: usize = 16 * 1024;

impl HubState {
    /// Refuses a visitor event that would make a profile hold more than its limits. Costs
    /// the same however old the profile is: what it copies is bounded by those limits.
    pub fn check_visitor_growth(&self, e: &VisitorEvent) -> Result<(), ProfileFull> {
        if let Some(company) = &e.company {
            self.check_company_growth(company)?;
        }
        if e.kind == VisitorKind::Update {
            let visitor = self
                .profile_of(e.customer_id)
                .unwrap_or(VisitorId::of_first_customer(e.customer_id));
            let attributes = e.attributes.clone().unwrap_or_default();
            return self.check_traits_growth(visitor, &attributes);
        }
        if !e.links() {
            return Ok(());
        }
        let user_id = e.user_id.as_ref();
        let linking = self.linking(e.customer_id, user_id, e.channels.as_ref());
        let mine = self.profile_of(e.customer_id);
        let user_linked = user_id.is_none_or(|u| self.users.get(u).map(|v| *v) == mine);
        let grows = !linking.folds.is_empty()
            || Some(linking.target) != mine
            || !user_linked
            || e.traits.is_some()
            || e.channels.is_some();
        if !grows {
            return Ok(());
        }
        // What `link` and `apply_visitor` would make of it.
        let mut after = match linking.exists {
            true => self.holdings(linking.target),
            false => Holdings::default(),
        };
        for source in linking.folds {
            after = after.folding(self.holdings(source));
        }
        if let Some(user_id) = user_id {
            after.add_user(user_id);
        }
        after.add_customer(e.customer_id);
        if let Some(traits) = &e.traits {
            after.traits.extend(traits.clone());
        }
        if let Some(channels) = &e.channels {
            after.channels.extend(channels.clone());
        }
        after.check()
    }

    /// Refuses merging visitor `source` into `target` past a profile's limits.
    pub fn check_merge_growth(
        &self,
        source: VisitorId,
        target: VisitorId,
    ) -> Result<(), ProfileFull> {
        self.holdings(target).folding(self.holdings(source)).check()
    }

    /// Refuses merging `traits` into a visitor's traits past a profile's limits.
    pub fn check_traits_growth(
        &self,
        visitor: VisitorId,
        traits: &Map<String, Value>,
    ) -> Result<(), ProfileFull> {
        let mut after = self.holdings(visitor);
        after.traits.extend(traits.clone());
        after.check()
    }

    /// Refuses a company report whose attributes, merged into the company's, would pass
    /// [`MAX_PROFILE_OBJECT_BYTES`] as JSON: many visitors report one company, so what it
    /// holds is bounded like a profile's traits.
    pub fn check_company_growth(&self, company: &CompanyInfo) -> Result<(), ProfileFull> {
        let mut attributes = self
            .companies
            .get(&company.id)
            .map(|c| c.attributes.clone())
            .unwrap_or_default();
        attributes.extend(company.attributes.clone());
        let would_be = json_len(&attributes);
        match would_be > MAX_PROFILE_OBJECT_BYTES {
            true => Err(ProfileFull {
                limit: "companyAttributesBytes",
                field: "company",
                max: MAX_PROFILE_OBJECT_BYTES,
                would_be,
            }),
            false => Ok(()),
        }
    }

    /// A copy of what a visitor's profile holds (a lone customer: itself).
    fn holdings(&self, visitor: VisitorId) -> Holdings {
        match self.profiles.get(&visitor) {
            Some(p) => Holdings {
                user_ids: p.user_ids.to_vec(),
                customers: p.customers.clone(),
                traits: p.traits.clone(),
                channels: p.channels.clone(),
            },
            None => Holdings {
                customers: vec![visitor.first_customer()],
                ..Holdings::default()
            },
        }
    }
}

/// A profile limit a change would exceed.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileFull {
    /// The limit's name, as docs/protocol.md lists it.
    pub limit: &'static str,
    /// The field that would grow past it.
    pub field: &'static str,
    pub max: usize,
    /// What the profile would hold.
    pub would_be: usize,
}

/// What a profile would hold after a change, built the way [`HubState::apply`] builds it, to
/// check the limits before the change is made.
#[derive(Default)]
struct Holdings {
    user_ids: Vec<UserId>,
    customers: Vec<CustomerId>,
    traits: Map<String, Value>,
    channels: Map<String, Value>,
}

impl Holdings {
    fn add_user(&mut self, user_id: &UserId) {
        if !self.user_ids.contains(user_id) {
            self.user_ids.push(user_id.clone());
        }
    }

    fn add_customer(&mut self, customer: CustomerId) {
        if !self.customers.contains(&customer) {
            self.customers.push(customer);
        }
    }

    /// This profile with `source` folded in, as `HubState::fold_profile` does it.
    fn folding(mut self, source: Holdings) -> Holdings {
        for u in &source.user_ids {
            self.add_user(u);
        }
        for c in source.customers {
            self.add_customer(c);
        }
        for (k, v) in source.traits {
            self.traits.entry(k).or_insert(v);
        }
        for (k, v) in source.channels {
            self.channels.entry(k).or_insert(v);
        }
        self
    }

    fn check(&self) -> Result<(), ProfileFull> {
        let held = [
            (
                "userIdsPerProfile",
                "userId",
                MAX_USER_IDS_PER_PROFILE,
                self.user_ids.len(),
            ),
            (
                "customersPerProfile",
                "customerId",
                MAX_CUSTOMERS_PER_PROFILE,
                self.customers.len(),
            ),
            (
                "profileTraitsBytes",
                "traits",
                MAX_PROFILE_OBJECT_BYTES,
                json_len(&self.traits),
            ),
            (
                "profileChannelsBytes",
                "channels",
                MAX_PROFILE_OBJECT_BYTES,
                json_len(&self.channels),
            ),
        ];
        match held.into_iter().find(|(_, _, max, n)| n > max) {
            Some((limit, field, max, would_be)) => Err(ProfileFull {
                limit,
                field,
                max,
                would_be,
            }),
            None => Ok(()),
        }
    }
}

/// The size of an object as JSON, the measure of the byte limits.
fn json_len(m: &Map<String, Value>) -> usize {
    serde_json::to_vec(m).map_or(usize::MAX, |v| v.len())
}
