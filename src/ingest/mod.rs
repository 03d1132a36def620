//! The protocol and the event model: what clients send and what the hub sends back. Pure:
//! nothing here takes a lock, reads a clock or touches a socket.
//!
//! - [`protocol`]: client frames parsed, hub frames written.
//! - [`event`]: published events validated into typed `Event`s, and the shape of
//!   delivered ones.
//! - [`lifecycle`]: the action state machines, as tables.
//! - [`topic`]: topics, patterns, `where` filters and the keys they look at.

pub mod event;
pub mod lifecycle;
pub mod protocol;
pub mod topic;
