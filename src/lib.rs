//! actionhub: a realtime web-action event hub.
//!
//! Websites report the lifecycle of web actions (chat invitations, content offers) and
//! visitor events; the hub validates them, orders them, keeps the state of every customer,
//! session and action, and fans events out over WebSockets to subscribers with filters.
//!
//! The folders are the architecture, in the order an event travels:
//!
//! - [`edge`]: where clients meet the hub: the WebSocket and HTTP APIs, the visitor API,
//!   credentials and limits, each connection's outbox, the embedded SDK and console.
//! - [`ingest`]: the protocol and the event model, all pure: client frames, validation of
//!   published events, the lifecycle tables, topics and filters.
//! - [`hub`]: the sequencer (the one ordering authority), the pipeline behind it, the
//!   state it keeps, the retained history and the subscription index.
//! - [`store`]: durability: the log seam, the write-ahead log, snapshots, recovery and
//!   their binary encoding.
//! - [`cluster`]: cluster mode, where a NATS JetStream stream shared by several nodes
//!   orders the hub's inputs instead of the sequencer's lock alone.
//! - [`config`], [`server`], [`metrics`], [`logging`], [`error`], [`ids`]: the rest; [`tail`] is the
//!   `actionhub tail` command, a client of the HTTP event stream.
//!
//! `ARCHITECTURE.md` at the repository root has the invariants.

pub mod clock;
pub mod cluster;
pub mod config;
pub mod edge;
pub mod error;
pub mod hub;
pub mod ids;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod store;
pub mod tail;

pub use config::Config;
