//! The protocol and the event model: what clients send and what the hub sends back. Pure:
//! nothing here takes a lock, touches a socket or reads the clock (the time an event is
//! stamped with comes from its caller, see [`crate::clock`]).
//!
//! - [`protocol`]: client frames parsed, hub frames written.
//! - [`event`]: the event types: what clients publish and what the hub publishes.
//! - [`validate`]: published events validated into typed `Event`s, refusals naming the
//!   field.
//! - [`wire`]: the delivered `event` frame, written once as a WebSocket frame and read
//!   back from the log.
//! - [`lifecycle`]: the action state machines, as tables.
//! - [`topic`]: topics, patterns, `where` filters and the keys they look at.
//!
//! Frames and events are read the same way (`fields`): a serde-derived struct of slots
//! that keep what each field held, then the rules, in one fixed order.

pub mod event;
mod fields;
pub mod lifecycle;
pub mod protocol;
pub mod topic;
pub mod validate;
pub mod wire;

#[cfg(test)]
mod oracle;
