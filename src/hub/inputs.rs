//! The hub's inputs as values, for an order that is not this hub's own.
//!
//! On one node the sequencer lock orders the inputs: a publish decides as it takes the
//! lock. In a cluster (see `crate::cluster`) a shared stream orders them: a node proposes
//! each input to the stream, every node reads the stream back in one order and applies
//! every input with the same `decide`, at the time the stream stamped on it, and the node
//! that proposed an input answers its client once it has applied it. This module is the
//! seam between the two: [`Input`] is what is proposed, [`Proposal`] carries it to the
//! stream with the way back to its waiter, and [`Applied`] is what the waiter gets.
//!
//! Only valid inputs are proposed: an event validation refuses never leaves its node, and
//! its refusal keeps its place among the batch's results.

use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::sync::oneshot;

use crate::error::HubError;
use crate::hub::segments::SegmentSpec;
use crate::hub::{Ack, AdminChange, Pending};
use crate::ids::{SegmentId, VisitorId};
use crate::ingest::event::Event;

/// One input to order: everything that changes the hub is one of these.
#[derive(Debug)]
pub enum Input {
    /// Events to decide in order, each with its own result.
    Publish(Vec<Result<Event, HubError>>),
    /// A visitor change that is not an event.
    Admin {
        visitor: VisitorId,
        change: AdminChange,
    },
    /// Merges visitor `source` into visitor `target`.
    Merge {
        source: VisitorId,
        target: VisitorId,
    },
    /// The sweeper's tick: ends idle sessions and ages state out, at the input's time.
    Tick,
    /// Creates, changes or deletes a segment.
    Segment(SegmentChange),
}

impl Input {
    /// How much room in the pipeline the input takes (see `MAX_IN_FLIGHT_EVENTS`).
    pub(super) fn weight(&self) -> usize {
        match self {
            Input::Publish(events) => events.len(),
            Input::Admin { .. } | Input::Merge { .. } | Input::Tick | Input::Segment(_) => 1,
        }
    }
}

/// A change to the segments, as the API asks for it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SegmentChange {
    Create(SegmentSpec),
    Update { id: SegmentId, spec: SegmentSpec },
    Delete(SegmentId),
}

/// What deciding an input came to.
#[derive(Debug)]
pub(super) enum Outcome {
    Published(Vec<Result<Ack, HubError>>),
    Administered(Result<(), HubError>),
    Merged(Result<Ack, HubError>),
    Ticked,
    /// The segment created or changed (none for a deletion).
    Segmented(Result<Option<SegmentId>, HubError>),
}

/// An applied input, for the one waiting for it: its outcome, and what is left to wait
/// for (the pipeline logging and fanning out what it committed).
pub struct Applied {
    pub(super) outcome: Outcome,
    pub(super) pending: Option<Pending>,
}

impl Applied {
    /// The answer to an input refused before it was ordered: every event of a publish
    /// refused with `error`.
    pub fn refused(input: &Input, error: HubError) -> Applied {
        let outcome = match input {
            Input::Publish(events) => {
                Outcome::Published(events.iter().map(|_| Err(error.clone())).collect())
            }
            Input::Admin { .. } => Outcome::Administered(Err(error)),
            Input::Merge { .. } => Outcome::Merged(Err(error)),
            Input::Tick => Outcome::Ticked,
            Input::Segment(_) => Outcome::Segmented(Err(error)),
        };
        Applied {
            outcome,
            pending: None,
        }
    }
}

/// How far this node has applied the shared order, for `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub struct OrderStatus {
    /// The stream sequence of the last message applied here.
    pub applied: AtomicU64,
    /// Messages in the stream not yet applied here, as the stream last said.
    pub lag: AtomicU64,
    /// Messages held because they came before their origin's earlier ones.
    pub held: AtomicU64,
    /// Set once this node has applied everything the stream held when it started: until
    /// then its answers would be those of the past.
    pub caught_up: AtomicBool,
}

/// An input on its way to the shared order, with the way back to whoever waits for it.
/// Dropping `reply` unsent tells the waiter the input's outcome is unknown.
pub struct Proposal {
    pub input: Input,
    pub reply: oneshot::Sender<Applied>,
}
