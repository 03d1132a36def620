//! Where clients meet the hub: everything that owns a socket, a request or a credential.
//!
//! - [`app`]: what the router shares with every handler and connection.
//! - [`ws`]: the WebSocket handshake and one task per connection.
//! - [`http`]: the HTTP API and the router; [`visitors`]: its visitor endpoints;
//!   [`segments`]: its segment endpoints;
//!   [`views`]: the JSON views of state they answer with (and `snapshot` frames carry);
//!   [`openapi`]: the OpenAPI document of it all, generated from the handlers.
//! - [`auth`]: API keys, browser tokens, origins, and what each principal may do;
//!   [`limits`]: nesting depth, publish rate, connection counts.
//! - [`outbox`]: each connection's bounded queue and its socket's write half;
//!   [`read_ahead`]: its read half, read ahead while the peer sends a lot.
//! - [`stream`]: the event stream over plain HTTP; [`sinks`]: webhook sinks, which post
//!   the events they select to receivers' URLs.
//! - [`assets`]: the browser SDK and the agent console, embedded in the binary.

pub mod app;
pub mod assets;
pub mod auth;
pub mod client_info;
pub mod companies;
pub mod http;
pub mod limits;
pub mod openapi;
pub mod outbox;
pub mod read_ahead;
pub mod segments;
pub mod sinks;
pub mod stream;
pub mod views;
pub mod visitors;
pub mod ws;
