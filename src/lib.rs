//! actionhub: a realtime web-action event hub.
//!
//! Websites report the lifecycle of web actions (chat invitations, content offers) and
//! visitor events; the hub validates them, orders them, keeps the state of every customer,
//! session and action, and fans events out over WebSockets to subscribers with filters.
//!
//! A map of the crate, in the order an event travels:
//!
//! - [`ws`], [`http`]: the edges. Frames and requests in, replies and events out.
//! - [`protocol`]: the JSON shapes of WebSocket frames; [`event`]: validation of published
//!   events and the shape of delivered ones.
//! - [`hub`]: the sequencer, the one ordering authority, and the pipeline behind it.
//! - [`lifecycle`]: the action state machines; [`topic`]: topics, patterns and filters.
//! - [`state`]: customers, sessions, profiles, actions, counters.
//! - [`retention`]: the replayable history; [`fanout`]: the subscription index;
//!   [`outbox`]: each connection's queue and socket writes; [`log`]: where accepted
//!   events are recorded.
//! - [`visitors`]: the visitor API (profiles across browsers, merges, exports).
//! - [`wal`], [`snapshot`], [`recovery`]: durability: the write-ahead log, snapshots of
//!   the state, and start-up from them; [`codec`]: their binary encoding.
//! - [`auth`]: API keys, browser tokens, origins, and what each principal may do;
//!   [`limits`]: nesting depth, publish rate, connection counts.
//! - [`config`], [`server`], [`metrics`], [`error`], [`ids`]: the rest.
//! - [`assets`]: the browser SDK and the agent console, embedded in the binary.
//!
//! `ARCHITECTURE.md` at the repository root has the invariants.

pub mod assets;
pub mod auth;
pub mod codec;
pub mod config;
pub mod error;
pub mod event;
pub mod fanout;
pub mod http;
pub mod hub;
pub mod ids;
pub mod lifecycle;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod recovery;
pub mod retention;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod topic;
pub mod visitors;
pub mod wal;
pub mod ws;

pub use config::Config;
