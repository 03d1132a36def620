//! The state's side of segments (`hub::segments`): the visitor a segment condition reads,
//! the reads of the segment table, and the members rebuilt after a restore. The table
//! itself changes only in the fold (`apply.rs`).

use serde_json::{Map, Value};

use super::{HubState, Visitor};
use crate::hub::segments::{Move, Segment, Segments};
use crate::ids::{CompanyId, CustomerId, SegmentId, VisitorId};

/// A company's name and attributes (`None` inside: no such company yet).
pub type CompanyFields = Option<(Option<String>, Map<String, Value>)>;

impl HubState {
    /// The visitor a customer's change is about: its profile, or the customer alone.
    pub fn visitor_of(&self, customer: CustomerId) -> VisitorId {
        self.profile_of(customer)
            .unwrap_or_else(|| VisitorId::of_first_customer(customer))
    }

    /// The visitor as segment conditions read it; `None` when no visitor goes by that id
    /// any more (erased, forgotten, or merged into another).
    pub fn segment_subject(&self, visitor: VisitorId) -> Option<Visitor> {
        if !self.profiles.contains_key(&visitor) {
            let lone = self.customers.get(&visitor.first_customer())?;
            if lone.visitor_id.is_some_and(|v| v != visitor) {
                return None;
            }
        }
        let mut subject = self.visitor(visitor, false)?;
        if let Some((company, _)) = &subject.company {
            if self.segments.read().read_company() {
                subject.company_attributes =
                    self.companies.get(company).map(|c| c.attributes.clone());
            }
        }
        Some(subject)
    }

    /// A company's name and attributes now, when a segment reads companies: what the
    /// sequencer compares before and after an input that names the company, to evaluate
    /// its members again when they changed.
    pub fn company_fields(&self, company: &CompanyId) -> Option<CompanyFields> {
        if !self.segments.read().read_company() {
            return None;
        }
        Some(
            self.companies
                .get(company)
                .map(|c| (c.name.clone(), c.attributes.clone())),
        )
    }

    /// The visitors who belong to a company now, in id order. Visits every profile: asked
    /// only when a company's name or attributes change while a segment reads companies.
    pub fn company_members(&self, company: &CompanyId) -> Vec<VisitorId> {
        let mut members: Vec<VisitorId> = self
            .profiles
            .iter()
            .filter(|p| p.company.as_ref() == Some(company))
            .map(|p| *p.key())
            .collect();
        members.sort_unstable();
        members
    }

    /// Whether there is any segment (when there is none, a change costs nothing here).
    pub fn has_segments(&self) -> bool {
        !self.segments.read().is_empty()
    }

    /// Runs `read` over the segment table. Keep it short: the fold waits for it.
    pub fn with_segments<R>(&self, read: impl FnOnce(&Segments) -> R) -> R {
        read(&self.segments.read())
    }

    /// The memberships the visitor as it is now moves.
    pub fn segment_moves(&self, visitor: VisitorId) -> Vec<Move> {
        let subject = self.segment_subject(visitor);
        self.segments.read().moves(visitor, subject.as_ref())
    }

    /// The memberships of one segment every visitor as it is now moves, in visitor id
    /// order (a segment just created or changed). Visits every visitor.
    pub fn segment_backfill(&self, id: SegmentId) -> Vec<(VisitorId, bool)> {
        let mut visitors = self.visitors(None, None, None);
        let members = self.segments.read().members(id);
        visitors.extend(members);
        visitors.sort_unstable();
        visitors.dedup();
        let subjects: Vec<_> = visitors
            .into_iter()
            .map(|v| (v, self.segment_subject(v)))
            .collect();
        self.segments
            .read()
            .moves_of(id, subjects.iter().map(|(v, s)| (*v, s.as_ref())))
    }

    /// A segment with how many visitors it holds.
    pub fn segment(&self, id: SegmentId) -> Option<(Segment, usize)> {
        let segments = self.segments.read();
        segments.get(id).map(|s| (s.clone(), segments.count(id)))
    }

    /// Every segment with its count, in id order.
    pub fn segment_list(&self) -> Vec<(Segment, usize)> {
        let segments = self.segments.read();
        segments
            .all()
            .map(|s| (s.clone(), segments.count(s.id)))
            .collect()
    }

    /// A segment's members, in visitor id order.
    pub fn segment_members(&self, id: SegmentId) -> Vec<VisitorId> {
        self.segments.read().members(id)
    }

    /// Puts every visitor in the segments it matches: a restored state's members, which a
    /// snapshot does not hold because they follow from the profiles and the definitions
    /// (every hold of the sequencer lock leaves them so, and a snapshot begins between two).
    pub fn rebuild_segment_members(&self) {
        if !self.has_segments() {
            return;
        }
        for visitor in self.visitors(None, None, None) {
            for (id, entered) in self.segment_moves(visitor) {
                if entered {
                    self.segments.write().enter(id, visitor);
                }
            }
        }
    }
}
