//! The protocol and the event model: what clients send and what the hub sends back. Pure
//! but for `event::now_millis`, the clock its callers stamp with: nothing here takes a lock
//! or touches a socket, and nothing it decides reads the clock.
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
