//! The integration tests of actionhub: one binary, each test starting its own hub on a
//! loopback port 0 and talking to it over real sockets, as PROTOCOL.md's clients do.
//!
//! `support` is the harness; every other module covers one part of the protocol.

mod support;

mod cluster;
mod cluster_faults;
mod cluster_sinks;
mod companies;
mod config;
mod determinism;
mod durability;
mod fanout;
mod faults_disk;
mod faults_growth;
mod faults_seq;
mod faults_store;
mod faults_ws;
mod filters;
mod fuzz;
mod http_api;
mod identity;
mod lifecycle;
mod loadgen;
mod openapi;
mod operations;
mod privacy;
mod replay;
mod restart;
mod security;
mod segments;
mod sinks;
mod stream;
mod tail;
mod visitors;
mod ws_protocol;
