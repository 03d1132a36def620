//! actionhub: a realtime web-action event hub.

pub mod config;
pub mod server;

pub use config::Config;
